"""media/inbound.py: a stream's announced format judged, and G.722 decoded at the edge."""

from __future__ import annotations

import G722
import numpy as np
import pytest

from media.codecs import L16_16K, PCMA_8K, PCMU_8K, AudioFormat, Encoding
from media.errors import UnsupportedEncoding
from media.inbound import MediaFormat, inbound_decoder

WIDE = AudioFormat(Encoding.L16, 16000, "little")


def sine(freq: float, n: int, rate: int = 16000, level: float = 8000.0) -> np.ndarray:  # type: ignore[type-arg]
    return (level * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype(np.int16)


@pytest.mark.parametrize(
    ("announced", "mixer_format"),
    [
        (MediaFormat("PCMU"), PCMU_8K),
        (MediaFormat("audio/x-mulaw"), PCMU_8K),
        (MediaFormat("PCMA"), PCMA_8K),
        (MediaFormat("L16", 16000), L16_16K),
    ],
)
def test_g711_and_l16_go_to_the_mixer_as_they_are(
    announced: MediaFormat, mixer_format: AudioFormat
) -> None:
    decoder = inbound_decoder(announced)
    assert decoder.mixer_format == mixer_format
    assert decoder.convert is None


@pytest.mark.parametrize("rate", [8000, 16000])  # RTP clock rate or audio rate: same stream
def test_g722_is_decoded_to_wideband_l16(rate: int) -> None:
    decoder = inbound_decoder(MediaFormat("G722", rate))
    assert decoder.mixer_format == WIDE
    assert decoder.convert is not None
    spoken = sine(1000, 16000)  # one second
    encoder = G722.G722(16000, 64000)
    payloads = [encoder.encode(spoken[i : i + 320]) for i in range(0, spoken.size, 320)]
    assert {len(p) for p in payloads} == {160}  # 20 ms of G.722 at 64 kbit/s
    decoded = np.frombuffer(b"".join(decoder.convert(p) for p in payloads), dtype="<i2")
    assert decoded.size == spoken.size
    # Compare past the codec's start-up, aligned on its (small) group delay.
    tail = spoken[2000:15000].astype(np.float64)
    best = max(
        range(40),
        key=lambda d: float(np.dot(decoded[2000 + d : 15000 + d].astype(np.float64), tail)),
    )
    error = decoded[2000 + best : 15000 + best].astype(np.float64) - tail
    snr_db = 10 * np.log10(np.sum(tail**2) / np.sum(error**2))
    assert snr_db > 30


def test_one_decoder_per_stream_keeps_its_state_across_payloads() -> None:
    spoken = sine(700, 3200)
    encoder = G722.G722(16000, 64000)
    payloads = [encoder.encode(spoken[i : i + 320]) for i in range(0, spoken.size, 320)]
    whole = inbound_decoder(MediaFormat("G722", 16000)).convert
    assert whole is not None
    joined = b"".join(whole(p) for p in payloads)
    reference = np.asarray(G722.G722(16000, 64000).decode(b"".join(payloads)), dtype="<i2")
    assert joined == reference.tobytes()


@pytest.mark.parametrize(
    "announced",
    [
        MediaFormat("OPUS", 48000),
        MediaFormat("AMR-WB", 16000),
        MediaFormat("G729"),
        MediaFormat("G722", 16000, channels=2),
        MediaFormat("G722", 48000),
        MediaFormat("PCMU", 8000, channels=2),
    ],
)
def test_what_cannot_be_decoded_is_refused_by_name(announced: MediaFormat) -> None:
    with pytest.raises(UnsupportedEncoding) as refused:
        inbound_decoder(announced)
    assert announced.encoding in str(refused.value)


def test_the_label_names_the_format_as_announced() -> None:
    assert MediaFormat("G722", 8000).label() == "G722/8000"
