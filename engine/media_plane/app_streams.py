"""The media side of application streams (``streaming_start``): each tick's audio of a leg to its
streams, and what the application sends back into the overlays of the stream's listeners.

A ``LiveStream`` is one open stream, made by the runtime (``engine.runtime.app_streams``) once
the application's websocket took the start frame, and handed to the media plane, which keeps
them here. Its leg is tapped in the mixer while it has a stream (or a recording): each tick
``feed`` gets what the leg said (``spoken``: Call Control's ``inbound`` track) and what it heard
(``heard``, after clipping, overlays included: the ``outbound`` track), at the mixer's rate, and
renders the stream's track(s) as media messages (``engine.media_plane.app_stream_wire``),
handed to ``send`` (the runtime's queue to the websocket: never blocking). A tick whose frame
the leg did not send carries silence, so the stream's timestamps stay those of real time.

Bidirectional streams play what the application sends (``receive``) through one ``Playout``
per listener, an overlay under the tag ``stream/<stream_id>`` pulled by the mixer one frame a
tick, in order, at real time (queued up to ``MAX_QUEUED_S``; more is dropped and counted). A
mark waits behind the audio sent before it and goes back to the application when that audio has
played (the first listener's playout judges it; a stream with no listener returns marks at
once); ``clear`` drops the queued audio and returns the marks waiting in it (Call Control's
media-streaming reference, PROTOCOLS.md 3.2-3.3).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Final

import numpy as np
from numpy.typing import NDArray

from engine.media_plane.app_stream_wire import AppClear, AppMark, AppMedia, AppMessage, StreamWire
from media.codecs import resample

__all__ = ["MAX_QUEUED_S", "AppStreams", "LiveStream", "Playout"]

#: Audio an application may have queued to play; beyond it, what it sends is dropped.
MAX_QUEUED_S: Final = 60
TRACKS: Final = {
    "inbound_track": ("inbound",),
    "outbound_track": ("outbound",),
    "both_tracks": ("inbound", "outbound"),
}


class Playout:
    """What an application sent back, played to one listener: a mixer overlay source."""

    __slots__ = ("_items", "_offset", "_on_mark", "dropped", "limit", "queued")

    def __init__(self, limit: int, on_mark: Callable[[str], None] | None) -> None:
        self._items: deque[NDArray[np.int16] | str] = deque()  # audio, or a mark's name
        self._offset = 0  # samples of the first item played already
        self._on_mark = on_mark
        self.limit = limit
        self.queued = 0
        self.dropped = 0  # samples refused for want of room

    def push(self, samples: NDArray[np.int16]) -> None:
        if self.queued + samples.size > self.limit:
            self.dropped += samples.size
            return
        self._items.append(samples)
        self.queued += samples.size

    def mark(self, name: str) -> None:
        if self._on_mark is None:
            return
        if self._items:
            self._items.append(name)
        else:
            self._on_mark(name)

    def clear(self) -> None:
        items, self._items = self._items, deque()
        self._offset = self.queued = 0
        for item in items:
            if isinstance(item, str) and self._on_mark is not None:
                self._on_mark(item)

    def __call__(self, n: int) -> NDArray[np.int16]:
        out = np.zeros(n, dtype=np.int16)
        filled = 0
        while self._items:
            item = self._items[0]
            if isinstance(item, str):
                self._items.popleft()
                if self._on_mark is not None:
                    self._on_mark(item)
                continue
            if filled == n:
                break
            take = min(n - filled, item.size - self._offset)
            out[filled : filled + take] = item[self._offset : self._offset + take]
            filled += take
            self._offset += take
            self.queued -= take
            if self._offset == item.size:
                self._items.popleft()
                self._offset = 0
        return out


class LiveStream:
    """One open application stream of leg ``leg_id``."""

    def __init__(
        self,
        leg_id: str,
        wire: StreamWire,
        track: str,
        send: Callable[[bytes], None],
        *,
        control: Callable[[bytes], None] | None = None,
        rate: int,
        listeners: tuple[str, ...] = (),
        played_rate: int = 8000,
    ) -> None:
        """``send`` takes media messages (it may drop them), ``control`` the others (marks; by
        default ``send``). ``rate``: the mixer's; ``played_rate``: that of the audio the
        application sends back (its bidirectional format's), played to ``listeners``."""
        self.leg_id = leg_id
        self.wire = wire
        self.tracks = TRACKS[track]
        self.send = send
        self.control = control if control is not None else send
        self.rate = rate
        self.played_rate = played_rate
        self.tag = f"stream/{wire.stream_id}"
        limit = MAX_QUEUED_S * rate
        self.playouts = {
            listener: Playout(limit, self._marked if i == 0 else None)
            for i, listener in enumerate(listeners)
        }

    @property
    def stream_id(self) -> str:
        return self.wire.stream_id

    def _marked(self, name: str) -> None:
        self.control(self.wire.mark(name))

    def feed(self, heard: NDArray[np.int16], spoken: NDArray[np.int16]) -> None:
        for track in self.tracks:
            samples = spoken if track == "inbound" else heard
            if self.rate != self.wire.fmt.sample_rate:
                samples = resample(samples, self.rate, self.wire.fmt.sample_rate)
            self.send(self.wire.media(track, samples))

    def receive(self, message: AppMessage) -> None:
        """A message the application sent (parsed against the bidirectional format)."""
        if isinstance(message, AppMedia):
            samples = message.samples
            if self.played_rate != self.rate:
                samples = resample(samples, self.played_rate, self.rate)
            for playout in self.playouts.values():
                playout.push(samples)
        elif isinstance(message, AppMark):
            if not self.playouts:
                self._marked(message.name)  # nothing can be playing
            for playout in self.playouts.values():
                playout.mark(message.name)
        elif isinstance(message, AppClear):
            for playout in self.playouts.values():
                playout.clear()


class AppStreams:
    """The open application streams of one media plane, by leg and stream id."""

    def __init__(self) -> None:
        self._legs: dict[str, dict[str, LiveStream]] = {}

    def add(self, stream: LiveStream) -> None:
        self._legs.setdefault(stream.leg_id, {})[stream.stream_id] = stream

    def remove(self, leg_id: str, stream_id: str) -> LiveStream | None:
        streams = self._legs.get(leg_id)
        stream = streams.pop(stream_id, None) if streams is not None else None
        if streams is not None and not streams:
            del self._legs[leg_id]
        return stream

    def tapped(self, leg_id: str) -> bool:
        """Whether the leg's audio goes to a stream (the mixer taps it)."""
        return leg_id in self._legs

    def feed(self, leg_id: str, heard: NDArray[np.int16], spoken: NDArray[np.int16]) -> None:
        streams = self._legs.get(leg_id)
        if streams is not None:
            for stream in tuple(streams.values()):
                stream.feed(heard, spoken)

    def playouts(self, listener: str) -> Iterator[tuple[str, Playout]]:
        """(tag, source) of every stream's playout to ``listener``: started again when its
        media attaches."""
        for streams in self._legs.values():
            for stream in streams.values():
                playout = stream.playouts.get(listener)
                if playout is not None:
                    yield stream.tag, playout
