"""Per-leg input jitter buffer: frames in by sequence number, one frame out per 20 ms tick.

Telnyx does not guarantee media order and both providers deliver frames in bursts, while the mixer
takes exactly one frame per leg per tick. ``JitterBuffer`` sits between them:

- **Playout.** Nothing plays until ``prefill`` frames (default ``depth``) are buffered; from then on
  each ``pop`` plays the next sequence number. If that number is missing but later frames are
  here, it is passed over (``skipped``: lost, or a number the provider spent on a non-media
  message) and the next buffered frame plays, so a gap in the numbering never costs a silent tick.
- **Underrun.** A ``pop`` that finds the buffer empty returns ``None`` (play silence) and counts
  ``starved``; playout then waits for ``prefill`` frames again, rebuilding the cushion that the
  stall used up. The playout point is kept, so frames behind it stay late.
- **Bounds.** At most ``capacity`` frames are held (default ``3 * depth``); overflow drops the
  oldest, which caps the latency a burst can add.
- **Restarts.** A frame more than ``restart_window`` numbers behind the newest one seen is the
  start of a new stream (a reconnect restarts the counter): the old frames are dropped and the
  buffer starts over with it. A frame behind the playout point but within the window is ``late``.

Accounting: every pushed frame ends up exactly once in ``played``, ``late``, ``duplicate``,
``dropped`` or the buffer (``len``). ``reordered`` (arrived after a higher number, in time) and
``skipped`` describe frames already counted elsewhere or never received. Ticks spent in the first
prefill of a stream are not ``starved``: the cushion is being built, nothing was missed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(slots=True)
class JitterStats:
    received: int = 0
    played: int = 0
    late: int = 0
    duplicate: int = 0
    dropped: int = 0
    reordered: int = 0
    starved: int = 0
    skipped: int = 0


class JitterBuffer:
    """Reorders one leg's frames by sequence number and releases one per tick; see the module."""

    def __init__(
        self,
        depth: int = 3,
        *,
        prefill: int | None = None,
        capacity: int | None = None,
        restart_window: int = 50,
    ) -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, not {depth}")
        self.depth = depth
        self.prefill = depth if prefill is None else prefill
        self.capacity = 3 * max(depth, self.prefill) if capacity is None else capacity
        if not 1 <= self.prefill <= self.capacity:
            raise ValueError(
                f"need 1 <= prefill <= capacity, got prefill={self.prefill}"
                f" capacity={self.capacity}"
            )
        if restart_window < 1:
            raise ValueError(f"restart_window must be at least 1, not {restart_window}")
        self.restart_window = restart_window
        self._stats = JitterStats()
        self._frames: dict[int, bytes] = {}
        # Next sequence number to play; None until the current stream first starts playing.
        self._next: int | None = None
        self._newest: int | None = None
        self._playing = False

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def stats(self) -> JitterStats:
        """A snapshot of the counters, which run across ``reset`` and stream restarts."""
        return dataclasses.replace(self._stats)

    def reset(self) -> None:
        """Forget the current stream (its buffered frames count as dropped); keep the counters."""
        self._stats.dropped += len(self._frames)
        self._frames.clear()
        self._next = None
        self._newest = None
        self._playing = False

    def push(self, seq: int, payload: bytes) -> None:
        stats = self._stats
        stats.received += 1
        newest = self._newest
        if newest is not None and newest - seq > self.restart_window:
            self.reset()
            newest = None
        if self._next is not None and seq < self._next:
            stats.late += 1
            return
        frames = self._frames
        if seq in frames:
            stats.duplicate += 1
            return
        if newest is not None and seq < newest:
            stats.reordered += 1
        else:
            self._newest = seq
        frames[seq] = payload
        if len(frames) > self.capacity:
            self._drop_oldest()
        if not self._playing and len(frames) >= self.prefill:
            self._playing = True
            if self._next is None:
                self._next = min(frames)

    def pop(self) -> bytes | None:
        """The frame for this tick, or None for silence."""
        nxt = self._next
        if not self._playing or nxt is None:
            if nxt is not None:
                self._stats.starved += 1
            return None
        frames = self._frames
        payload = frames.pop(nxt, None)
        if payload is None:
            if not frames:
                self._playing = False
                self._stats.starved += 1
                return None
            seq = min(frames)
            self._stats.skipped += seq - nxt
            payload = frames.pop(seq)
            nxt = seq
        self._next = nxt + 1
        self._stats.played += 1
        return payload

    def _drop_oldest(self) -> None:
        oldest = min(self._frames)
        del self._frames[oldest]
        self._stats.dropped += 1
        if self._next is not None and oldest >= self._next:
            # The numbers before the dropped frame never arrived; playout moves past them all.
            self._stats.skipped += oldest - self._next
            self._next = oldest + 1
