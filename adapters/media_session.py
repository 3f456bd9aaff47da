"""One media stream of one leg, whatever the provider: the loop between a socket and the engine.

The provider endpoints accept the websocket and hand it here with their ``StreamCodec`` and a
way to find the leg from the stream's ``start`` (a leg token). From then on this module is
provider-neutral: it refuses a stream without a valid token or for a leg that already has one,
feeds media, DTMF and the stream's end to the runtime, and writes the engine's frames back in
order through one writer per stream. The ``start`` frame's announced format is judged once the
stream is bound to its leg (``media.inbound``): G.722 is decoded here, at the edge; a codec
callbridge cannot decode is reported to the machine, which asks for a new stream or ends the leg.
When a stream ends, clean or not, the machine decides what the leg does next
(``engine/machine_streams.py``: wait for a reconnect, ask for a new stream, or hang up).
Inbound media that arrives out of order (Telnyx does not promise order) is put back in order by
``MediaOrder`` before the engine sees it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping

from adapters.leg_tokens import InvalidLegToken
from adapters.stream_drops import FrameDrops
from adapters.streams import (
    CLOSE_UNSUPPORTED_DATA,
    BadFrame,
    StreamCodec,
    StreamConnected,
    StreamDtmf,
    StreamError,
    StreamMark,
    StreamMedia,
    StreamProtocolError,
    StreamStart,
    StreamStop,
    StreamUnknown,
)
from adapters.transport import MediaSocket
from engine.errors import NotFound
from engine.logs import get_logger
from engine.metrics import Metrics
from engine.runtime import CallRuntime
from media.errors import UnsupportedEncoding
from media.inbound import InboundDecoder, inbound_decoder

log = get_logger("callbridge.media_session")

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_GOING_AWAY = 1001  # RFC 6455: the server is going down
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

    def __init__(
        self,
        runtime: CallRuntime,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._runtime = runtime
        self._dropped_frames = metrics.media_frames_dropped
        # Times the flood window and the rate limit of drop warnings; injectable for tests.
        self._clock = clock
        self._active: dict[str, asyncio.Task[None] | None] = {}
        self._sockets: set[MediaSocket] = set()
        self.refused = 0

    async def close_all(self) -> None:
        """The process is stopping: close every media socket now rather than let the server
        wait out its shutdown timeout for them. Each stream then ends as a dropped one (the
        machine stores that its media stopped); the next process asks for new streams."""
        sockets = list(self._sockets)
        await asyncio.gather(
            *(s.close(CLOSE_GOING_AWAY, "callbridge is restarting") for s in sockets),
            return_exceptions=True,
        )
        if sockets:
            log.info("media streams closed for shutdown", streams=len(sockets))

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
        self._sockets.add(socket)  # until it ends: close_all may close it first
        leg_id: str | None = None
        output: StreamOutput | None = None
        convert: Callable[[bytes], bytes] | None = None
        order = MediaOrder()
        stopped = False
        drops = FrameDrops(
            codec.provider,
            self._dropped_frames,
            self._clock,
            {**(context or {}), "remote": socket.remote},
        )
        try:
            while True:
                raw = await socket.receive()
                if raw is None:
                    break
                try:
                    message = codec.parse(raw)
                except BadFrame as exc:
                    # A bad start stays fatal: without its identity the stream has no leg.
                    if exc.event == "start" and leg_id is None:
                        raise
                    drops.drop(exc.kind, exc.reason, leg_id)  # raises once it is a flood
                    continue
                if isinstance(message, StreamStart):
                    if leg_id is not None:
                        drops.drop("repeated_start", "a second start on one stream", leg_id)
                        continue
                    leg_id = self._admit(message, find_leg)
                    decoder = await self._decoder(leg_id, message)
                    if decoder is None:
                        leg_id = None  # refused: the machine retries the stream or ends the leg
                        raise StreamProtocolError(
                            f"cannot decode {message.fmt.label()}", CLOSE_UNSUPPORTED_DATA
                        )
                    convert = decoder.convert
                    output = StreamOutput(socket, codec, message.stream_id)
                    await self._runtime.media_started(
                        leg_id,
                        decoder.mixer_format,
                        output,
                        out_fmt=codec.outbound,
                        label=message.fmt.label(),
                    )
                elif isinstance(message, StreamMedia):
                    if leg_id is None:
                        drops.drop("before_start", "media before start", leg_id)
                        continue
                    if message.track == "inbound":
                        counter = message.chunk if message.chunk is not None else message.sequence
                        for payload in order.push(counter, message.payload):
                            self._runtime.media_frame(
                                leg_id, payload if convert is None else convert(payload)
                            )
                elif isinstance(message, StreamDtmf):
                    if leg_id is not None:
                        await self._runtime.media_dtmf(leg_id, message.digit)
                elif isinstance(message, StreamStop):
                    stopped = True
                    break
                elif isinstance(message, StreamError):
                    drops.provider_error(message, leg_id)
                elif isinstance(message, StreamUnknown):
                    drops.unknown(message.event, leg_id)
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
            # Shielded: a server that cancels handlers when the peer's TCP goes away (aiohttp's
            # handler_cancellation, on in its TestServer) would otherwise skip _ended and leave
            # the leg holding a stream that is gone.
            self._sockets.discard(socket)
            await asyncio.shield(self._close_stream(output, leg_id, stopped))
        await socket.close(CLOSE_NORMAL, "stream ended")

    async def _close_stream(
        self, output: StreamOutput | None, leg_id: str | None, stopped: bool
    ) -> None:
        if output is not None:
            await output.close()
        if leg_id is not None:
            await self._ended(leg_id, stopped)

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
        return leg_id

    async def _decoder(self, leg_id: str, start: StreamStart) -> InboundDecoder | None:
        """How to take the stream's announced format; None (and the machine told) if we cannot.

        Judged only now that the stream is bound to its leg, so a codec callbridge cannot decode
        (Telnyx streams OPUS or AMR-WB calls in their own codec) retries or ends that leg rather
        than leaving it answered and silent.
        """
        try:
            return inbound_decoder(start.fmt)
        except UnsupportedEncoding as exc:
            self._active.pop(leg_id, None)
            log.warning("media stream codec refused", leg_id=leg_id, reason=str(exc))
            await self._runtime.media_failed(leg_id, "unsupported_codec", str(exc))
            return None

    async def _ended(self, leg_id: str, stopped: bool) -> None:
        """The stream is over. Whether the leg waits for another, asks for one or ends is the
        machine's decision (``engine/machine_streams.py``), clean ``stop`` or not."""
        self._active.pop(leg_id, None)
        if not stopped:
            log.info("media stream dropped without stop", leg_id=leg_id)
        await self._runtime.media_stopped(leg_id)
