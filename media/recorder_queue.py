"""The queue between a recorder's caller (the media tick) and its writer thread.

It is bounded and watched, so that a stalled disk is noticed without the caller ever waiting:
the writer is *behind* when frames have waited ``stall_after_s`` with none taken, or when the
queue holds ``max_frames``. The caller asks before each frame (``behind``); the writer counts
what it takes (``took_frame``). Neither side holds a lock: the counters are single ints, each
written by one thread. ``Item`` is what the caller puts on it: a frame or an order.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
from numpy.typing import NDArray

__all__ = ["MAX_QUEUED_FRAMES", "STALL_AFTER_S", "Close", "Flush", "Gap", "Item", "WriterQueue"]

T = TypeVar("T")

#: A writer that has taken no frame for this long while frames wait is stuck on a stalled disk.
#: It takes frames as they come and writes about once a second, so the queue is normally near
#: empty; a disk that has not taken a second's audio in 5 s (a device saturated for that long, a
#: hung network mount) is stalled, and holding more would only grow memory for audio that may
#: never land. At the media tick's pace (one frame per 20 ms) this caps the queue at 250 frames.
STALL_AFTER_S = 5.0
#: The queue's hard bound, for callers faster than real time (a test, a file fed in bulk), whose
#: frames may run ahead of a working writer: 60 s of 20 ms frames (about 3 MB at 8 kHz).
MAX_QUEUED_FRAMES = 3000


@dataclass(frozen=True, slots=True)
class Flush:
    """Write what is pending, then set ``done``."""

    done: threading.Event


@dataclass(frozen=True, slots=True)
class Close:
    """Finish the file (trimmed unless only suspended) and stop the writer."""

    trim: bool


@dataclass(frozen=True, slots=True)
class Gap:
    """This many samples of silence: the time a resumed recording was not recorded."""

    samples: int


#: A frame of each direction (spoken, heard), or an order for the writer.
Item = tuple[NDArray[np.int16], NDArray[np.int16]] | Flush | Close | Gap


class WriterQueue(Generic[T]):
    def __init__(
        self,
        *,
        stall_after_s: float = STALL_AFTER_S,
        max_frames: int = MAX_QUEUED_FRAMES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if stall_after_s <= 0 or max_frames < 1:
            raise ValueError("stall_after_s must be > 0 and max_frames >= 1")
        self.stall_after_s = stall_after_s
        self.max_frames = max_frames
        self._clock = clock
        self._queue: queue.SimpleQueue[T] = queue.SimpleQueue()
        self._taken = 0  # writer side: frames taken so far
        self._taken_seen = 0  # caller side: ``_taken`` when it was last seen to move
        self._progress_at = clock()  # caller side: when that was

    def __len__(self) -> int:
        return self._queue.qsize()

    def put(self, item: T) -> None:
        """Never blocks (the bound is the caller's to respect, through ``behind``)."""
        self._queue.put(item)

    def get(self, timeout: float | None) -> T:
        """Writer side: the next item; ``queue.Empty`` after ``timeout`` seconds."""
        return self._queue.get(timeout=timeout)

    def took_frame(self) -> None:
        """Writer side: one frame taken off the queue."""
        self._taken += 1

    def behind(self) -> str | None:
        """Caller side: why the writer is too far behind to be given another frame; None when
        it is keeping up."""
        waiting = len(self)
        now = self._clock()
        if waiting >= self.max_frames:
            return f"{waiting} frames wait for the disk"
        if waiting == 0 or self._taken != self._taken_seen:
            self._taken_seen, self._progress_at = self._taken, now
            return None
        if now - self._progress_at >= self.stall_after_s:
            return f"the disk has taken no frame for {now - self._progress_at:.1f} s"
        return None
