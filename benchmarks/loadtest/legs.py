"""One synthetic leg: its voice (a tone with phase markers) and its ear (frames timestamped on
arrival), plugged into a simulated provider call.

``MarkerTone`` is the ``AudioSource`` the simulator's paced sender pulls one frame from every
20 ms; it notes in the ``SendLog`` when each frame left, just before the simulator encodes and
sends it. ``Ear`` replaces the call's ``Playout`` (a public attribute of every simulated call): a
provider would play what it receives at real time; the load test instead timestamps every frame
the moment the simulator has decoded it and keeps it for the checker, so what is measured is the
engine's delivery, not the provider's playout queue. Marks come back at once, as from an idle
playout, and the call's playout ticks hear one shared silent frame (no per-tick allocation).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

import numpy as np
import numpy.typing as npt

from adapters.simulators.pacing import Playout
from benchmarks.loadtest.checker import SendLog
from benchmarks.loadtest.frames import FRAME_SAMPLES, marker_sign, tone_frame
from benchmarks.loadtest.plan import LegPlan

__all__ = ["Ear", "MarkerTone"]

Samples = npt.NDArray[np.int16]
_SILENT: Final = np.zeros(FRAME_SAMPLES, dtype=np.int16)
_SILENT.flags.writeable = False


class MarkerTone:
    """A leg's voice: its tone, sign-flipped every ``period`` frames from its marker offset."""

    def __init__(
        self,
        leg: LegPlan,
        period: int,
        log: SendLog,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        frame = tone_frame(leg.bin, leg.amplitude)
        self._frames = {1: frame, -1: (-frame.astype(np.int32)).astype(np.int16)}
        self._leg = leg.index
        self._offset = leg.marker_offset
        self._period = period
        self._log = log
        self._clock = clock
        self.sent = 0

    def next_frame(self) -> Samples:
        n = self.sent
        self.sent += 1
        self._log.record(self._leg, n, self._clock())
        return self._frames[marker_sign(n, self._offset, self._period)]


class Ear(Playout):
    """What a leg receives, frame by frame with arrival times, until ``take`` collects it."""

    def __init__(self, leg: int, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(None)
        self.leg = leg
        self._clock = clock
        self._times: list[float] = []
        self._frames: list[Samples] = []
        self._partial = np.zeros(0, dtype=np.int16)
        self.received = 0

    def queue_audio(self, samples: Samples) -> bool:
        now = self._clock()
        if samples.size == FRAME_SAMPLES and not self._partial.size:
            self._times.append(now)
            self._frames.append(samples)
        else:
            # Not one frame per message: re-cut into frames, each stamped when it completed.
            pending = np.concatenate((self._partial, samples))
            whole = pending.size // FRAME_SAMPLES * FRAME_SAMPLES
            for start in range(0, whole, FRAME_SAMPLES):
                self._times.append(now)
                self._frames.append(pending[start : start + FRAME_SAMPLES])
            self._partial = pending[whole:]
        self.received += 1
        return True

    def tick(self) -> tuple[Samples, list[str]]:
        return _SILENT, []

    def take(self) -> tuple[list[float], list[Samples]]:
        """Everything received since the last call."""
        times, frames = self._times, self._frames
        self._times, self._frames = [], []
        return times, frames
