"""The mixer with a leg's input and output formats declared separately (issue 10, point 1).

A Telnyx PCMA call that was not asked for PCMU streams A-law to us while decoding what we send as
the declared ``stream_bidirectional_codec`` (PCMU): each direction must be coded in its own format,
and bytes are forwarded untouched only when the speaker's input is the listener's output.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from media.codecs import L16_16K, PCMA_8K, PCMU_8K, AudioFormat, decode, encode
from media.mixer import Mixer

N = 160
Samples = NDArray[np.int16]


def tone(freq: float, level: int = 8000, n: int = N, rate: int = 8000) -> Samples:
    t = np.arange(n) / rate
    return (level * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def snr_db(reference: Samples, got: Samples) -> float:
    error = got.astype(np.float64) - reference.astype(np.float64)
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / np.sum(error**2)))


def frames(mixer: Mixer) -> dict[str, bytes]:
    return dict(mixer.tick().frames)


def test_a_leg_speaking_pcma_and_hearing_pcmu_is_coded_per_direction() -> None:
    mixer = Mixer()
    mixer.add_leg("telnyx", PCMA_8K, PCMU_8K)
    mixer.add_leg("twilio", PCMU_8K)
    for leg in ("telnyx", "twilio"):
        mixer.join(leg, "room")
    assert not mixer.is_passthrough("room")  # A-law in, mu-law out: no byte can be forwarded
    spoken_a, spoken_b = tone(440), tone(1000)
    assert mixer.put_frame("telnyx", encode(PCMA_8K, spoken_a)) == []
    assert mixer.put_frame("twilio", encode(PCMU_8K, spoken_b)) == []
    out = frames(mixer)
    # What each leg decodes, in the format it declared, is the other's voice at G.711 quality.
    assert snr_db(spoken_b, decode(PCMU_8K, out["telnyx"])) > 30
    assert snr_db(spoken_a, decode(PCMU_8K, out["twilio"])) > 30
    # The same bytes read in the leg's input codec (the old mistake) are garbled.
    assert snr_db(spoken_b, decode(PCMA_8K, out["telnyx"])) < 10


def test_crossed_formats_forward_untouched() -> None:
    mixer = Mixer()
    mixer.add_leg("a", PCMA_8K, PCMU_8K)
    mixer.add_leg("b", PCMU_8K, PCMA_8K)
    for leg in ("a", "b"):
        mixer.join(leg, "room")
    assert mixer.is_passthrough("room")  # a speaks A-law, which b decodes, and back
    payload = encode(PCMA_8K, tone(440))
    assert mixer.put_frame("a", payload) == [("b", payload)]


def test_same_input_different_outputs_is_not_forwarded() -> None:
    mixer = Mixer()
    mixer.add_leg("a", PCMU_8K, PCMA_8K)
    mixer.add_leg("b", PCMU_8K)
    for leg in ("a", "b"):
        mixer.join(leg, "room")
    assert not mixer.is_passthrough("room")
    spoken = tone(700)
    mixer.put_frame("b", encode(PCMU_8K, spoken))
    assert snr_db(spoken, decode(PCMA_8K, frames(mixer)["a"])) > 30


def test_wideband_input_narrowband_output_resamples_one_way() -> None:
    """A G.722 call decoded at the edge speaks 16 kHz L16 and hears PCMU at 8 kHz."""
    wide = AudioFormat(L16_16K.encoding, 16000, "little")
    mixer = Mixer()
    mixer.add_leg("g722", wide, PCMU_8K)
    mixer.add_leg("peer", PCMU_8K)
    for leg in ("g722", "peer"):
        mixer.join(leg, "room")
    heard_by_peer: list[Samples] = []
    heard_by_wide: list[bytes] = []
    for i in range(10):
        mixer.put_frame("g722", encode(wide, _continuous(600, i, 16000)))
        mixer.put_frame("peer", encode(PCMU_8K, _continuous(1000, i, 8000)))
        out = frames(mixer)
        heard_by_peer.append(decode(PCMU_8K, out["peer"]))
        heard_by_wide.append(out["g722"])
    # The output toward the wideband-in leg is one 20 ms PCMU frame per tick, not 16 kHz L16.
    assert {len(frame) for frame in heard_by_wide} == {N}
    peer_heard = np.concatenate(heard_by_peer)[80:]
    spectrum = np.abs(np.fft.rfft(peer_heard))
    peak_hz = np.argmax(spectrum) * 8000 / peer_heard.size
    assert peak_hz == pytest.approx(600, abs=15)


def _continuous(freq: float, index: int, rate: int) -> Samples:
    n = rate // 50
    t = (np.arange(n) + index * n) / rate
    return (8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
