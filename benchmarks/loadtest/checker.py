"""The load test's ear: every frame a synthetic leg receives is checked on the audio itself.

Pure numpy, no I/O, no clock of its own: the generator hands over batches of received frames
(listener, arrival time, 160 samples) and reads back a ``Tally``. One batch is checked with one
``rfft`` over all of its frames, whatever leg they belong to.

What each leg says (see ``plan.py``): a steady tone at an exact DFT bin of a 20 ms frame (a
multiple of 50 Hz), so every sent frame holds a whole number of cycles. Two consequences make
the check exact rather than statistical:

- tones on different bins are orthogonal over any 160-sample window, whatever their phase, so a
  frame's spectrum at a bin is that tone's amplitude alone (plus G.711 quantisation noise,
  about 35 dB down and spread over all bins);
- every frame of a tone is the same 160 samples, up to sign. The sender flips the sign every
  ``marker_period`` frames (at frames ``offset + m * period``): a *marker*. Amplitude is
  unchanged, so markers cost nothing in the presence and level checks, but the receiver sees the
  phase of that bin turn by 180 degrees on the marker frame, and knows which frame it is.

Per received frame, for each speaker the listener should hear (its room's other legs):

- **clean**: the speaker's bin within ``level_tolerance_db`` of its sent level;
- **absent**: more than ``absent_db`` below it: a *gap* (silence where audio should be);
- anything in between or above: **misrouted, level**: another leg's audio on the same bin (a
  foreign leg that shares the frequency adds or cancels, or replaced the speaker at another
  level).

and for the frame as a whole: the listener's own bin above ``absent_db`` below its own level:
**misrouted, own** (echo, or a foreign leg on the listener's frequency); any other bin above
``foreign_floor_dbfs``: **misrouted, foreign tone**; energy not explained by the expected tones
(total mean square minus theirs) above ``residual_db`` relative to the expected tones' energy:
**misrouted, foreign energy** (broadband audio such as noise or speech).

What "nothing from other rooms" can detect: every leg has an identity (bin, level). Within a
room the bins differ; across rooms the plan gives each room its own bins while they last and then
a new level (4 dB apart, beyond the tolerance), so up to ``Plan.unique_identities`` legs no two
legs share an identity and any foreign audio is caught: on a bin nobody in the room uses (foreign
tone), on the listener's own bin (own), or on an expected bin (level: an added leg changes the
amplitude, a replacing leg has another level). Past that count identities repeat, and a leg that
*replaces* the one peer it shares its identity with goes unseen; the report says how many legs
share identities. A misroute that only delays or drops audio shows as latency or loss instead.

Loss is counted exactly, between markers: a speaker sends ``period`` frames from one marker to
the next, so the listener must hear it in exactly that many frames between the two marker
arrivals; fewer is loss (frames never delivered, or delivered without that speaker's audio),
more is duplication. Segments still open when a window closes are charged with what is overdue.
Frames between markers are numbered by counting from the marker, which gives every received
speaker-frame a send time (``SendLog``) and so a latency: arrival minus send, one monotonic clock,
since the generator runs every simulated leg. A frame is late when any of its speakers' audio
took longer than the budget.

A listener is *armed* at its first frame holding every expected speaker cleanly (its room is
complete); gaps, loss and latency count from then on. Misrouting counts from the first frame.

``judge`` applies the same per-frame rules (``classify``) to one listener with no clock: the
frames it received in order, the ``Voice``s it should hear and its own. Its room is established
at the first frame holding every expected voice cleanly; loss and duplication are counted
between marker turns alone. End-to-end tests use it with ``VoiceSource`` callers, judging which
audio each caller received and never when.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "BIN_HZ",
    "FRAME_SAMPLES",
    "SAMPLE_RATE",
    "AudioChecker",
    "Hearing",
    "Misroute",
    "SendLog",
    "Speaker",
    "Tally",
    "Thresholds",
    "Voice",
    "VoiceSource",
    "amplitude_for",
    "judge",
    "marker_sign",
    "tone_frame",
]

SAMPLE_RATE: Final = 8000
FRAME_SAMPLES: Final = 160
BIN_HZ: Final = SAMPLE_RATE / FRAME_SAMPLES  # 50 Hz: the bin spacing of one 20 ms frame
FRAME_S: Final = FRAME_SAMPLES / SAMPLE_RATE
FULL_SCALE: Final = 32768.0  # a sine of this peak reads 0 dBFS
_NBINS: Final = FRAME_SAMPLES // 2 + 1

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


def amplitude_for(level_dbfs: float) -> float:
    """Peak amplitude (int16 units) of a sine at ``level_dbfs``."""
    return FULL_SCALE * 10 ** (level_dbfs / 20)


def tone_frame(bin_index: int, amplitude: float) -> npt.NDArray[np.int16]:
    """One 20 ms frame of a tone at ``bin_index * 50 Hz``: the same samples in every frame."""
    n = np.arange(FRAME_SAMPLES)
    wave = amplitude * np.sin(2 * np.pi * bin_index * n / FRAME_SAMPLES)
    return np.rint(wave).astype(np.int16)


def marker_sign(n: int, offset: int, period: int) -> int:
    """The sign of frame ``n``: it flips at frames ``offset + m * period`` (the markers)."""
    return 1 if ((n - offset) // period) % 2 == 0 else -1


@dataclass(frozen=True, slots=True)
class Speaker:
    """What the checker knows of one leg: its bin, its peak amplitude, its marker offset."""

    bin: int
    amplitude: float
    marker_offset: int


@dataclass(frozen=True, slots=True)
class Thresholds:
    level_tolerance_db: float = 1.5
    absent_db: float = 20.0
    foreign_floor_dbfs: float = -42.0
    residual_db: float = -20.0
    residual_floor_dbfs: float = -50.0


class SendLog:
    """When every leg sent every frame, on the generator's monotonic clock (inf: not yet)."""

    def __init__(self, legs: int, capacity: int = 1024) -> None:
        self.times: Floats = np.full((legs, capacity), np.inf)
        self.count: Ints = np.zeros(legs, dtype=np.int64)

    def record(self, leg: int, n: int, at: float) -> None:
        if n >= self.times.shape[1]:
            grown = np.full((self.times.shape[0], max(2 * self.times.shape[1], n + 1)), np.inf)
            grown[:, : self.times.shape[1]] = self.times
            self.times = grown
        self.times[leg, n] = at
        self.count[leg] = max(int(self.count[leg]), n + 1)

    def sent_until(self, leg: int, at: float) -> int:
        """How many frames ``leg`` had sent by ``at``."""
        return int(np.searchsorted(self.times[leg, : self.count[leg]], at, side="right"))


