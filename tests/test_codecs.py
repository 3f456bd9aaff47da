from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from media.codecs import (
    ALAW_DECODE,
    ALAW_ENCODE,
    L16_8K,
    L16_16K,
    PCMA_8K,
    PCMU_8K,
    ULAW_DECODE,
    ULAW_ENCODE,
    AudioFormat,
    Encoding,
    Resampler,
    alaw_decode,
    alaw_encode,
    decode,
    decode_joined,
    decode_rows,
    encode,
    parse_format,
    resample,
    ulaw_decode,
    ulaw_encode,
)
from media.errors import InvalidFrame, MediaError, UnsupportedEncoding

# Python 3.11-3.12 warn that the stdlib module is deprecated; 3.13+ gets it from audioop-lts.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

ALL_SAMPLES = np.arange(65536, dtype=np.uint16).view(np.int16)
ALL_CODES = np.arange(256, dtype=np.uint8)


def native_bytes(samples: npt.NDArray[np.int16]) -> bytes:
    # audioop reads and writes samples in the machine's byte order.
    return samples.astype(np.dtype("=i2")).tobytes()


def tone(
    freq: float, rate: int, seconds: float, amplitude: float = 10000.0
) -> npt.NDArray[np.int16]:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def snr_db(reference: npt.NDArray[np.int16], actual: npt.NDArray[np.int16]) -> float:
    ref = reference.astype(np.float64)
    noise = ref - actual.astype(np.float64)
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum(noise**2), 1e-12)))


def level_db(samples: npt.NDArray[np.int16], freq: float, rate: int) -> float:
    """Amplitude of one frequency in dB relative to full scale, from a windowed DFT."""
    window = np.hanning(len(samples))
    t = np.arange(len(samples)) / rate
    amplitude = 2 * abs(np.sum(samples * window * np.exp(-2j * np.pi * freq * t))) / window.sum()
    return float(20 * np.log10(max(amplitude, 1e-9) / 32768))


# --- G.711 bit-exactness against audioop --------------------------------------------------------


def test_ulaw_decode_matches_audioop_for_all_codes() -> None:
    expected = np.frombuffer(audioop.ulaw2lin(ALL_CODES.tobytes(), 2), dtype=np.dtype("=i2"))
    np.testing.assert_array_equal(ulaw_decode(ALL_CODES), expected)


def test_ulaw_encode_matches_audioop_for_all_samples() -> None:
    expected = np.frombuffer(audioop.lin2ulaw(native_bytes(ALL_SAMPLES), 2), dtype=np.uint8)
    np.testing.assert_array_equal(ulaw_encode(ALL_SAMPLES), expected)


def test_alaw_decode_matches_audioop_for_all_codes() -> None:
    expected = np.frombuffer(audioop.alaw2lin(ALL_CODES.tobytes(), 2), dtype=np.dtype("=i2"))
    np.testing.assert_array_equal(alaw_decode(ALL_CODES), expected)


def test_alaw_encode_matches_audioop_for_all_samples() -> None:
    expected = np.frombuffer(audioop.lin2alaw(native_bytes(ALL_SAMPLES), 2), dtype=np.uint8)
    np.testing.assert_array_equal(alaw_encode(ALL_SAMPLES), expected)


@pytest.mark.parametrize(
    ("table", "size", "dtype"),
    [
        (ULAW_DECODE, 256, np.int16),
        (ALAW_DECODE, 256, np.int16),
        (ULAW_ENCODE, 65536, np.uint8),
        (ALAW_ENCODE, 65536, np.uint8),
    ],
)
def test_tables_are_read_only_with_their_documented_shape(
    table: npt.NDArray[np.generic], size: int, dtype: type[np.generic]
) -> None:
    assert table.shape == (size,)
    assert table.dtype == dtype
    with pytest.raises(ValueError, match="read-only"):
        table[0] = 0


@pytest.mark.parametrize(("enc", "dec"), [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)])
def test_decoding_a_code_and_encoding_the_result_gives_the_code_back(
    enc: Callable[[npt.NDArray[np.int16]], npt.NDArray[np.uint8]],
    dec: Callable[[npt.NDArray[np.uint8]], npt.NDArray[np.int16]],
) -> None:
    # Each code's decoded value is the centre of its step, so it must encode to the same code;
    # mu-law has two zero codes (0x7F, 0xFF) and either is a faithful encoding of 0.
    again = enc(dec(ALL_CODES))
    np.testing.assert_array_equal(dec(again), dec(ALL_CODES))


def test_codecs_work_on_a_block_of_frames_at_once() -> None:
    rng = np.random.default_rng(1)
    block = rng.integers(-32768, 32768, size=(7, 160), dtype=np.int16)
    codes = ulaw_encode(block)
    assert codes.shape == (7, 160)
    for row in range(7):
        np.testing.assert_array_equal(codes[row], ulaw_encode(block[row]))
        np.testing.assert_array_equal(alaw_decode(codes)[row], alaw_decode(codes[row]))


