"""One media stream of one leg, whatever the provider: the loop between a socket and the engine.

The provider endpoints accept the websocket and hand it here with their ``StreamCodec`` and a
way to find the leg from the stream's ``start`` (a leg token). From then on this module is
provider-neutral: it refuses a stream without a valid token or for a leg that already has one,
feeds media, DTMF and the stream's end to the runtime, and writes the engine's frames back in
order through one writer per stream. A stream that drops without ``stop`` leaves its leg a grace
period to reconnect before the leg is ended. Inbound media that arrives out of order (Telnyx does
not promise order) is put back in order by ``MediaOrder`` before the engine sees it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping

from adapters.leg_tokens import InvalidLegToken
from adapters.streams import (
    StreamCodec,
    StreamConnected,
    StreamDtmf,
    StreamError,
    StreamMark,
    StreamMedia,
    StreamProtocolError,
    StreamStart,
    StreamStop,
)
from adapters.transport import MediaSocket
from engine import events as ev
from engine.errors import NotFound
from engine.logs import get_logger
from engine.runtime import CallRuntime

log = get_logger("callbridge.media_session")

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
# Output beyond this many queued frames (one second) is latency nobody wants: drop the oldest.
MAX_QUEUED_FRAMES = 50

# A frame that overtakes another waits at most this many frames for the gap to fill.
REORDER_WINDOW = 2
# A counter this far behind the playout point is a restarted counter, not a late frame.
_COUNTER_RESTART = 50

LegFinder = Callable[[StreamStart], str]


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


class StreamOutput:
    """The engine's ``MediaOutput`` for one stream: frames queue here, one writer sends them."""

    def __init__(self, socket: MediaSocket, codec: StreamCodec, stream_id: str) -> None:
        self._socket = socket
        self._codec = codec
        self._stream_id = stream_id
        self._queue: deque[str] = deque()
        self._ready = asyncio.Event()
        self._closed = False
        self.sent = 0
        self.dropped = 0
        self._writer = asyncio.ensure_future(self._write())

    def send_frame(self, payload: bytes) -> None:
        if self._closed:
            return
        if len(self._queue) >= MAX_QUEUED_FRAMES:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(self._codec.render_media(self._stream_id, payload))
        self._ready.set()

    async def _write(self) -> None:
        while not self._closed:
            await self._ready.wait()
            self._ready.clear()
            while self._queue and not self._closed:
                try:
                    await self._socket.send_text(self._queue.popleft())
                except (ConnectionResetError, ConnectionError):
                    self._closed = True
                    return
                self.sent += 1

    async def close(self) -> None:
        self._closed = True
        self._ready.set()
        await asyncio.gather(self._writer, return_exceptions=True)


class StreamSessions:
    """Every live media stream of this process, one per leg."""

    def __init__(self, runtime: CallRuntime, *, grace_s: float = 5.0) -> None:
        self._runtime = runtime
        self.grace_s = grace_s
        self._active: dict[str, asyncio.Task[None] | None] = {}
        self._grace: dict[str, asyncio.TimerHandle] = {}
        self.refused = 0

    def has_stream(self, leg_id: str) -> bool:
        return leg_id in self._active

    async def serve(
        self,
        socket: MediaSocket,
        codec: StreamCodec,
        find_leg: LegFinder,
        *,
        context: Mapping[str, str] | None = None,
    ) -> None:
        """Run one stream to its end; every refusal is a close with a reason, and logged."""
        leg_id: str | None = None
        output: StreamOutput | None = None
        order = MediaOrder()
        stopped = False
        try:
            while True:
                raw = await socket.receive()
                if raw is None:
                    break
                message = codec.parse(raw)
                if isinstance(message, StreamStart):
                    if leg_id is not None:
                        raise StreamProtocolError("a second start on one stream")
                    leg_id = self._admit(message, find_leg)
                    output = StreamOutput(socket, codec, message.stream_id)
                    await self._runtime.media_started(leg_id, message.fmt, output)
                elif isinstance(message, StreamMedia):
                    if leg_id is None:
                        raise StreamProtocolError("media before start")
                    if message.track == "inbound":
                        counter = message.chunk if message.chunk is not None else message.sequence
                        for payload in order.push(counter, message.payload):
                            self._runtime.media_frame(leg_id, payload)
                elif isinstance(message, StreamDtmf):
                    if leg_id is not None:
                        await self._runtime.media_dtmf(leg_id, message.digit)
                elif isinstance(message, StreamStop):
                    stopped = True
                    break
                elif isinstance(message, StreamError):
                    log.warning(
                        "provider stream error",
                        leg_id=leg_id,
                        code=message.code,
                        title=message.title,
                        detail=message.detail,
                    )
                elif isinstance(message, StreamConnected | StreamMark):
                    continue
        except StreamProtocolError as exc:
            self.refused += leg_id is None
            log.warning(
                "media stream refused",
                leg_id=leg_id,
                reason=exc.reason,
                remote=socket.remote,
                **(context or {}),
            )
            await socket.close(exc.close_code, exc.reason)
        finally:
            if output is not None:
                await output.close()
            if leg_id is not None:
                await self._ended(leg_id, stopped)
        await socket.close(CLOSE_NORMAL, "stream ended")

    def _admit(self, start: StreamStart, find_leg: LegFinder) -> str:
        try:
            leg_id = find_leg(start)
        except InvalidLegToken as exc:
            raise StreamProtocolError(exc.reason, CLOSE_POLICY) from None
        try:
            leg = self._runtime.machine.leg(leg_id)
        except NotFound:
            raise StreamProtocolError("unknown leg", CLOSE_POLICY) from None
        if not leg.is_alive:
            raise StreamProtocolError("the leg has ended", CLOSE_POLICY)
        if leg_id in self._active:
            raise StreamProtocolError("the leg already has a media stream", CLOSE_POLICY)
        self._active[leg_id] = None
        handle = self._grace.pop(leg_id, None)
        if handle is not None:
            handle.cancel()
            log.info("media stream reconnected", leg_id=leg_id)
        return leg_id

    async def _ended(self, leg_id: str, stopped: bool) -> None:
        self._active.pop(leg_id, None)
        await self._runtime.media_stopped(leg_id)
        if stopped:
            return
        try:
            alive = self._runtime.machine.leg(leg_id).is_alive
        except NotFound:
            alive = False
        if alive:
            log.info(
                "media stream dropped; waiting for a reconnect",
                leg_id=leg_id,
                grace_s=self.grace_s,
            )
            loop = asyncio.get_running_loop()
            self._grace[leg_id] = loop.call_later(self.grace_s, self._give_up, leg_id)

    def _give_up(self, leg_id: str) -> None:
        self._grace.pop(leg_id, None)
        if leg_id in self._active:
            return
        log.warning("media stream did not come back; ending the leg", leg_id=leg_id)
        failed = ev.ProviderFailed(leg_id, "media", "media stream lost")
        task = asyncio.ensure_future(self._runtime.event(failed))
        task.add_done_callback(lambda t: t.exception())

    def close(self) -> None:
        for handle in self._grace.values():
            handle.cancel()
        self._grace.clear()