@dataclass(frozen=True, slots=True)
class Misroute:
    """One misrouted frame, for the report: who heard what, when."""

    listener: int
    arrival: float
    reason: str  # own | foreign-tone | level | foreign-energy
    detail: str


@dataclass
class Tally:
    """What one measurement window saw."""

    legs: int = 0
    frames_received: int = 0  # frames of armed listeners
    frames_checked: int = 0  # every frame, armed or not
    gap_frames: int = 0
    late_frames: int = 0
    misrouted_frames: int = 0
    misrouted_by_reason: dict[str, int] = field(default_factory=dict)
    speaker_frames_expected: int = 0
    speaker_frames_lost: int = 0
    speaker_frames_duplicated: int = 0
    markers: int = 0
    unarmed_legs: list[int] = field(default_factory=list)
    latencies_s: list[npt.NDArray[np.float32]] = field(default_factory=list)
    arrivals_s: list[npt.NDArray[np.float64]] = field(default_factory=list)  # of latencies_s
    marker_latencies_s: list[npt.NDArray[np.float32]] = field(default_factory=list)
    examples: list[Misroute] = field(default_factory=list)

    @property
    def loss_ratio(self) -> float:
        expected = self.speaker_frames_expected
        return self.speaker_frames_lost / expected if expected else 0.0

    def latencies(self) -> npt.NDArray[np.float32]:
        if not self.latencies_s:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(self.latencies_s)

    def arrivals(self) -> npt.NDArray[np.float64]:
        if not self.arrivals_s:
            return np.zeros(0, dtype=np.float64)
        return np.concatenate(self.arrivals_s)

    def p99_by_second(self) -> list[tuple[float, float, int]]:
        """(seconds since the first sample, p99 ms, samples) for each second of the window."""
        values, at = self.latencies(), self.arrivals()
        if not values.size:
            return []
        second = np.floor(at - np.min(at)).astype(np.int64)
        return [
            (float(t), float(np.percentile(values[second == t], 99) * 1000),
             int((second == t).sum()))
            for t in np.unique(second).tolist()
        ]  # fmt: skip

    def percentiles_ms(self) -> dict[str, float]:
        values = self.latencies()
        if not values.size:
            return {"p50": math.nan, "p95": math.nan, "p99": math.nan, "max": math.nan}
        p50, p95, p99 = np.percentile(values, [50, 95, 99]) * 1000
        return {"p50": float(p50), "p95": float(p95), "p99": float(p99),
                "max": float(np.max(values) * 1000)}  # fmt: skip


