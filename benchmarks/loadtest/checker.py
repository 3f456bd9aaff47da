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

from benchmarks.loadtest.frames import (
    DEFAULT_THRESHOLDS,
    FRAME_S,
    REASONS,
    Expected,
    FrameClasses,
    Speaker,
    Thresholds,
    classify,
)
from benchmarks.loadtest.lookahead import Lookahead, groups

__all__ = ["AudioChecker", "Misroute", "SendLog", "Tally"]

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


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
        thresholds: Thresholds = DEFAULT_THRESHOLDS,
        resampled: Sequence[bool] | None = None,
    ) -> None:
        """``resampled``: per room, whether its path resamples (a 16 kHz leg in it): its
        listeners' frames that hold a speaker's marker turn are judged as turning frames
        (``frames.py``), with one frame of lookahead (``lookahead.py``)."""
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
        by_leg = [False] * legs
        for room, wide in zip(rooms, resampled or [False] * len(rooms), strict=True):
            for leg in room:
                by_leg[leg] = wide
        self._lookahead = Lookahead(by_leg, width) if any(by_leg) else None
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
        self._reasons = dict.fromkeys(REASONS, 0)

    # --- windows ---------------------------------------------------------------------------

    def open_window(self, at: float, legs: Sequence[int]) -> None:
        """Start a measurement window over ``legs`` (the listeners in the measurement)."""
        self.tally = Tally(legs=len(legs))
        self._reasons = dict.fromkeys(REASONS, 0)
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
        self._reasons = dict.fromkeys(REASONS, 0)
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
        at = np.asarray(arrivals, dtype=np.float64)
        pcm = np.asarray(frames)
        finder = None
        if self._lookahead is not None:
            legs, at, pcm, judged = self._lookahead.batch(legs, at, pcm)
            finder = self._lookahead.finder(legs, judged)
        else:
            order = np.argsort(legs, kind="stable")
            legs, at, pcm = legs[order], at[order], pcm[order]
            judged = np.ones(legs.size, dtype=bool)
        if not legs.size:
            return
        valid = self._evalid[legs]
        classes = classify(
            pcm,
            Expected(self._ebin[legs], self._eamp[legs], valid),
            self._own_bin[legs],
            self._own_amp[legs],
            self.t,
            finder,
        )
        if not judged.all():
            rows = np.flatnonzero(judged)
            legs, at, valid, classes = legs[rows], at[rows], valid[rows], classes.select(rows)
            if not legs.size:
                return
        starts, ends = groups(legs)
        armed_rows = self._arm(legs, at, classes.clean, valid, starts, ends)
        self._count_frames(legs, at, armed_rows, classes)
        self._markers(legs, at, classes, armed_rows, starts, ends)

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
        classes: FrameClasses,
        armed: Bools,
        starts: Ints,
        ends: Ints,
    ) -> None:
        """Find marker frames (sign turns between frames whose bin tells the sign), close loss
        segments, number every clean frame, take latencies."""
        xe, clean = classes.xe, classes.clean
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
        ext_ok[pos] = classes.phase
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
