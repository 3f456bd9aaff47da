"""Tone sources: ringback for every bridge ``ringtone`` value, silence, comfort noise, playback.

Ringback is checked from the audio itself, not from the spec it was built from: peaks found by
FFT must sit on the country's frequencies, and on/off runs found from the envelope must repeat
the country's cadence.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from media.tones import (
    RINGTONE_COUNTRIES,
    ComfortNoise,
    Playback,
    Ringback,
    Silence,
    ToneSource,
    UnknownRingtone,
    ringtone_spec,
    ringtone_specs,
)

RATE = 8000
FRAME = 160
ENVELOPE_BLOCK = 40  # 5 ms: two cycles of the lowest ringback carrier, fine enough for cadence
# The enum exactly as the Telnyx bridge command documents it.
TELNYX_RINGTONE_ENUM = (
    "at au be bg br ch cl cn cz de dk ee es fi fr gr hu il in it jp lt mx my nl no nz ph pl pt "
    "ru se sg th tw uk us-old us ve za"
)


def stream(source: ToneSource, samples: int, frame: int = FRAME) -> NDArray[np.int16]:
    """Pull ``samples`` from a source the way the mixer does: one frame per tick."""
    chunks = [source(min(frame, samples - start)) for start in range(0, samples, frame)]
    return np.concatenate(chunks)


def envelope_runs(signal: NDArray[np.int16]) -> list[tuple[bool, float]]:
    """(on, duration_ms) runs of the signal, judged on 5 ms blocks against 5 % of peak RMS."""
    blocks = signal[: len(signal) // ENVELOPE_BLOCK * ENVELOPE_BLOCK].astype(np.float64)
    rms = np.sqrt(np.mean(blocks.reshape(-1, ENVELOPE_BLOCK) ** 2, axis=1))
    on = rms > 0.05 * rms.max()
    runs: list[tuple[bool, float]] = []
    start = 0
    for i in range(1, len(on) + 1):
        if i == len(on) or on[i] != on[start]:
            runs.append((bool(on[start]), (i - start) * ENVELOPE_BLOCK * 1000 / RATE))
            start = i
    return runs


def spectral_peaks(segment: NDArray[np.int16], floor_db: float = -25.0) -> list[float]:
    """Frequencies of the local maxima of a Hann-windowed, zero-padded spectrum above floor."""
    padded = 1 << 17  # 0.06 Hz grid at 8 kHz: peak positions are read to well under 1 Hz
    spectrum = np.abs(np.fft.rfft(segment * np.hanning(len(segment)), padded))
    db = 20 * np.log10(spectrum / spectrum.max() + 1e-12)
    inner = db[1:-1]
    is_peak = (inner > db[:-2]) & (inner >= db[2:]) & (inner > floor_db)
    return [float(f) for f in (np.flatnonzero(is_peak) + 1) * RATE / padded]


def expected_peaks(country: str) -> list[float]:
    spec = ringtone_spec(country)
    if spec.modulated:
        carrier, modulator = spec.frequencies_hz
        return [carrier - modulator, carrier, carrier + modulator]
    return list(spec.frequencies_hz)


def test_ringtone_countries_are_exactly_the_bridge_commands_enum() -> None:
    enum = TELNYX_RINGTONE_ENUM.split()
    assert list(RINGTONE_COUNTRIES) == enum
    assert len(RINGTONE_COUNTRIES) == 40
    assert set(ringtone_specs()) == set(enum)


@pytest.mark.parametrize("country", RINGTONE_COUNTRIES)
def test_ringback_frequencies_match_the_data(country: str) -> None:
    spec = ringtone_spec(country)
    signal = stream(Ringback(country), sum(spec.cadence_ms) * RATE // 1000)
    # The longest on-run of the first period: the best frequency resolution the cadence allows.
    runs = envelope_runs(signal)
    starts = np.cumsum([0] + [ms for _, ms in runs])
    on_runs = [(ms, start) for (on, ms), start in zip(runs, starts, strict=False) if on]
    length_ms, start_ms = max(on_runs)
    segment = signal[int(start_ms * RATE / 1000) : int((start_ms + length_ms) * RATE / 1000)]

    peaks = spectral_peaks(segment)
    expected = expected_peaks(country)
    assert len(peaks) == len(expected), (peaks, expected)
    for found, want in zip(peaks, expected, strict=True):
        assert abs(found - want) < 2.0, (country, peaks, expected)


@pytest.mark.parametrize("country", RINGTONE_COUNTRIES)
def test_ringback_cadence_matches_the_data_over_two_periods(country: str) -> None:
    cadence = ringtone_spec(country).cadence_ms
    signal = stream(Ringback(country), 2 * sum(cadence) * RATE // 1000)
    runs = envelope_runs(signal)
    # Runs alternate on/off starting with on, and repeat the cadence twice.
    assert [on for on, _ in runs] == [i % 2 == 0 for i in range(2 * len(cadence))]
    for (_, measured), want in zip(runs, cadence * 2, strict=True):
        assert abs(measured - want) <= 20, (country, runs, cadence)


@pytest.mark.parametrize("frame", [160, 7, 333])
@pytest.mark.parametrize("country", ["us", "uk", "jp", "hu"])
def test_frames_concatenate_into_the_same_signal_as_one_long_call(country: str, frame: int) -> None:
    # Phase and cadence run on sample time, so frame boundaries must be invisible; at most a
    # rounding step of difference from float phase bookkeeping.
    # 2.5 s: past the first on/off edge of every one of these cadences.
    whole = Ringback(country).next_frame(5 * RATE // 2)
    framed = stream(Ringback(country), 5 * RATE // 2, frame)
    assert np.max(np.abs(whole.astype(np.int32) - framed)) <= 1


def test_each_component_is_at_the_requested_level() -> None:
    # Germany: a single 425 Hz tone on for a whole second.
    signal = Ringback("de", level_dbfs=-20.0).next_frame(RATE)[400:-400]
    rms = np.sqrt(np.mean(signal.astype(np.float64) ** 2))
    level = 20 * np.log10(rms * np.sqrt(2) / 32767)
    assert level == pytest.approx(-20.0, abs=0.1)


def test_ringback_follows_the_sample_rate() -> None:
    # At 16 kHz the same tone must come out at the same frequency and cadence.
    source = Ringback("us", sample_rate=16000)
    signal = source.next_frame(2 * 16000)
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    top_two = sorted(np.argsort(spectrum)[-50:] * 16000 / len(signal))
    assert {round(f) for f in top_two} >= {440, 480}
    assert not np.any(source.next_frame(4 * 16000)[1000:-1000])  # 4 s off after 2 s on


def test_unknown_ringtone_names_the_value_and_the_valid_ones() -> None:
    with pytest.raises(UnknownRingtone) as raised:
        Ringback("xx")
    assert raised.value.value == "xx"
    assert "'xx'" in str(raised.value)
    assert "us-old" in str(raised.value)


def test_default_ringback_is_the_us_tone() -> None:
    assert np.array_equal(Ringback().next_frame(800), Ringback("us").next_frame(800))


def test_silence_is_zeros_of_the_requested_length() -> None:
    frame = Silence()(160)
    assert frame.dtype == np.int16
    assert frame.shape == (160,)
    assert not frame.any()


def test_comfort_noise_is_low_level_and_reproducible() -> None:
    noise = stream(ComfortNoise(-70.0, seed=3), RATE)
    rms = np.sqrt(np.mean(noise.astype(np.float64) ** 2))
    assert 20 * np.log10(rms * np.sqrt(2) / 32767) == pytest.approx(-70.0, abs=1.0)
    assert np.array_equal(noise, stream(ComfortNoise(-70.0, seed=3), RATE))
    assert not np.array_equal(noise, stream(ComfortNoise(-70.0, seed=4), RATE))


def test_playback_plays_once_then_silence_and_reports_the_end_once() -> None:
    clip = np.arange(1, 401, dtype=np.int16)
    ends: list[int] = []
    playback = Playback(clip, on_end=lambda: ends.append(1))
    first, second = playback(160), playback(160)
    assert not playback.ended
    third = playback(160)  # plays the last 80 samples
    assert playback.ended
    assert not playback.stopped
    assert np.array_equal(np.concatenate([first, second, third[:80]]), clip)
    assert not third[80:].any()
    assert not playback(160).any()
    assert ends == [1]


def test_playback_loops_the_requested_number_of_times() -> None:
    clip = np.arange(1, 101, dtype=np.int16)
    playback = Playback(clip, loops=3)
    out = stream(playback, 400)
    assert np.array_equal(out[:300], np.tile(clip, 3))
    assert not out[300:].any()
    assert playback.ended


def test_playback_without_a_loop_count_repeats_until_stopped() -> None:
    clip = np.arange(1, 101, dtype=np.int16)
    ends: list[int] = []
    playback = Playback(clip, loops=None, on_end=lambda: ends.append(1))
    assert np.array_equal(stream(playback, 5000), np.tile(clip, 50))
    assert not playback.ended
    playback.stop()
    assert playback.ended
    assert playback.stopped
    assert not playback(160).any()
    assert ends == []  # stop() is the caller's own decision: no end callback


def test_empty_clip_ends_on_the_first_frame_even_when_looping() -> None:
    playback = Playback(np.zeros(0, dtype=np.int16), loops=None)
    assert not playback(160).any()
    assert playback.ended


def test_playback_refuses_what_it_cannot_play() -> None:
    with pytest.raises(ValueError, match="1-D int16"):
        Playback(np.zeros((10, 2), dtype=np.int16))
    with pytest.raises(ValueError, match="1-D int16"):
        Playback(np.zeros(10, dtype=np.float32))
    with pytest.raises(ValueError, match="loops"):
        Playback(np.zeros(10, dtype=np.int16), loops=0)