MAX_EXAMPLES: Final = 20
_REASONS: Final = ("own", "foreign-tone", "level", "foreign-energy")


@dataclass(frozen=True, slots=True)
class Expected:
    """Row i's expected speakers: their bins and peak amplitudes, ``valid`` False for padding."""

    bins: Ints
    amplitudes: Floats
    valid: Bools


@dataclass(frozen=True, slots=True)
class FrameClasses:
    """What ``classify`` found in each frame (row) and, per row and expected speaker, column."""

    xe: npt.NDArray[np.complex128]  # each expected speaker's bin, as heard (for the markers)
    clean: Bools  # (rows, speakers): within the level tolerance
    absent: Bools  # (rows, speakers): more than absent_db below its level
    level: Bools  # (rows, speakers): neither: someone else's audio on that bin
    own: Bools  # (rows,): the listener's own bin is audible
    foreign_tone: Bools  # (rows,): a bin nobody expected stands out
    foreign_energy: Bools  # (rows,): broadband energy the expected tones do not explain
    others: Floats  # (rows, bins): amplitudes left once the expected and own bins are removed

    @property
    def misrouted(self) -> Bools:
        return self.own | self.foreign_tone | self.level.any(axis=1) | self.foreign_energy

    def reasons(self) -> dict[str, Bools]:
        """Each misrouted row under one reason, the first that applies in ``_REASONS`` order."""
        level_any = self.level.any(axis=1)
        return {
            "own": self.own,
            "foreign-tone": self.foreign_tone & ~self.own,
            "level": level_any & ~self.own & ~self.foreign_tone,
            "foreign-energy": self.foreign_energy & ~self.own & ~self.foreign_tone & ~level_any,
        }

    def foreign_detail(self, row: int) -> str:
        peak = int(np.argmax(self.others[row]))
        return f"strongest foreign bin {peak * BIN_HZ:.0f} Hz"


def classify(
    frames: npt.ArrayLike,
    expected: Expected,
    own_bins: Ints,
    own_amplitudes: Floats,
    t: Thresholds,
) -> FrameClasses:
    """Judge each 160-sample row against its listener's expected speakers and own tone (see
    the module docstring): one ``rfft`` over every row, whoever's they are."""
    pcm = np.asarray(frames).astype(np.float32)
    if pcm.ndim != 2 or pcm.shape[1] != FRAME_SAMPLES:
        raise ValueError(f"frames must be (n, {FRAME_SAMPLES}), not {pcm.shape}")
    rows = np.arange(pcm.shape[0])
    valid, ebin, eamp = expected.valid, expected.bins, expected.amplitudes
    spectrum = np.fft.rfft(pcm, axis=1)
    amp = np.abs(spectrum)
    amp *= 2 / FRAME_SAMPLES
    xe = np.take_along_axis(spectrum, ebin, axis=1).astype(np.complex128)
    heard = np.abs(xe) * (2 / FRAME_SAMPLES)
    ratio = heard / eamp
    lo, hi = 10 ** (-t.level_tolerance_db / 20), 10 ** (t.level_tolerance_db / 20)
    absent_ratio = 10 ** (-t.absent_db / 20)
    clean = valid & (ratio >= lo) & (ratio <= hi)
    absent = valid & (ratio < absent_ratio)
    level = valid & ~clean & ~absent
    own = amp[rows, own_bins] > own_amplitudes * absent_ratio
    # What is left once the expected tones and the own bin are taken out: foreign tones.
    others = amp
    others[:, 0] = 0.0
    others[:, -1] = 0.0
    others[rows[:, None], np.where(valid, ebin, 0)] = 0.0
    others[rows, own_bins] = 0.0
    foreign_tone = others.max(axis=1) > amplitude_for(t.foreign_floor_dbfs)
    explained = np.where(valid, heard * heard / 2, 0.0).sum(axis=1)
    residual = np.einsum("ij,ij->i", pcm, pcm) / FRAME_SAMPLES - explained
    nominal = np.where(valid, eamp * eamp / 2, 0.0).sum(axis=1)
    limit = np.maximum(
        amplitude_for(t.residual_floor_dbfs) ** 2 / 2, nominal * 10 ** (t.residual_db / 10)
    )
    foreign_energy = residual > limit
    return FrameClasses(xe, clean, absent, level, own, foreign_tone, foreign_energy, others)


