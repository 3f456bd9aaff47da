"""Putting one stream's inbound media back in order (Telnyx does not promise order)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["REORDER_WINDOW", "Counts", "MediaOrder", "OrderCounts"]

# A frame that overtakes another waits at most this many frames for the gap to fill.
REORDER_WINDOW = 2
# A counter this far behind the playout point is a restarted counter, not a late frame.
_COUNTER_RESTART = 50


class OrderCounts(Protocol):
    """Where a reorder window counts what it sees (``engine.media_plane.stats.LegMediaStats``)."""

    late: int
    reordered: int
    lost: int


@dataclass(slots=True)
class Counts:
    """Counts of a window not (yet) bound to a leg."""

    late: int = 0
    reordered: int = 0
    lost: int = 0


class MediaOrder:
    """Puts one stream's inbound media back in counter order without delaying an ordered stream.

    The counter is the media's own (``chunk``) when the provider sends one, else the message's
    ``sequence`` (which also counts marks and DTMF, so a gap alone proves nothing). Until a frame
    arrives behind one already released, every frame passes straight through, gaps included: a
    stream in order (Twilio's, on one TCP connection) is never held. From the first late frame on,
    the stream is known to reorder, and a frame after a gap waits for the gap to fill, at most
    ``window`` frames, after which the gap counts as lost. A frame behind the playout point
    (``late``) or seen already is dropped. This is a push-side reorder window, not a jitter
    buffer: the mixer's own input queue absorbs bursts, and released frames go to it at once.

    It counts what it sees into ``counts`` (the leg's media statistics once the stream is
    bound): ``late`` frames dropped, ``reordered`` frames held behind a gap and then released in
    order, and ``lost`` counter values passed over with no frame, counted only while
    ``count_gaps`` (the counter is the media's own ``chunk``: a ``sequence`` also counts other
    messages, so its gaps prove nothing).
    """

    __slots__ = ("_held", "_next", "_reorders", "_window", "count_gaps", "counts")

    def __init__(self, window: int = REORDER_WINDOW, counts: OrderCounts | None = None) -> None:
        self._window = window
        self._next: int | None = None
        self._held: dict[int, bytes] = {}
        self._reorders = False
        self.counts: OrderCounts = counts if counts is not None else Counts()
        self.count_gaps = True

    def push(self, counter: int | None, payload: bytes) -> tuple[bytes, ...] | list[bytes]:
        """The frames to play now, in order (often just this one, sometimes none)."""
        nxt = self._next
        if counter is None:
            return (payload,)
        if counter == nxt and not self._held:  # the usual frame: the next, nothing held
            self._next = counter + 1
            return (payload,)
        if nxt is not None and counter < nxt:
            if nxt - counter <= _COUNTER_RESTART:
                self.counts.late += 1
                self._reorders = True
                return []
            self._held.clear()
            nxt = None
        if counter in self._held:
            return []
        if nxt is None or counter == nxt or not self._reorders:
            if nxt is not None and counter > nxt and self.count_gaps:
                self.counts.lost += counter - nxt
            self._next = counter + 1
            return [payload, *self._drain()] if self._held else [payload]
        self._held[counter] = payload
        if len(self._held) <= self._window:
            return []
        first = min(self._held)
        if self.count_gaps:
            self.counts.lost += first - nxt
        self._next = first
        return self._drain()

    def _drain(self) -> list[bytes]:
        out: list[bytes] = []
        nxt = self._next
        assert nxt is not None
        while (payload := self._held.pop(nxt, None)) is not None:
            out.append(payload)
            nxt += 1
        self._next = nxt
        self.counts.reordered += len(out)
        return out
