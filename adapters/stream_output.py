"""The one output policy of every media stream: the engine's frames onto a websocket.

Every stream callbridge writes audio to (a provider's stream on the API port over aiohttp, on
the media port over picows, a websocket agent over ``websockets``) goes through ``FrameWriter``:

- a frame is rendered once, when it goes on the wire, and written at once, from whoever called
  ``send_frame`` (the tick, or a forwarding ``put_frame``): no task woken per frame;
- only while the transport is back-pressured do frames wait, at most ``MAX_QUEUED_FRAMES`` (one
  second); past that the oldest is dropped and counted (``stats.output_dropped``);
- control messages (a websocket agent's mark echoes and key presses) go ahead of waiting audio,
  after control sent before them, so a stream's message counter follows the wire order;
- ``flush`` (the leg left its room) drops the audio waiting here and, on a provider's stream,
  sends the provider its ``clear`` (``clear``: Twilio's and Telnyx's message that stops playback
  and drops the media the provider has queued), so nothing of the old room is heard after it;
- every frame written counts (``stats.frames_out``); once the connection is lost nothing more
  is written or counted; ``close`` drops what waits; ``end_with`` makes one message (an agent's
  ``stop``) the last, ahead of waiting audio, and ``flushed`` waits for it to be written.

The seam: a transport supplies
- ``write(message)``: put one text message on the wire now, synchronously; return True when the
  transport is back-pressured after it (else False or None); raise ``ConnectionError`` once the
  connection is gone;
- and one way to learn it drained: ``drained``, an awaitable that returns once the transport
  takes data again (the writer awaits it in a single task, started only while back-pressured),
  or ``None`` when the transport calls ``resume`` itself (picows' ``resume_writing``).
A transport that hears of back-pressure or loss by callback calls ``pause`` and ``lost``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final, Generic, TypeVar

from engine.media_plane.stats import LegMediaStats

__all__ = ["MAX_QUEUED_FRAMES", "FrameWriter", "WriteNow"]

# Output beyond this many queued frames (one second) is latency nobody wants: drop the oldest.
MAX_QUEUED_FRAMES: Final = 50

#: One text message onto the wire now; True when the transport is back-pressured after it.
WriteNow = Callable[[bytes], bool | None]

Frame = TypeVar("Frame")


class FrameWriter(Generic[Frame]):
    """The engine's ``MediaOutput`` for one stream (see the module docstring). ``Frame`` is what
    ``send_frame`` takes and ``render`` turns into the message: the payload, or for a stream that
    stamps its frames when they are sent, the payload with its stamp."""

    __slots__ = (
        "_clear",
        "_control",
        "_drain",
        "_drained",
        "_final",
        "_held",
        "_holding",
        "_open",
        "_render",
        "_write",
        "stats",
    )

    def __init__(
        self,
        write: WriteNow,
        render: Callable[[Frame], bytes],
        stats: LegMediaStats,
        *,
        drained: Callable[[], Awaitable[None]] | None = None,
        clear: bytes | None = None,
    ) -> None:
        self._write = write
        self._clear = clear  # the far end's "drop what you have queued", if it has one
        self._render = render
        self.stats = stats
        self._drained = drained
        self._held: deque[Frame] = deque()  # audio waiting for the transport
        self._control: deque[bytes] = deque()  # rendered control messages, ahead of the audio
        # Back-pressured or no longer open: the one flag the per-frame path reads.
        self._holding = False
        self._open = True
        self._final = False  # the last message is queued: close once it is written
        self._drain: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        """Frames waiting for the transport."""
        return len(self._held)

    # -- the engine's side -------------------------------------------------------------------
    def send_frame(self, frame: Frame) -> None:
        if self._holding:
            self._hold(frame)
            return
        try:
            back_pressured = self._write(self._render(frame))
        except ConnectionError:
            self.lost()
            return
        self.stats.frames_out += 1
        if back_pressured:
            self.pause()

    def send_control(self, message: bytes) -> None:
        """A control message: ahead of any waiting audio, after control sent before it."""
        if self._holding:
            if self._open and not self._final:
                self._control.append(message)
            return
        self._write_control(message)

    def flush(self) -> None:
        """What was sent for the room the leg has left must not be heard after it: drop the
        audio waiting here (not counted as dropped: it is stale, not lost) and tell the far end
        to drop what it has queued (``clear``), ahead of the audio that follows."""
        self._held.clear()
        if self._clear is not None:
            self.send_control(self._clear)

    def _hold(self, frame: Frame) -> None:
        if not self._open or self._final:
            return
        held = self._held
        if len(held) >= MAX_QUEUED_FRAMES:
            held.popleft()
            self.stats.output_dropped += 1
        held.append(frame)

    def _write_control(self, message: bytes) -> None:
        try:
            back_pressured = self._write(message)
        except ConnectionError:
            self.lost()
            return
        if back_pressured:
            self.pause()

    # -- the transport's side ----------------------------------------------------------------
    def pause(self) -> None:
        """The transport is back-pressured: frames wait from now on."""
        if not self._open:
            return
        self._holding = True
        if self._drained is not None and self._drain is None:
            self._drain = asyncio.ensure_future(self._wait_drained(self._drained))

    def resume(self) -> None:
        """The transport takes data again: what waited goes first, control before audio, each
        in order, until the transport is back-pressured again."""
        if not self._open:
            return
        self._holding = False
        control, held, stats = self._control, self._held, self.stats
        while control and not self._holding:
            self._write_control(control.popleft())
        while held and not self._holding:
            try:
                back_pressured = self._write(self._render(held.popleft()))
            except ConnectionError:
                self.lost()
                return
            stats.frames_out += 1
            if back_pressured:
                self.pause()
        if self._final and not self._holding:
            self._shut()

    def lost(self) -> None:
        """The connection is gone: nothing more is written or counted."""
        self._shut()

    async def _wait_drained(self, drained: Callable[[], Awaitable[None]]) -> None:
        try:
            while self._open and self._holding:
                try:
                    await drained()
                except ConnectionError:
                    self.lost()
                    return
                self.resume()
        finally:
            self._drain = None

    # -- the end -----------------------------------------------------------------------------
    def _shut(self) -> None:
        self._open = False
        self._holding = True
        self._held.clear()
        self._control.clear()

    async def close(self) -> None:
        """Stop now: what waits is dropped (not counted as dropped), nothing more is written."""
        self._shut()
        await self._stop_draining()

    def end_with(self, last: bytes) -> None:
        """``last`` is the stream's last message: ahead of waiting audio (which is dropped, not
        counted), after waiting control; nothing is written after it. ``flushed`` waits for it
        while the transport is back-pressured."""
        if not self._open or self._final:
            return
        if not self._holding:
            self._write_control(last)
            self._shut()
            return
        self._final = True
        self._held.clear()
        self._control.append(last)

    async def flushed(self) -> None:
        """Return once nothing waits for the transport (bound it with ``asyncio.timeout``)."""
        drain = self._drain
        if drain is not None:
            await asyncio.shield(drain)

    async def _stop_draining(self) -> None:
        drain = self._drain
        if drain is not None and drain is not asyncio.current_task():
            drain.cancel()
            await asyncio.gather(drain, return_exceptions=True)