class AudioChecker:
    """Checks the frames every listener receives against its room; see the module docstring.

    ``rooms`` lists the legs of each room. State is kept per (listener, expected speaker) pair,
    so batches may be any size: checking a stream in one batch or many gives the same tally.
    """

    def __init__(
        self,
        speakers: Sequence[Speaker],
        rooms: Sequence[Sequence[int]],
        send_log: SendLog,
        *,
        marker_period: int,
        budget_s: float,
        thresholds: Thresholds = Thresholds(),  # frozen: safe to share
    ) -> None:
        legs = len(speakers)
        self.speakers = tuple(speakers)
        self.send_log = send_log
        self.period = marker_period
        self.budget_s = budget_s
        self.t = thresholds
        width = max((len(room) - 1 for room in rooms), default=1) or 1
        self._own_bin = np.array([s.bin for s in speakers], dtype=np.int64)
        self._own_amp = np.array([s.amplitude for s in speakers], dtype=np.float64)
        self._offset = np.array([s.marker_offset for s in speakers], dtype=np.int64)
        self._espk = np.full((legs, width), -1, dtype=np.int64)  # expected speakers, -1 padded
        for room in rooms:
            for listener in room:
                others = [leg for leg in room if leg != listener]
                self._espk[listener, : len(others)] = others
        self._evalid = self._espk >= 0
        safe = np.where(self._evalid, self._espk, 0)
        self._ebin = np.where(self._evalid, self._own_bin[safe], 0)
        self._eamp = np.where(self._evalid, self._own_amp[safe], 1.0)
        shape = (legs, width)
        self.armed = np.zeros(legs, dtype=bool)
        self.armed_at = np.full(legs, np.nan)
        self._last_x = np.zeros(shape, dtype=np.complex128)  # last clean bin value (0: none)
        self._cur_n = np.full(shape, np.nan)  # frame number of the last clean frame heard
        self._marker_m = np.full(shape, -1, dtype=np.int64)  # last marker index seen
        self._marker_at = np.full(shape, np.nan)  # its arrival
        self._seg_count = np.zeros(shape, dtype=np.int64)  # clean frames since that marker
        self._seg_armed = np.zeros(shape, dtype=bool)  # the segment started armed
        self._seg_charged = np.zeros(shape, dtype=np.int64)  # loss already charged in it
        self._window_clean = np.zeros(shape, dtype=np.int64)
        self._window_legs: Ints = np.zeros(0, dtype=np.int64)
        self._window_start = 0.0
        self.tally = Tally()
        self._reasons = dict.fromkeys(_REASONS, 0)

    # --- windows ---------------------------------------------------------------------------

    def open_window(self, at: float, legs: Sequence[int]) -> None:
        """Start a measurement window over ``legs`` (the listeners in the measurement)."""
        self.tally = Tally(legs=len(legs))
        self._reasons = dict.fromkeys(_REASONS, 0)
        self._window_legs = np.asarray(legs, dtype=np.int64)
        self._window_start = at
        self._window_clean[:] = 0

    def close_window(self, at: float, allowance_s: float) -> Tally:
        """Charge what is overdue by ``at - allowance_s`` and return the window's tally.

        Overdue: audio a speaker sent that its listener should have heard by then. An armed
        pair is charged the frames sent since its last marker that it has not heard; a pair
        that has seen no marker for two periods, the frames sent in the window that it did not
        hear; an unarmed listener (its room never came together), everything its room sent.
        """
        tally = self.tally
        cutoff = at - allowance_s
        log = self.send_log
        start = self._window_start
        for listener in self._window_legs.tolist():
            for s in np.flatnonzero(self._evalid[listener]).tolist():
                speaker = int(self._espk[listener, s])
                sent_window = log.sent_until(speaker, cutoff) - log.sent_until(speaker, start)
                tally.speaker_frames_expected += max(0, sent_window)
                if not self.armed[listener]:
                    tally.speaker_frames_lost += max(0, sent_window)
                    continue
                m = int(self._marker_m[listener, s])
                if m >= 0 and self._seg_armed[listener, s]:
                    n_m = int(self._offset[speaker]) + m * self.period
                    due = log.sent_until(speaker, cutoff) - n_m
                    deficit = due - int(self._seg_count[listener, s])
                    deficit -= int(self._seg_charged[listener, s])
                    if deficit > 0:
                        tally.speaker_frames_lost += deficit
                        self._seg_charged[listener, s] += deficit
                elif cutoff - float(self.armed_at[listener]) > 2 * self.period * FRAME_S:
                    # Armed, yet no marker came through: the speaker's audio stopped.
                    since = max(start, float(self.armed_at[listener]))
                    due = log.sent_until(speaker, cutoff) - log.sent_until(speaker, since)
                    missing = due - int(self._window_clean[listener, s])
                    tally.speaker_frames_lost += max(0, missing)
            if not self.armed[listener]:
                tally.unarmed_legs.append(listener)
        tally.misrouted_by_reason = {k: v for k, v in self._reasons.items() if v}
        # Frames checked from now until the next window count in a scratch tally, not this one.
        self.tally = Tally()
        self._reasons = dict.fromkeys(_REASONS, 0)
        self._window_legs = np.zeros(0, dtype=np.int64)
        return tally

    # --- frames ----------------------------------------------------------------------------

    def process(
        self,
        listeners: npt.ArrayLike,
        arrivals: npt.ArrayLike,
        frames: npt.NDArray[np.int16],
    ) -> None:
        """Check a batch: row i is a 160-sample frame ``listeners[i]`` received at
        ``arrivals[i]``. Each listener's rows must be in arrival order."""
        legs = np.asarray(listeners, dtype=np.int64)
        if not legs.size:
            return
        order = np.argsort(legs, kind="stable")
        legs = legs[order]
        at = np.asarray(arrivals, dtype=np.float64)[order]
        pcm = np.asarray(frames)[order]
        valid = self._evalid[legs]
        classes = classify(
            pcm,
            Expected(self._ebin[legs], self._eamp[legs], valid),
            self._own_bin[legs],
            self._own_amp[legs],
            self.t,
        )
        starts, ends = _groups(legs)
        armed_rows = self._arm(legs, at, classes.clean, valid, starts, ends)
        self._count_frames(legs, at, armed_rows, classes)
        self._markers(legs, at, classes.xe, classes.clean, armed_rows, starts, ends)

    def _arm(
        self, legs: Ints, at: Floats, clean: Bools, valid: Bools, starts: Ints, ends: Ints
    ) -> Bools:
        """Arm listeners at their first frame with every expected speaker clean."""
        rows = np.arange(legs.size)
        complete = (clean.sum(axis=1) == valid.sum(axis=1)) & valid.any(axis=1)
        first = np.minimum.reduceat(np.where(complete, rows, legs.size), starts)
        group_legs = legs[starts]
        already = self.armed[group_legs]
        from_row = np.where(already, starts, first)
        newly = ~already & (first < legs.size)
        self.armed[group_legs[newly]] = True
        self.armed_at[group_legs[newly]] = at[first[newly]]
        return rows >= np.repeat(from_row, ends - starts)

    def _count_frames(self, legs: Ints, at: Floats, armed: Bools, classes: FrameClasses) -> None:
        tally = self.tally
        tally.frames_checked += legs.size
        tally.frames_received += int(armed.sum())
        tally.gap_frames += int((armed & classes.absent.any(axis=1)).sum())
        tally.misrouted_frames += int(classes.misrouted.sum())
        for name, mask in classes.reasons().items():
            self._reasons[name] += int(mask.sum())
            for i in np.flatnonzero(mask)[: MAX_EXAMPLES - len(tally.examples)].tolist():
                detail = classes.foreign_detail(i)
                tally.examples.append(Misroute(int(legs[i]), float(at[i]), name, detail))

    def _markers(
        self,
        legs: Ints,
        at: Floats,
        xe: npt.NDArray[np.complex128],
        clean: Bools,
        armed: Bools,
        starts: Ints,
        ends: Ints,
    ) -> None:
        """Find marker frames, close loss segments, number every clean frame, take latencies."""
        n_rows, width = xe.shape
        groups = starts.size
        group_legs = legs[starts]
        # Extended rows: one state row (carried from the previous batch) before each group.
        pos = np.arange(n_rows) + np.repeat(np.arange(groups) + 1, ends - starts)
        state_pos = starts + np.arange(groups)
        size = n_rows + groups
        ext_x = np.zeros((size, width), dtype=np.complex128)
        ext_x[state_pos] = self._last_x[group_legs]
        ext_x[pos] = xe
        ext_ok = np.zeros((size, width), dtype=bool)
        ext_ok[state_pos] = True
        ext_ok[pos] = clean
        index = np.arange(size)[:, None]
        last_ok = np.maximum.accumulate(np.where(ext_ok, index, 0), axis=0)
        prev_ok = np.vstack([np.zeros((1, width), dtype=np.int64), last_ok[:-1]])
        previous = np.take_along_axis(ext_x, prev_ok, axis=0)
        flip = ext_ok & ((ext_x * np.conj(previous)).real < 0)
        flip[state_pos] = False
        present = np.zeros((size, width), dtype=np.int64)
        present[pos] = clean
        cum = np.cumsum(present, axis=0)
        cum_excl = cum - present
        ext_at = np.zeros(size)
        ext_at[pos] = at
        ext_armed = np.zeros(size, dtype=bool)
        ext_armed[pos] = armed
        ext_leg = np.repeat(group_legs, ends - starts + 1)
        group_of = np.repeat(np.arange(groups), ends - starts + 1)
        # Reset points for frame numbering: state rows carry the last number heard, marker
        # rows restart at the marker's frame.
        reset = np.zeros((size, width), dtype=bool)
        reset[state_pos] = True
        reset_value = np.full((size, width), np.nan)
        reset_value[state_pos] = self._cur_n[group_legs]
        last_marker_row = np.full((groups, width), -1, dtype=np.int64)
        tally = self.tally
        log = self.send_log
        marker_latency: list[float] = []
        for r, s in zip(*np.nonzero(flip), strict=True):
            leg = int(ext_leg[r])
            speaker = int(self._espk[leg, s])
            g = int(group_of[r])
            arrival = float(ext_at[r])
            offset = int(self._offset[speaker])
            m_prev = int(self._marker_m[leg, s])
            if m_prev < 0:
                sent = log.times[speaker, offset : int(log.count[speaker]) : self.period]
                m = int(np.searchsorted(sent, arrival, side="right")) - 1
                if m < 0:
                    continue  # a phase turn before any marker was sent: not a marker
            else:
                elapsed = arrival - float(self._marker_at[leg, s])
                m = m_prev + max(1, round(elapsed / (self.period * FRAME_S)))
            n_m = offset + m * self.period
            since = last_marker_row[g, s]
            if since >= 0:
                heard = int(cum_excl[r, s] - cum_excl[since, s])
            else:
                heard = int(self._seg_count[leg, s] + cum_excl[r, s] - cum_excl[state_pos[g], s])
            if m_prev >= 0 and self._seg_armed[leg, s]:
                expected = n_m - (offset + m_prev * self.period)
                charged = int(self._seg_charged[leg, s])
                tally.speaker_frames_lost += max(0, expected - heard - charged)
                tally.speaker_frames_duplicated += max(0, heard - expected)
            self._seg_charged[leg, s] = 0
            self._seg_armed[leg, s] = bool(ext_armed[r])
            self._marker_m[leg, s] = m
            self._marker_at[leg, s] = arrival
            last_marker_row[g, s] = r
            reset[r, s] = True
            reset_value[r, s] = n_m - 1
            if ext_armed[r] and n_m < log.times.shape[1]:
                tally.markers += 1
                marker_latency.append(arrival - float(log.times[speaker, n_m]))
        if marker_latency:
            tally.marker_latencies_s.append(np.asarray(marker_latency, dtype=np.float32))
        # Carry the segment counts over to the next batch.
        end_rows = ends + np.arange(groups)  # the last extended row of each group
        for s in range(width):
            marked = last_marker_row[:, s] >= 0
            in_batch = cum[end_rows, s] - cum_excl[np.where(marked, last_marker_row[:, s], 0), s]
            carried = self._seg_count[group_legs, s] + cum[end_rows, s] - cum[state_pos, s]
            self._seg_count[group_legs, s] = np.where(marked, in_batch, carried)
        self._window_clean[group_legs] += (cum[end_rows] - cum[state_pos]) * ext_armed[end_rows][
            :, None
        ]
        # Number every clean frame from its reset point.
        reset_row = np.maximum.accumulate(np.where(reset, index, 0), axis=0)
        base = np.take_along_axis(reset_value, reset_row, axis=0)
        number = base + cum - np.take_along_axis(cum_excl, reset_row, axis=0)
        self._cur_n[group_legs] = number[end_rows]
        self._last_x[group_legs] = np.take_along_axis(ext_x, last_ok[end_rows], axis=0)
        self._latencies(ext_leg, ext_at, ext_armed, number, present.astype(bool), pos)

    def _latencies(
        self,
        ext_leg: Ints,
        ext_at: Floats,
        ext_armed: Bools,
        number: Floats,
        present: Bools,
        pos: Ints,
    ) -> None:
        usable = present & ext_armed[:, None] & np.isfinite(number)
        r, s = np.nonzero(usable)
        if not r.size:
            return
        speaker = self._espk[ext_leg[r], s]
        n = number[r, s].astype(np.int64)
        times = self.send_log.times
        ok = (n >= 0) & (n < times.shape[1])
        sent = np.full(r.size, np.inf)
        sent[ok] = times[speaker[ok], n[ok]]
        known = np.isfinite(sent)
        latency = ext_at[r][known] - sent[known]
        self.tally.latencies_s.append(latency.astype(np.float32))
        self.tally.arrivals_s.append(ext_at[r][known])
        # A frame is late when any of its speakers' audio is.
        late_rows = np.unique(r[known][latency > self.budget_s])
        self.tally.late_frames += int(late_rows.size)


