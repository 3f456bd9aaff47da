"""DTMF: generating digits (for ``send_dtmf``) and detecting them in-band on every leg at once.

Detection runs the Goertzel algorithm over all legs in one pass. The Goertzel state after a block
of ``N`` samples is linear in the samples, ``s[N-1] = sum x[n] * sin((N-n)w) / sin w`` and
``s[N-2] = sum x[n] * sin((N-1-n)w) / sin w``, so for a block of legs the recurrence collapses into
one matrix product (legs x samples) @ (samples x 2 per frequency); the power is the usual
``s1² + s2² - 2cos(w)·s1·s2``. Same numbers as the sample-by-sample loop, without a Python loop.

Each 20 ms frame is analysed as two 20 ms windows, one straddling the previous frame, so decisions
come every 10 ms. A window names a digit when: both tones are above a floor, each is the clear
peak of its group, their levels are within the allowed twist, and together they hold most of the
window's energy (speech, noise and single tones such as ringback spread or miss it). A digit is
accepted after three windows in a row name it (about 40 ms of tone; 23 ms bursts are rejected,
as ITU-T Q.24 asks) and reported once; it is released after two windows without it, so the same
digit pressed again after a normal 40 ms pause is reported again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from media.errors import MediaError
from media.tones import Playback, burst_envelope, dbfs_to_amplitude

__all__ = [
    "DTMF_DIGITS",
    "DtmfDetector",
    "DtmfSequence",
    "InvalidDtmfDigit",
    "dtmf_tone",
    "goertzel_power",
]

ROW_HZ = (697.0, 770.0, 852.0, 941.0)
COLUMN_HZ = (1209.0, 1336.0, 1477.0, 1633.0)
#: Keypad in row-major order: digit index = 4 * row + column.
KEYPAD = "123A456B789C*0#D"
DTMF_DIGITS = frozenset(KEYPAD)
#: Pause characters of ``send_dtmf`` strings and their length.
PAUSES_MS = {"w": 500, "W": 1000}

# Detector thresholds, in power ratios unless named otherwise.
MIN_TONE_DBFS = -36.0  # each tone must be at least this loud (valid signals reach about -28)
MAX_TWIST = 10.0 ** (8.0 / 10.0)  # the two tones may differ by up to 8 dB either way
RELATIVE_PEAK = 10.0 ** (6.0 / 10.0)  # each tone 6 dB above the others of its group
TONE_ENERGY_RATIO = 0.6  # share of the window's energy the two tones must hold
HITS_TO_ACCEPT = 3  # windows in a row (10 ms apart) naming the digit
MISSES_TO_RELEASE = 2  # windows in a row without the held digit


class InvalidDtmfDigit(MediaError):
    """A character that is neither a DTMF digit nor a pause."""

    def __init__(self, value: str) -> None:
        super().__init__(f"invalid DTMF digit {value!r}; valid: 0-9, *, #, A-D, w and W (pauses)")
        self.value = value


def _digit_frequencies(digit: str) -> tuple[float, float]:
    index = KEYPAD.find(digit) if len(digit) == 1 else -1
    if index < 0:
        raise InvalidDtmfDigit(digit)
    return ROW_HZ[index // 4], COLUMN_HZ[index % 4]


def dtmf_tone(
    digit: str, duration_ms: int = 100, sample_rate: int = 8000, level_dbfs: float = -10.0
) -> NDArray[np.int16]:
    """One DTMF digit: its row and column tones, each at ``level_dbfs``, with soft edges."""
    low, high = _digit_frequencies(digit)
    n = round(duration_ms * sample_rate / 1000)
    t = np.arange(n) / sample_rate
    wave = np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t)
    signal: NDArray[np.float64] = (
        dbfs_to_amplitude(level_dbfs) * burst_envelope(n, sample_rate) * wave
    )
    return np.clip(np.rint(signal), -32768, 32767).astype(np.int16)


class DtmfSequence:
    """A ``send_dtmf`` string as a tone source: each digit for ``tone_ms``, ``gap_ms`` between.

    ``w`` and ``W`` are pauses of 0.5 s and 1 s (they replace the gap). ``finished`` turns true
    on the call that plays the last tone sample; ``on_end`` is called once at that moment.
    """

    def __init__(
        self,
        digits: str,
        *,
        tone_ms: int = 250,
        gap_ms: int = 100,
        sample_rate: int = 8000,
        level_dbfs: float = -10.0,
        on_end: Callable[[], None] | None = None,
    ) -> None:
        parts: list[NDArray[np.int16]] = []
        gap = np.zeros(round(gap_ms * sample_rate / 1000), dtype=np.int16)
        previous_was_tone = False
        for char in digits:
            if char in PAUSES_MS:
                parts.append(np.zeros(PAUSES_MS[char] * sample_rate // 1000, dtype=np.int16))
                previous_was_tone = False
                continue
            tone = dtmf_tone(char, tone_ms, sample_rate, level_dbfs)
            if previous_was_tone:
                parts.append(gap)
            parts.append(tone)
            previous_was_tone = True
        self.digits = digits
        self.samples = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
        self._playback = Playback(self.samples, on_end=on_end)

    @property
    def finished(self) -> bool:
        return self._playback.ended

    def stop(self) -> None:
        self._playback.stop()

    def __call__(self, n: int) -> NDArray[np.int16]:
        return self._playback(n)


def _goertzel_weights(
    n: int, frequencies_hz: Sequence[float], sample_rate: int
) -> NDArray[np.float64]:
    """(n, 2F) matrix mapping a block to the Goertzel states s[N-1] (first F) and s[N-2]."""
    w = 2.0 * np.pi * np.asarray(frequencies_hz, dtype=np.float64) / sample_rate
    k = np.arange(n, dtype=np.float64)[:, None]
    s1 = np.sin((n - k) * w) / np.sin(w)
    s2 = np.sin((n - 1 - k) * w) / np.sin(w)
    return np.concatenate([s1, s2], axis=1)


def _power(
    states: NDArray[np.float64], frequencies_hz: Sequence[float], sample_rate: int
) -> NDArray[np.float64]:
    f = len(frequencies_hz)
    coeff = 2.0 * np.cos(2.0 * np.pi * np.asarray(frequencies_hz) / sample_rate)
    s1, s2 = states[..., :f], states[..., f:]
    return np.asarray(s1 * s1 + s2 * s2 - coeff * s1 * s2, dtype=np.float64)


def goertzel_power(
    blocks: NDArray[np.float64] | NDArray[np.int16],
    frequencies_hz: Sequence[float],
    sample_rate: int,
) -> NDArray[np.float64]:
    """Goertzel power |X(f)|² of each block (last axis = samples) at each frequency."""
    x = np.asarray(blocks, dtype=np.float64)
    weights = _goertzel_weights(x.shape[-1], frequencies_hz, sample_rate)
    return _power(x @ weights, frequencies_hz, sample_rate)


class DtmfDetector:
    """In-band DTMF detection for many legs at once, one 20 ms frame per leg per tick.

    Row ``i`` of every block is the same leg slot; the detector grows when a block has more rows
    than it has seen, and ``reset_row`` clears a slot for its next leg. Rows past the end of a
    block keep their state untouched.
    """

    def __init__(self, sample_rate: int = 8000) -> None:
        if sample_rate <= 0 or sample_rate % 100:
            raise ValueError(f"sample_rate must be a positive multiple of 100, got {sample_rate}")
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate // 50
        self._half = self.frame_samples // 2
        self._freqs = ROW_HZ + COLUMN_HZ
        self._weights = _goertzel_weights(self.frame_samples, self._freqs, sample_rate)
        # Goertzel power -> mean square of the sinusoid it measures (A²/2 for amplitude A).
        self._power_scale = 2.0 / self.frame_samples**2
        self._min_tone = dbfs_to_amplitude(MIN_TONE_DBFS) ** 2 / 2.0
        self._history = np.zeros((0, self._half))
        self._held = np.zeros(0, dtype=np.int8)  # digit index being held, -1 for none
        self._candidate = np.zeros(0, dtype=np.int8)  # what the last window named
        self._hits = np.zeros(0, dtype=np.int32)  # windows in a row naming _candidate
        self._misses = np.zeros(0, dtype=np.int32)  # windows in a row without _held

    @property
    def capacity(self) -> int:
        return len(self._held)

    def ensure_capacity(self, rows: int) -> None:
        """Make room for rows ``0 .. rows-1``; new rows start idle."""
        extra = rows - self.capacity
        if extra <= 0:
            return
        self._history = np.concatenate([self._history, np.zeros((extra, self._half))])
        self._held = np.concatenate([self._held, np.full(extra, -1, dtype=np.int8)])
        self._candidate = np.concatenate([self._candidate, np.full(extra, -1, dtype=np.int8)])
        self._hits = np.concatenate([self._hits, np.zeros(extra, dtype=np.int32)])
        self._misses = np.concatenate([self._misses, np.zeros(extra, dtype=np.int32)])

    def reset_row(self, row: int) -> None:
        """Forget everything about ``row`` (its leg left; the slot will carry another)."""
        if not 0 <= row < self.capacity:
            raise IndexError(f"row {row} out of range (capacity {self.capacity})")
        self._history[row] = 0.0
        self._held[row] = -1
        self._candidate[row] = -1
        self._hits[row] = 0
        self._misses[row] = 0

    def process(self, frames: NDArray[np.int16]) -> list[tuple[int, str]]:
        """Feed one frame per row; return ``(row, digit)`` for each digit that starts now."""
        if frames.ndim != 2 or frames.shape[1] != self.frame_samples:
            raise ValueError(
                f"frames must be (rows, {self.frame_samples}), got shape {frames.shape}"
            )
        rows = frames.shape[0]
        self.ensure_capacity(rows)
        current = frames.astype(np.float64)
        straddling = np.concatenate([self._history[:rows], current[:, : self._half]], axis=1)
        self._history[:rows] = current[:, self._half :]
        candidates = self._classify(np.concatenate([straddling, current])).reshape(2, rows)

        detected: list[tuple[int, str]] = []
        for window in candidates:
            for row in np.flatnonzero(self._advance(window, rows)):
                detected.append((int(row), KEYPAD[window[row]]))
        return detected

    def _classify(self, windows: NDArray[np.float64]) -> NDArray[np.int8]:
        """Digit index named by each window, or -1."""
        tones = _power(windows @ self._weights, self._freqs, self.sample_rate) * self._power_scale
        mean_square = np.einsum("ij,ij->i", windows, windows) / self.frame_samples
        low, high = tones[:, :4], tones[:, 4:]
        row, column = low.argmax(axis=1), high.argmax(axis=1)
        low_peak, high_peak = low.max(axis=1), high.max(axis=1)
        low_second = np.partition(low, 2, axis=1)[:, 2]
        high_second = np.partition(high, 2, axis=1)[:, 2]
        valid = (
            (low_peak >= self._min_tone)
            & (high_peak >= self._min_tone)
            & (high_peak <= low_peak * MAX_TWIST)
            & (low_peak <= high_peak * MAX_TWIST)
            & (low_peak >= low_second * RELATIVE_PEAK)
            & (high_peak >= high_second * RELATIVE_PEAK)
            & (low_peak + high_peak >= TONE_ENERGY_RATIO * mean_square)
        )
        return np.where(valid, 4 * row + column, -1).astype(np.int8)

    def _advance(self, named: NDArray[np.int8], rows: int) -> NDArray[np.bool_]:
        """Run one window through each row's debounce; True where a digit is accepted."""
        candidate, hits = self._candidate[:rows], self._hits[:rows]
        held, misses = self._held[:rows], self._misses[:rows]
        hits[:] = np.where(named == candidate, hits + 1, 1)
        candidate[:] = named
        misses[:] = np.where(named == held, 0, misses + 1)
        held[misses >= MISSES_TO_RELEASE] = -1
        accepted: NDArray[np.bool_] = (named >= 0) & (hits >= HITS_TO_ACCEPT) & (named != held)
        held[accepted] = named[accepted]
        misses[accepted] = 0
        return accepted