def test_encoding_refuses_samples_that_are_not_int16() -> None:
    # An int32 mix viewed as uint16 would silently become twice as many garbage samples.
    with pytest.raises(TypeError, match="int16"):
        ulaw_encode(np.zeros(160, dtype=np.int32))
    with pytest.raises(TypeError, match="int16"):
        encode(L16_8K, np.zeros(160, dtype=np.int32))


# --- payloads -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "to_wire", "from_wire"),
    [
        (PCMU_8K, audioop.lin2ulaw, audioop.ulaw2lin),
        (PCMA_8K, audioop.lin2alaw, audioop.alaw2lin),
    ],
)
def test_g711_payloads_match_audioop(
    fmt: AudioFormat,
    to_wire: Callable[[bytes, int], bytes],
    from_wire: Callable[[bytes, int], bytes],
) -> None:
    samples = tone(440, 8000, 0.02)
    payload = encode(fmt, samples)
    assert payload == to_wire(native_bytes(samples), 2)
    assert native_bytes(decode(fmt, payload)) == from_wire(payload, 2)


def test_decoded_payload_is_a_writable_copy() -> None:
    # The mixer adds into decoded frames in place; a view of the wire bytes would be read-only.
    for fmt in (PCMU_8K, AudioFormat(Encoding.L16, byte_order="little")):
        samples = decode(fmt, bytes(fmt.frame_bytes()))
        samples += 1
        assert samples.dtype == np.int16


@pytest.mark.parametrize(
    ("byte_order", "wire"), [("big", b"\x01\x02\xff\xfe"), ("little", b"\x02\x01\xfe\xff")]
)
def test_l16_honours_the_leg_byte_order(byte_order: str, wire: bytes) -> None:
    fmt = parse_format("L16", 16000, byte_order=byte_order)  # type: ignore[arg-type]
    samples = np.array([0x0102, -2], dtype=np.int16)
    assert encode(fmt, samples) == wire
    np.testing.assert_array_equal(decode(fmt, wire), samples)


def test_l16_defaults_to_network_byte_order() -> None:
    assert L16_16K.byte_order == "big"
    assert encode(L16_8K, np.array([1], dtype=np.int16)) == b"\x00\x01"


def test_odd_length_l16_payload_is_an_invalid_frame() -> None:
    with pytest.raises(InvalidFrame, match="321 bytes"):
        decode(L16_8K, bytes(321))


def test_empty_payload_decodes_to_no_samples() -> None:
    for fmt in (PCMU_8K, PCMA_8K, L16_16K):
        assert decode(fmt, b"").shape == (0,)


# --- formats ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "bytes_per_sample", "samples_per_ms", "frame"),
    [(PCMU_8K, 1, 8, 160), (PCMA_8K, 1, 8, 160), (L16_8K, 2, 8, 320), (L16_16K, 2, 16, 640)],
)
def test_format_sizes(
    fmt: AudioFormat, bytes_per_sample: int, samples_per_ms: int, frame: int
) -> None:
    assert fmt.bytes_per_sample == bytes_per_sample
    assert fmt.samples_per_ms == samples_per_ms
    assert fmt.frame_bytes() == frame
    assert fmt.frame_bytes(30) == frame * 3 // 2


@pytest.mark.parametrize(
    ("spelling", "rate", "expected"),
    [
        ("PCMU", 8000, PCMU_8K),
        ("audio/x-mulaw", 8000, PCMU_8K),
        ("mulaw", 8000, PCMU_8K),
        ("ULAW", 8000, PCMU_8K),
        ("pcma", 8000, PCMA_8K),
        ("audio/x-alaw", 8000, PCMA_8K),
        ("alaw", 8000, PCMA_8K),
        ("L16", 8000, L16_8K),
        ("audio/L16", 16000, L16_16K),
    ],
)
def test_parse_format_accepts_provider_spellings(
    spelling: str, rate: int, expected: AudioFormat
) -> None:
    assert parse_format(spelling, rate) == expected


@pytest.mark.parametrize("name", ["G722", "OPUS", "AMR-WB", "G729", "audio/ogg", ""])
def test_parse_format_refuses_codecs_it_cannot_mix(name: str) -> None:
    with pytest.raises(UnsupportedEncoding) as caught:
        parse_format(name)
    assert caught.value.encoding == name
    assert str(caught.value) == f"unsupported encoding {name!r}"
    assert isinstance(caught.value, MediaError)


@pytest.mark.parametrize(
    ("name", "rate"), [("PCMU", 16000), ("audio/x-alaw", 16000), ("L16", 24000)]
)
def test_parse_format_refuses_rates_it_cannot_mix(name: str, rate: int) -> None:
    with pytest.raises(UnsupportedEncoding, match=f"'{name}' at {rate} Hz"):
        parse_format(name, rate)


def test_parse_format_refuses_stereo() -> None:
    with pytest.raises(UnsupportedEncoding, match="'PCMU' with 2 channels"):
        parse_format("PCMU", 8000, channels=2)


def test_format_cannot_be_built_with_an_impossible_rate() -> None:
    with pytest.raises(UnsupportedEncoding, match="'PCMA' at 16000 Hz"):
        AudioFormat(Encoding.PCMA, 16000)
    with pytest.raises(ValueError, match="byte_order"):
        AudioFormat(Encoding.L16, byte_order="middle")  # type: ignore[arg-type]