# --- one listener, no clock: for end-to-end tests ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Voice:
    """One leg's voice as ``judge`` knows it: a tone on an exact bin of a 20 ms frame, at
    ``level_dbfs``, its sign flipped every ``marker_period`` frames from ``marker_offset``."""

    bin: int
    level_dbfs: float
    marker_offset: int = 0
    marker_period: int = 20

    def __post_init__(self) -> None:
        if not 0 < self.bin < _NBINS - 1:
            raise ValueError(f"bin {self.bin} is not strictly between 0 and {_NBINS - 1}")
        if self.marker_period < 2:
            raise ValueError("markers need a period of at least 2 frames")

    @property
    def freq_hz(self) -> float:
        return self.bin * BIN_HZ

    @property
    def amplitude(self) -> float:
        return amplitude_for(self.level_dbfs)


class VoiceSource:
    """A ``Voice`` as an audio source (``next_frame``, one 20 ms frame per call), for the
    provider simulators' callers."""

    def __init__(self, voice: Voice) -> None:
        frame = tone_frame(voice.bin, voice.amplitude)
        self._frames = {1: frame, -1: (-frame.astype(np.int32)).astype(np.int16)}
        self.voice = voice
        self.sent = 0

    def next_frame(self) -> npt.NDArray[np.int16]:
        n = self.sent
        self.sent += 1
        return self._frames[marker_sign(n, self.voice.marker_offset, self.voice.marker_period)]


