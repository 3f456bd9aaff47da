"""DTMF generation and vectorised in-band detection.

Detection is fed the way the mixer feeds it: one 20 ms frame per leg per tick, legs as rows.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from media.dtmf import (
    COLUMN_HZ,
    DTMF_DIGITS,
    ROW_HZ,
    DtmfDetector,
    InvalidDtmfDigit,
    dtmf_tone,
    goertzel_power,
)
from media.tones import RINGTONE_COUNTRIES, Ringback

RATE = 8000
FRAME = 160
KEYPAD_ROWS = ("123A", "456B", "789C", "*0#D")


def silence(ms: int) -> NDArray[np.int16]:
    return np.zeros(ms * RATE // 1000, dtype=np.int16)


def pad_to_frames(signal: NDArray[np.int16]) -> NDArray[np.int16]:
    return np.concatenate([signal, np.zeros(-len(signal) % FRAME, dtype=np.int16)])


def detect(
    legs: NDArray[np.int16], detector: DtmfDetector | None = None
) -> list[tuple[int, int, str]]:
    """Run a (legs, samples) block through a detector tick by tick: (tick, row, digit)."""
    detector = detector or DtmfDetector()
    legs = np.atleast_2d(legs)
    found = []
    for tick in range(legs.shape[1] // FRAME):
        for row, digit in detector.process(legs[:, tick * FRAME : (tick + 1) * FRAME]):
            found.append((tick, row, digit))
    return found


def digits_of(signal: NDArray[np.int16]) -> str:
    return "".join(digit for _, _, digit in detect(pad_to_frames(signal)))


def add_noise(signal: NDArray[np.int16], rms: float, seed: int) -> NDArray[np.int16]:
    noise = np.random.default_rng(seed).standard_normal(len(signal)) * rms
    return np.clip(np.rint(signal + noise), -32768, 32767).astype(np.int16)


def reference_goertzel(block: NDArray[np.float64], frequency: float) -> float:
    """The textbook sample-by-sample Goertzel loop, to check the vectorised form against."""
    coeff = 2 * np.cos(2 * np.pi * frequency / RATE)
    s1 = s2 = 0.0
    for x in block:
        s1, s2 = x + coeff * s1 - s2, s1
    return float(s1 * s1 + s2 * s2 - coeff * s1 * s2)


def test_vectorised_goertzel_equals_the_sample_loop_and_the_dft() -> None:
    blocks = np.random.default_rng(0).standard_normal((3, FRAME)) * 1000
    freqs = [*ROW_HZ, *COLUMN_HZ, 1000.0]
    power = goertzel_power(blocks, freqs, RATE)
    n = np.arange(FRAME)
    for b, block in enumerate(blocks):
        for f, freq in enumerate(freqs):
            dft = abs(np.sum(block * np.exp(-2j * np.pi * freq / RATE * n))) ** 2
            assert power[b, f] == pytest.approx(reference_goertzel(block, freq), rel=1e-9)
            assert power[b, f] == pytest.approx(dft, rel=1e-9)


@pytest.mark.parametrize("digit", sorted(DTMF_DIGITS))
def test_generated_digit_has_its_row_and_column_tones(digit: str) -> None:
    tone = dtmf_tone(digit, duration_ms=100)
    assert len(tone) == 800
    row = next(i for i, keys in enumerate(KEYPAD_ROWS) if digit in keys)
    column = KEYPAD_ROWS[row].index(digit)
    power = goertzel_power(tone[80:-80], [*ROW_HZ, *COLUMN_HZ], RATE)
    assert set(np.argsort(power)[-2:]) == {row, 4 + column}
    # Both tones at -10 dBFS: each peaks at a third of full scale, so the pair stays under 2/3.
    assert 0.6 < np.abs(tone).max() / 32767 < 0.64


@pytest.mark.parametrize("digit", sorted(DTMF_DIGITS))
def test_every_digit_is_detected_once(digit: str) -> None:
    signal = np.concatenate([silence(37), dtmf_tone(digit, 100), silence(200)])
    assert digits_of(signal) == digit


@pytest.mark.parametrize("digit", sorted(DTMF_DIGITS))
def test_every_digit_is_detected_with_noise_at_20_db_snr(digit: str) -> None:
    tone = dtmf_tone(digit, 100)
    tone_rms = np.sqrt(np.mean(tone.astype(np.float64) ** 2))
    # Noise 20 dB under the tone, before, during and after it.
    signal = add_noise(np.concatenate([silence(93), tone, silence(200)]), tone_rms / 10, ord(digit))
    assert digits_of(signal) == digit


def test_sequence_with_gaps_is_detected_in_order_once_each() -> None:
    parts = [silence(30)]
    for digit in "123#":
        parts += [dtmf_tone(digit, 80), silence(60)]
    assert digits_of(np.concatenate(parts)) == "123#"


def test_a_repeated_digit_after_a_40_ms_pause_is_reported_twice() -> None:
    signal = np.concatenate([dtmf_tone("5", 60), silence(40), dtmf_tone("5", 60), silence(60)])
    assert digits_of(signal) == "55"


def test_digit_change_without_a_pause_is_reported() -> None:
    signal = np.concatenate([dtmf_tone("1", 100), dtmf_tone("9", 100), silence(60)])
    assert digits_of(signal) == "19"


@pytest.mark.parametrize("offset", range(0, FRAME, 20))
def test_40_ms_tones_are_accepted_and_23_ms_bursts_rejected_at_any_frame_alignment(
    offset: int,
) -> None:
    # ITU-T Q.24: a 40 ms digit must be detected, one shorter than 23 ms must not.
    accepted = np.concatenate([np.zeros(offset, np.int16), dtmf_tone("7", 40), silence(60)])
    rejected = np.concatenate([np.zeros(offset, np.int16), dtmf_tone("7", 23), silence(60)])
    assert digits_of(accepted) == "7"
    assert digits_of(rejected) == ""


def test_weak_digits_below_the_floor_are_ignored() -> None:
    assert digits_of(np.concatenate([dtmf_tone("3", 100, level_dbfs=-45), silence(60)])) == ""
    assert digits_of(np.concatenate([dtmf_tone("3", 100, level_dbfs=-30), silence(60)])) == "3"


def tones(levels_dbfs: dict[float, float], ms: int = 100) -> NDArray[np.int16]:
    """A sum of sines, each at its own level: DTMF-like signals the generator cannot make."""
    t = np.arange(ms * RATE // 1000) / RATE
    wave = sum(32767 * 10 ** (db / 20) * np.sin(2 * np.pi * f * t) for f, db in levels_dbfs.items())
    return np.concatenate([np.rint(wave).astype(np.int16), silence(60)])


def test_twist_up_to_8_db_is_accepted_and_more_is_rejected() -> None:
    # Lines attenuate one group more than the other; past the allowed twist it is not DTMF.
    assert digits_of(tones({697: -10, 1209: -16})) == "1"
    assert digits_of(tones({697: -16, 1209: -10})) == "1"
    assert digits_of(tones({697: -10, 1209: -20})) == ""
    assert digits_of(tones({697: -20, 1209: -10})) == ""


def test_two_tones_of_one_group_at_once_are_rejected() -> None:
    # 697 and 770 Hz together with 1209 Hz: "1" or "4"? Neither row tone is a clear peak.
    assert digits_of(tones({697: -10, 770: -10, 1209: -10})) == ""
    assert digits_of(tones({697: -10, 770: -22, 1209: -10})) == "1"


def test_no_detection_on_any_country_ringback() -> None:
    # One leg per country, all at once, over the longest cadence period (6 s); the tone is loud
    # (-10 dBFS) to make it harder.
    seconds = 6
    legs = np.stack(
        [Ringback(c, level_dbfs=-10.0).next_frame(seconds * RATE) for c in RINGTONE_COUNTRIES]
    )
    assert detect(legs) == []


def test_no_detection_on_white_noise_or_a_single_tone() -> None:
    rng = np.random.default_rng(7)
    noise = np.clip(rng.standard_normal(5 * RATE) * 6000, -32768, 32767).astype(np.int16)
    t = np.arange(5 * RATE) / RATE
    tone = np.rint(10000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    assert detect(np.stack([noise, tone])) == []


def test_no_detection_on_a_harmonic_rich_voice_like_signal() -> None:
    # A gliding "vowel": 19 harmonics of a pitch rising 100 -> 250 Hz, so harmonics pass over
    # every DTMF frequency, sometimes a row and a column one at once, but never alone.
    t = np.arange(8 * RATE) / RATE
    phase = 2 * np.pi * np.cumsum(100 + 150 * t / 8) / RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 20))
    assert detect(np.rint(voice / np.abs(voice).max() * 15000).astype(np.int16)) == []


def test_several_legs_at_once_each_report_their_own_digit() -> None:
    length = 400 * RATE // 1000
    legs = np.zeros((4, length), dtype=np.int16)
    for row, (digit, start_ms) in enumerate([("1", 0), ("#", 100), ("D", 50)]):
        start = start_ms * RATE // 1000
        tone = dtmf_tone(digit, 120)
        legs[row, start : start + len(tone)] = tone
    # Row 3 stays silent.
    found = detect(legs)
    assert sorted((row, digit) for _, row, digit in found) == [(0, "1"), (1, "#"), (2, "D")]
    ticks = {row: tick for tick, row, _ in found}
    assert ticks[0] < ticks[2] < ticks[1]  # reported in the order they started


def test_rows_can_grow_and_be_reset() -> None:
    detector = DtmfDetector()
    tone = dtmf_tone("8", 400)
    frames = tone[: len(tone) // FRAME * FRAME].reshape(-1, FRAME)
    assert detector.process(np.stack([frames[0], frames[0] * 0])) == []
    assert detector.capacity == 2
    reported = detector.process(np.stack([frames[1], frames[0] * 0]))
    assert reported == [(0, "8")]
    # Growing to five rows keeps row 0's held digit: no second report for the same press.
    grown = np.zeros((5, FRAME), dtype=np.int16)
    grown[0] = frames[2]
    assert detector.process(grown) == []
    assert detector.capacity == 5
    # A new leg in slot 0 starts clean: the tone still sounding counts as a new press.
    detector.reset_row(0)
    grown[0] = frames[3]
    detector.process(grown)
    grown[0] = frames[4]
    assert detector.process(grown) == [(0, "8")]
    with pytest.raises(IndexError):
        detector.reset_row(5)


def test_process_refuses_frames_of_the_wrong_shape() -> None:
    with pytest.raises(ValueError, match="160"):
        DtmfDetector().process(np.zeros((2, 80), dtype=np.int16))
    with pytest.raises(ValueError, match="160"):
        DtmfDetector().process(np.zeros(160, dtype=np.int16))


def test_invalid_digits_are_refused_with_a_typed_error() -> None:
    with pytest.raises(InvalidDtmfDigit, match="'x'"):
        dtmf_tone("x")
    with pytest.raises(InvalidDtmfDigit):
        dtmf_tone("12")


@pytest.mark.parametrize("k", [2, 3])
def test_k_frames_per_call_find_what_k_calls_find(k: int) -> None:
    # Four legs, each pressing digits at its own offset over noise: fed one frame per call to one
    # detector and k frames per call (frame-major, rows in a shuffled order) to another.
    legs = np.zeros((4, 60 * FRAME), dtype=np.int16)
    for row in range(4):
        for at, digit in enumerate("1#5D9"):
            tone = dtmf_tone(digit, 50 + 15 * row)
            start = 600 + at * 1800 + 37 * row
            legs[row, start : start + len(tone)] = tone
        legs[row] = add_noise(legs[row], 200.0, seed=row)
    one_by_one = [(row, digit) for _, row, digit in detect(legs)]
    assert len(one_by_one) == 20
    rows = np.array([2, 0, 3, 1], dtype=np.intp)
    detector = DtmfDetector()
    batched: list[tuple[int, str]] = []
    for tick in range(0, legs.shape[1] // FRAME, k):
        block = legs[rows, tick * FRAME : (tick + k) * FRAME].reshape(4, k, FRAME)
        batched += detector.process(block.transpose(1, 0, 2), rows)
    assert sorted(batched) == sorted(one_by_one)
    for row in range(4):  # and each leg's digits in the order pressed
        assert [d for r, d in batched if r == row] == [d for r, d in one_by_one if r == row]


def test_a_block_of_no_frames_is_refused() -> None:
    with pytest.raises(ValueError, match="k, rows"):
        DtmfDetector().process(np.zeros((0, 2, FRAME), dtype=np.int16))