# --- resampling ---------------------------------------------------------------------------------


def test_round_trip_8k_16k_8k_frame_by_frame_keeps_a_1khz_tone_clean() -> None:
    signal = tone(1000, 8000, 1.0)
    up, down = Resampler(8000, 16000), Resampler(16000, 8000)
    out = np.concatenate([down.process(up.process(frame)) for frame in signal.reshape(-1, 160)])
    # Both filters' delays expressed at 8 kHz; the first samples are the filter filling up.
    lag = up.delay // 2 + down.delay
    assert lag > 0
    assert snr_db(signal[100 : len(signal) - lag], out[100 + lag :]) > 30


def test_streaming_in_odd_sized_pieces_matches_one_pass() -> None:
    # Any frame-edge discontinuity (a click) would show up as a difference here.
    rng = np.random.default_rng(7)
    for from_rate, to_rate in ((8000, 16000), (16000, 8000)):
        signal = rng.integers(-12000, 12000, size=4001, dtype=np.int16)
        whole = Resampler(from_rate, to_rate).process(signal)
        streamed = Resampler(from_rate, to_rate)
        cuts = [1, 160, 161, 481, 999]
        pieces = [streamed.process(piece) for piece in np.array_split(signal, cuts)]
        joined = np.concatenate(pieces)
        assert joined.shape == whole.shape
        assert np.max(np.abs(joined.astype(np.int32) - whole)) <= 1


def test_upsampling_removes_the_image_of_the_8k_spectrum() -> None:
    out = resample(tone(1000, 8000, 0.5), 8000, 16000)
    # Zero-stuffing alone would leave a mirror of the 1 kHz tone at 7 kHz, as loud as the tone.
    assert level_db(out, 1000, 16000) > -12
    assert level_db(out, 7000, 16000) < level_db(out, 1000, 16000) - 60


def test_downsampling_filters_out_what_would_alias() -> None:
    # A 6 kHz tone cannot exist at 8 kHz; unfiltered decimation folds it onto 2 kHz.
    out = resample(tone(6000, 16000, 0.5), 16000, 8000)
    assert level_db(out, 2000, 8000) < -12 - 60


def test_one_shot_resample_is_time_aligned_with_its_input() -> None:
    up = resample(tone(1000, 8000, 0.2), 8000, 16000)
    assert up.shape == (3200,)
    assert snr_db(tone(1000, 16000, 0.2)[64:-64], up[64:-64]) > 30
    down = resample(tone(1000, 16000, 0.2), 16000, 8000)
    assert down.shape == (1600,)
    assert snr_db(tone(1000, 8000, 0.2)[32:-32], down[32:-32]) > 30


def test_one_shot_resample_rounds_odd_lengths_up() -> None:
    assert resample(np.zeros(321, dtype=np.int16), 16000, 8000).shape == (161,)
    assert resample(np.zeros(3, dtype=np.int16), 8000, 16000).shape == (6,)


def test_loud_signals_saturate_instead_of_wrapping() -> None:
    # The filter overshoots at a full-scale square wave's edges; int16 wrap-around would flip sign.
    square = np.tile(np.repeat(np.array([32767, -32768], dtype=np.int16), 20), 20)
    out = resample(square, 8000, 16000)
    assert np.max(out) == 32767
    assert np.all(out[4:36] > 25000)


def test_equal_rates_pass_samples_through() -> None:
    samples = tone(300, 8000, 0.02)
    resampler = Resampler(16000, 16000)
    out = resampler.process(samples)
    np.testing.assert_array_equal(out, samples)
    assert out is not samples
    assert resampler.delay == 0


def test_resampler_refuses_other_rates_and_shapes() -> None:
    with pytest.raises(ValueError, match="44100"):
        Resampler(44100, 8000)
    with pytest.raises(TypeError, match="1-D int16"):
        Resampler(8000, 16000).process(np.zeros((2, 160), dtype=np.int16))
    with pytest.raises(TypeError, match="1-D int16"):
        Resampler(8000, 16000).process(np.zeros(160, dtype=np.float64))


def test_empty_input_leaves_the_stream_state_unchanged() -> None:
    signal = tone(1000, 16000, 0.1)
    plain, with_empties = Resampler(16000, 8000), Resampler(16000, 8000)
    expected = np.concatenate([plain.process(signal[:161]), plain.process(signal[161:])])
    first = with_empties.process(signal[:161])
    assert with_empties.process(signal[:0]).shape == (0,)
    got = np.concatenate([first, with_empties.process(signal[161:])])
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("fmt", [PCMU_8K, PCMA_8K, L16_8K], ids=lambda f: f.encoding.value)
def test_joined_payloads_decode_as_the_tables_do(fmt: AudioFormat) -> None:
    payload = ALL_CODES.tobytes() * 5  # every G.711 code; 640 L16 samples
    rows = np.frombuffer(payload, dtype=np.uint8).reshape(4, -1)
    np.testing.assert_array_equal(decode_joined(fmt, payload), decode_rows(fmt, rows).ravel())
