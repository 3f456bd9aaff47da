"""Putting one stream's inbound media back in order (Telnyx does not promise order)."""

from __future__ import annotations

__all__ = ["REORDER_WINDOW", "MediaOrder"]

# A frame that overtakes another waits at most this many frames for the gap to fill.
REORDER_WINDOW = 2
# A counter this far behind the playout point is a restarted counter, not a late frame.
_COUNTER_RESTART = 50


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
    """

    __slots__ = ("_held", "_next", "_reorders", "_window", "late")

    def __init__(self, window: int = REORDER_WINDOW) -> None:
        self._window = window
        self._next: int | None = None
        self._held: dict[int, bytes] = {}
        self._reorders = False
        self.late = 0

    def push(self, counter: int | None, payload: bytes) -> list[bytes]:
        """The frames to play now, in order (often just this one, sometimes none)."""
        nxt = self._next
        if counter is None:
            return [payload]
        if nxt is not None and counter < nxt:
            if nxt - counter <= _COUNTER_RESTART:
                self.late += 1
                self._reorders = True
                return []
            self._held.clear()
            nxt = None
        if counter in self._held:
            return []
        if nxt is None or counter == nxt or not self._reorders:
            self._next = counter + 1
            return [payload, *self._drain()] if self._held else [payload]
        self._held[counter] = payload
        if len(self._held) <= self._window:
            return []
        self._next = min(self._held)
        return self._drain()

    def _drain(self) -> list[bytes]:
        out: list[bytes] = []
        nxt = self._next
        assert nxt is not None
        while (payload := self._held.pop(nxt, None)) is not None:
            out.append(payload)
            nxt += 1
        self._next = nxt
        return out