@dataclass(frozen=True, slots=True)
class Hearing:
    """What one listener heard, frame by frame (indices into the frames judged).

    ``established_at``: the first frame with every expected speaker clean (None: never).
    ``gaps``: frames from then on missing an expected speaker. ``misrouted``: (frame, reason,
    detail) for every frame with the own tone, a foreign tone, a wrong level or foreign energy,
    from the first frame. ``markers``: per expected speaker, the marker turns heard once
    established; between two of them a speaker must be heard in exactly ``marker_period``
    frames: more is ``duplicated``, fewer ``lost``.
    """

    frames: int
    established_at: int | None
    gaps: tuple[int, ...]
    misrouted: tuple[tuple[int, str, str], ...]
    markers: tuple[int, ...]
    duplicated: int
    lost: int

    @property
    def longest_gap(self) -> int:
        """The longest run of consecutive frames missing a speaker."""
        longest = run = 0
        previous = -2
        for frame in self.gaps:
            run = run + 1 if frame == previous + 1 else 1
            longest, previous = max(longest, run), frame
        return longest

    def problems(self, *, max_gap_run: int = 0, max_lost: int = 0) -> list[str]:
        """Everything wrong with what was heard, in words; empty when it was all clean.

        Strict by default. ``max_gap_run`` and ``max_lost`` let a caller whose engine shares a
        busy machine accept what late arrivals explain: a speaker missing for at most that many
        consecutive frames, at most ``max_lost`` speaker frames dropped to catch up. Misrouted
        and duplicated frames are never accepted."""
        found: list[str] = []
        if self.established_at is None:
            found.append(f"never heard every expected speaker cleanly in {self.frames} frames")
        if self.misrouted:
            found.append(f"{len(self.misrouted)} misrouted frames, first {self.misrouted[:3]}")
        if self.longest_gap > max_gap_run:
            found.append(
                f"{len(self.gaps)} frames missing a speaker after frame {self.established_at}"
                f" (up to {self.longest_gap} in a row): {list(self.gaps[:10])}"
            )
        if self.duplicated:
            found.append(f"{self.duplicated} speaker frames duplicated")
        if self.lost > max_lost:
            found.append(f"{self.lost} speaker frames lost")
        return found


