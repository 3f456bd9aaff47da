"""DTMF: digit tones (queued per leg by ``media.dtmf_out``) and in-band detection on all legs.

Detection runs the Goertzel algorithm over all legs in one pass. The Goertzel state after a block
of ``N`` samples is linear in the samples, ``s[N-1] = sum x[n] * sin((N-n)w) / sin w`` and
``s[N-2] = sum x[n] * sin((N-1-n)w) / sin w``, so for a block of legs the recurrence collapses into
one matrix product (legs x samples) @ (samples x 2 per frequency); the power is the usual
``s1² + s2² - 2cos(w)·s1·s2``. Same numbers as the sample-by-sample loop, without a Python loop
(``goertzel_power``; the detector does the same per half frame, in float32, see ``DtmfDetector``).

Each 20 ms frame is analysed as two 20 ms windows, one straddling the previous frame, so decisions
come every 10 ms. A window names a digit when: both tones are above a floor, each is the clear
peak of its group, their levels are within the allowed twist, and together they hold most of the
window's energy (speech, noise and single tones such as ringback spread or miss it). A digit is
accepted after three windows in a row name it (about 40 ms of tone; 23 ms bursts are rejected,
as ITU-T Q.24 asks) and reported once; it is released after two windows without it, so the same
digit pressed again after a normal 40 ms pause is reported again.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from media.errors import MediaError
from media.tones import burst_envelope, dbfs_to_amplitude

__all__ = [
    "DTMF_DIGITS",
    "DtmfDetector",
    "InvalidDtmfDigit",
    "dtmf_tone",
    "goertzel_power",
]

ROW_HZ = (697.0, 770.0, 852.0, 941.0)
COLUMN_HZ = (1209.0, 1336.0, 1477.0, 1633.0)
#: Keypad in row-major order: digit index = 4 * row + column.
KEYPAD = "123A456B789C*0#D"
DTMF_DIGITS = frozenset(KEYPAD)

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

    Row ``i`` of the detector's state is one leg slot. ``process(frames)`` feeds rows
    ``0 .. len(frames)-1``; ``process(frames, rows)`` feeds the named rows only (the mixer passes
    the slots of the legs it detects on). The detector grows to the highest row it is fed; rows
    not fed keep their state untouched, and ``reset_row`` clears a slot for its next leg.

    Each half frame (10 ms) is reduced once to its Goertzel states and energy, in float32; a
    20 ms window is the earlier half's states carried over the later half (the recurrence with
    no input is a 2x2 rotation per frequency) plus the later half's, so the two windows of a
    frame cost one (2 * legs, 80) x (80, 16) product instead of two of twice the size.
    """

    def __init__(self, sample_rate: int = 8000) -> None:
        if sample_rate <= 0 or sample_rate % 100:
            raise ValueError(f"sample_rate must be a positive multiple of 100, got {sample_rate}")
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate // 50
        self._half = half = self.frame_samples // 2
        freqs = ROW_HZ + COLUMN_HZ
        w = 2.0 * np.pi * np.asarray(freqs) / sample_rate
        self._weights = _goertzel_weights(half, freqs, sample_rate).astype(np.float32)
        # Carrying states over `half` samples of no input: s' = U(h)·s1 - U(h-1)·s2 and
        # s2' = U(h-1)·s1 - U(h-2)·s2, with U(k) = sin((k+1)w) / sin(w).
        carry = [np.sin((k + 1) * w) / np.sin(w) for k in (half, half - 1, half - 2)]
        self._carry = np.stack([carry[0], -carry[1], carry[1], -carry[2]])[:, :, None].astype(
            np.float32
        )
        self._coeff = (2.0 * np.cos(w))[:, None].astype(np.float32)
        # Goertzel power P of a sinusoid of amplitude A over N samples is about (A*N/2)², so its
        # mean square A²/2 is 2P/N²: the thresholds below are in units of P.
        power_per_mean_square = self.frame_samples**2 / 2.0
        self._floor = dbfs_to_amplitude(MIN_TONE_DBFS) ** 2 / 2.0 * power_per_mean_square
        self._share = TONE_ENERGY_RATIO * power_per_mean_square / self.frame_samples
        # Per row: the last half frame's 16 states and its energy, then the debounce.
        self._last = np.zeros((17, 0), dtype=np.float32)
        self._held = np.zeros(0, dtype=np.int8)  # digit index being held, -1 for none
        self._candidate = np.zeros(0, dtype=np.int8)  # what the last window named
        self._hits = np.zeros(0, dtype=np.int32)  # windows in a row naming _candidate
        self._misses = np.zeros(0, dtype=np.int32)  # windows in a row without _held
        # No row names or holds a digit: a tick in which no window names one changes nothing
        # that matters (hits count only toward a candidate, misses only against a held digit).
        self._idle = True

    @property
    def capacity(self) -> int:
        return len(self._held)

    def ensure_capacity(self, rows: int) -> None:
        """Make room for rows ``0 .. rows-1``; new rows start idle."""
        extra = rows - self.capacity
        if extra <= 0:
            return
        self._last = np.concatenate([self._last, np.zeros((17, extra), dtype=np.float32)], axis=1)
        self._held = np.concatenate([self._held, np.full(extra, -1, dtype=np.int8)])
        self._candidate = np.concatenate([self._candidate, np.full(extra, -1, dtype=np.int8)])
        self._hits = np.concatenate([self._hits, np.zeros(extra, dtype=np.int32)])
        self._misses = np.concatenate([self._misses, np.zeros(extra, dtype=np.int32)])

    def reset_row(self, row: int) -> None:
        """Forget everything about ``row`` (its leg left; the slot will carry another)."""
        if not 0 <= row < self.capacity:
            raise IndexError(f"row {row} out of range (capacity {self.capacity})")
        self._last[:, row] = 0.0
        self._held[row] = -1
        self._candidate[row] = -1
        self._hits[row] = 0
        self._misses[row] = 0

    def held(self, row: int) -> str | None:
        """The digit ``row`` is in the middle of (accepted, not yet released), if any."""
        if not 0 <= row < self.capacity or self._held[row] < 0:
            return None
        return KEYPAD[self._held[row]]

    def process(
        self, frames: NDArray[np.int16], rows: NDArray[np.intp] | None = None
    ) -> list[tuple[int, str]]:
        """Feed one frame per row, or ``k`` frames per row as a ``(k, rows, samples)`` block
        (frame ``f`` of every row in ``frames[f]``); return ``(row, digit)`` for each digit that
        starts now, in order.

        ``rows`` (distinct) says which row each frame belongs to; by default frame i is row i.
        Feeding ``k`` frames at once costs much less than ``k`` calls: most of a call's cost is
        fixed (a few dozen array operations, the first ones slowed by a cold cache in the tick).
        """
        block = frames[None] if frames.ndim == 2 else frames
        if block.ndim != 3 or block.shape[2] != self.frame_samples or not block.shape[0]:
            raise ValueError(
                f"frames must be (rows, {self.frame_samples}) or (k, rows, {self.frame_samples}),"
                f" got shape {frames.shape}"
            )
        k, n = block.shape[0], block.shape[1]
        if rows is not None and rows.shape != (n,):
            raise ValueError(f"rows must name one row per frame, got shape {rows.shape}")
        index: slice | NDArray[np.intp] = slice(0, n) if rows is None else rows
        self.ensure_capacity(n if rows is None or rows.size == 0 else int(np.max(rows)) + 1)
        # Halves in time order, each a run of n rows: half h of frame f at (2f + h) * n.
        halves = block.reshape(k, n, 2, self._half).transpose(0, 2, 1, 3)
        flat = halves.astype(np.float32, order="C").reshape(2 * k * n, self._half)
        state = np.empty((17, 2 * k * n), dtype=np.float32)  # states and energy of each half
        state[:16] = (flat @ self._weights).T
        np.einsum("ij,ij->i", flat, flat, out=state[16])
        # Window w spans half w - 1 (the last one of the previous call for w = 0) and half w.
        earlier = np.concatenate([self._last[:, index], state[:, :-n]], axis=1)
        self._last[:, index] = state[:, -n:]
        named = self._classify(earlier, state).reshape(2 * k, n)
        return self._debounce(named, index, rows)

    def _classify(
        self, earlier: NDArray[np.float32], later: NDArray[np.float32]
    ) -> NDArray[np.int8]:
        """Digit index named by each window (earlier half + later half), or -1."""
        carry, a1, a2 = self._carry, earlier[:8], earlier[8:16]
        s1 = later[:8] + carry[0] * a1 + carry[1] * a2
        s2 = later[8:16] + carry[2] * a1 + carry[3] * a2
        tones = s1 * s1 + s2 * s2 - self._coeff * s1 * s2  # (8, windows)
        energy = earlier[16] + later[16]
        low, high = tones[:4], tones[4:]
        low_peak, high_peak = low.max(axis=0), high.max(axis=0)
        loud = np.minimum(low_peak, high_peak) >= self._floor
        if not loud.any():
            # The usual window (speech, silence, a single tone): no digit can be named, and the
            # remaining tests would cost a dozen more array operations per tick.
            return np.full(loud.size, -1, dtype=np.int8)
        valid = (
            loud
            & (high_peak <= low_peak * MAX_TWIST)
            & (low_peak <= high_peak * MAX_TWIST)
            & (low_peak + high_peak >= self._share * energy)
            # Each peak is the only tone of its group within RELATIVE_PEAK of it.
            & ((low * RELATIVE_PEAK > low_peak).sum(axis=0) == 1)
            & ((high * RELATIVE_PEAK > high_peak).sum(axis=0) == 1)
        )
        named = np.full(valid.size, -1, dtype=np.int8)
        at = np.flatnonzero(valid)
        if at.size:
            named[at] = 4 * low[:, at].argmax(axis=0) + high[:, at].argmax(axis=0)
        return named

    def _debounce(
        self,
        named: NDArray[np.int8],
        index: slice | NDArray[np.intp],
        rows: NDArray[np.intp] | None,
    ) -> list[tuple[int, str]]:
        """Run both windows of the frame through each row's debounce, in order."""
        if self._idle and not (named >= 0).any():
            return []  # no row holds or counts toward a digit, and none is named now
        candidate, hits = self._candidate[index], self._hits[index]
        held, misses = self._held[index], self._misses[index]
        detected: list[tuple[int, str]] = []
        for window in named:
            hits = np.where(window == candidate, hits + 1, 1)
            candidate = window
            misses = np.where(window == held, 0, misses + 1)
            held = np.where(misses >= MISSES_TO_RELEASE, -1, held).astype(np.int8)
            accepted = (window >= 0) & (hits >= HITS_TO_ACCEPT) & (window != held)
            held[accepted] = window[accepted]
            misses[accepted] = 0
            for position in np.flatnonzero(accepted).tolist():
                row = position if rows is None else int(rows[position])
                detected.append((row, KEYPAD[window[position]]))
        self._candidate[index], self._hits[index] = candidate, hits
        self._held[index], self._misses[index] = held, misses
        self._idle = bool((self._candidate < 0).all() and (self._held < 0).all())
        return detected
