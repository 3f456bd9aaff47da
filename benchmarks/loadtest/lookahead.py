"""The checker's one frame of lookahead for listeners whose path resamples.

A frame that holds a speaker's marker turn is known by its neighbours: the frame before and the
frame after are of opposite signs (``frames.turns_between``; why a turn falls inside a frame at
all is in ``frames.py``). The generator hands the checker batches, so the frame after a batch's
last frame is in the next batch: ``Lookahead`` holds each listener's last frame back until then,
and remembers each listener's last judged frame within tolerance (per speaker) as the frame
before the next batch's. Listeners whose path does not resample are neither held nor looked at:
their frames are judged as they come, as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from benchmarks.loadtest.frames import Complexes, TurnFinder, TurnState, find_turns

__all__ = ["Lookahead", "groups"]

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
Pcm = npt.NDArray[np.int16]


def groups(legs: Ints) -> tuple[Ints, Ints]:
    """Start and end (exclusive) of each run of equal values in sorted ``legs``."""
    cut = np.flatnonzero(np.diff(legs)) + 1
    starts = np.concatenate(([0], cut)).astype(np.int64)
    ends = np.concatenate((cut, [legs.size])).astype(np.int64)
    return starts, ends


class Lookahead:
    """Held frames and the frame before, per listener (see the module docstring)."""

    def __init__(self, resampled: Sequence[bool], width: int) -> None:
        self.resampled = np.asarray(resampled, dtype=bool)
        legs = self.resampled.size
        self._state: TurnState = (
            np.zeros((legs, width), dtype=np.complex128),
            np.zeros((legs, width), dtype=bool),
            np.zeros((legs, width), dtype=bool),
        )
        self._held_legs: Ints = np.zeros(0, dtype=np.int64)
        self._held_at: Floats = np.zeros(0, dtype=np.float64)
        self._held_pcm: Pcm | None = None

    def batch(self, legs: Ints, at: Floats, pcm: Pcm) -> tuple[Ints, Floats, Pcm, Bools]:
        """The batch sorted by listener with the held frames in front of their listener's, and
        which rows to judge now: all but the last of a resampled listener, which is held."""
        if self._held_pcm is not None and self._held_legs.size:
            legs = np.concatenate((self._held_legs, legs))
            at = np.concatenate((self._held_at, at))
            pcm = np.concatenate((self._held_pcm, pcm))
        if not legs.size:
            return legs, at, pcm, np.zeros(0, dtype=bool)
        order = np.argsort(legs, kind="stable")
        legs, at, pcm = legs[order], at[order], pcm[order]
        _, ends = groups(legs)
        last = ends - 1
        last = last[self.resampled[legs[last]]]
        judged = np.ones(legs.size, dtype=bool)
        judged[last] = False
        self._held_legs, self._held_at, self._held_pcm = legs[last], at[last], pcm[last]
        return legs, at, pcm, judged

    def finder(self, legs: Ints, judged: Bools) -> TurnFinder:
        """The ``classify`` turn finder for a batch from ``batch``: it also remembers, per
        listener and speaker, the last judged row within tolerance for its next batch."""

        def find(x: Complexes, ok: Bools, gone: Bools) -> tuple[Bools, Bools]:
            starts, ends = groups(legs)
            listeners = legs[starts]
            last_x, last_ok, prev_ok = self._state
            before = (last_x[listeners], last_ok[listeners], prev_ok[listeners])
            turns, edges, after = find_turns(x, ok, gone, starts, ends, before)
            for part, new in zip(self._state, after, strict=True):
                part[listeners] = new
            mine = (self.resampled[legs] & judged)[:, None]
            return turns & mine, edges & mine

        return find