def judge(
    frames: npt.ArrayLike,
    hears: Sequence[Voice],
    own: Voice,
    thresholds: Thresholds = Thresholds(),  # frozen: safe to share
) -> Hearing:
    """Judge the frames one listener received, in order (rows of 160 samples), against the
    voices it should hear and its own; no timing is involved, only what each frame holds."""
    pcm = np.asarray(frames).reshape(-1, FRAME_SAMPLES)
    rows, width = pcm.shape[0], len(hears)
    expected = Expected(
        np.tile(np.array([v.bin for v in hears], dtype=np.int64), (rows, 1)),
        np.tile(np.array([v.amplitude for v in hears], dtype=np.float64), (rows, 1)),
        np.ones((rows, width), dtype=bool),
    )
    classes = classify(
        pcm,
        expected,
        np.full(rows, own.bin, dtype=np.int64),
        np.full(rows, own.amplitude, dtype=np.float64),
        thresholds,
    )
    complete = np.flatnonzero(classes.clean.all(axis=1))  # with no voice expected: every row
    established = int(complete[0]) if complete.size else None
    misrouted = sorted(
        (int(i), reason, classes.foreign_detail(int(i)))
        for reason, mask in classes.reasons().items()
        for i in np.flatnonzero(mask)
    )
    if established is None:
        return Hearing(rows, None, (), tuple(misrouted), (0,) * width, 0, 0)
    gaps = np.flatnonzero(classes.absent[established:].any(axis=1)) + established
    counts = [
        _marker_segments(classes.xe[established:, s], classes.clean[established:, s], voice)
        for s, voice in enumerate(hears)
    ]
    return Hearing(
        frames=rows,
        established_at=established,
        gaps=tuple(int(g) for g in gaps),
        misrouted=tuple(misrouted),
        markers=tuple(c[0] for c in counts),
        duplicated=sum(c[1] for c in counts),
        lost=sum(c[2] for c in counts),
    )


def _marker_segments(
    x: npt.NDArray[np.complex128], clean: Bools, voice: Voice
) -> tuple[int, int, int]:
    """(marker turns, frames duplicated, frames lost) of one speaker: its clean frames are
    numbered between sign turns of its bin (as in ``AudioChecker._markers``)."""
    heard = np.flatnonzero(clean)
    values = x[heard]
    turns = np.flatnonzero((values[1:] * np.conj(values[:-1])).real < 0) + 1
    between = np.diff(turns)  # clean frames from one turn to the next
    period = voice.marker_period
    duplicated = int(np.maximum(between - period, 0).sum())
    lost = int(np.maximum(period - between, 0).sum())
    return int(turns.size), duplicated, lost


def _groups(legs: Ints) -> tuple[Ints, Ints]:
    """Start and end (exclusive) of each run of equal values in sorted ``legs``."""
    cut = np.flatnonzero(np.diff(legs)) + 1
    starts = np.concatenate(([0], cut)).astype(np.int64)
    ends = np.concatenate((cut, [legs.size])).astype(np.int64)
    return starts, ends
