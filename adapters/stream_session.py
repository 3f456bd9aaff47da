"""One media stream of one leg, whatever the provider and whatever the websocket server.

A server (aiohttp's on the API port, picows' on the media port: ``adapters/picows_media.py``)
hands every message it reads to ``StreamSession.feed`` and calls ``finish`` once the socket is
gone. ``feed`` never awaits: a media frame goes from the socket to the mixer (and, forwarded,
to the peer's socket) in one synchronous call, with no task woken per frame. The few messages
that need the engine's lock (``start``: bind the leg; ``dtmf``) run as one task, and messages
that arrive meanwhile wait behind it in arrival order (``_backlog``), so nothing overtakes a
``start`` and nothing is lost.

The rules are the ones the stream always had: it is refused (closed with a code and a reason)
without a valid token or for a leg that already has one; the ``start`` frame's announced format
is judged once the stream is bound to its leg (``media.inbound``; G.722 decoded here, at the
edge); a codec callbridge cannot decode is reported to the machine, which asks for a new stream
or ends the leg. Unusable frames are dropped and counted (``adapters/stream_drops.py``); a flood
of them closes the stream. When a stream ends, clean or not, the machine decides what the leg
does next (``engine/machine/streams.py``). Inbound media that arrives out of order (Telnyx does
not promise order) is put back in order by ``MediaOrder`` before the engine sees it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Protocol

from adapters.leg_tokens import InvalidLegToken
from adapters.media_order import MediaOrder
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
    StreamMessage,
    StreamProtocolError,
    StreamStart,
    StreamStop,
    StreamUnknown,
)
from engine.errors import NotFound
from engine.logs import get_logger
from engine.media_plane.stats import LegMediaStats
from engine.runtime.runtime import CallRuntime
from media.errors import UnsupportedEncoding
from media.inbound import InboundDecoder, inbound_decoder
from media.room_errors import UnknownLeg

__all__ = [
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "MAX_BACKLOG",
    "BindingFactory",
    "LegFinder",
    "MediaBinding",
    "OutputFactory",
    "StreamOutput",
    "StreamSession",
    "Streams",
]

log = get_logger("callbridge.media_session")

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_INTERNAL_ERROR = 1011  # RFC 6455: the server met a condition it cannot handle
#: Messages that may wait behind a ``start`` or ``dtmf`` being handled: five seconds of media,
#: for an engine busy setting up a burst of calls (a provider streams at once after ``start``).
#: Beyond that the oldest are dropped and counted (never a flood: the provider is not at fault).
MAX_BACKLOG = 250

#: (the ``start`` frame, the token the ``connected`` frame carried if any) -> the leg's id.
LegFinder = Callable[[StreamStart, str | None], str]
#: What a provider needs to take a stream: its codec, how the ``start`` finds the leg, and the
#: context for logs; made from the upgrade request's query and headers (``media_binding``).
MediaBinding = tuple[StreamCodec, LegFinder, dict[str, str]]
BindingFactory = Callable[[Mapping[str, str], Mapping[str, str]], MediaBinding]
Step = Coroutine[Any, Any, None]


class StreamOutput(Protocol):
    """The engine's ``MediaOutput`` for one stream, as a server makes it; it counts what it
    sends and drops in the leg's statistics."""

    def send_frame(self, payload: bytes) -> None: ...

    @property
    def queued(self) -> int:
        """Frames waiting for the socket."""
        ...

    async def close(self) -> None: ...


#: Makes the stream's output once its ``start`` names the stream:
#: (codec, stream id, the leg's statistics) -> output.
OutputFactory = Callable[[StreamCodec, str, LegMediaStats], StreamOutput]


class Streams(Protocol):
    """What a session needs from the registry of this process's streams."""

    def claim(self, leg_id: str) -> bool:
        """Take the leg for this stream; False if another stream has it."""
        ...

    def release(self, leg_id: str) -> None: ...


class StreamSession:
    """The state of one stream: see the module docstring. ``close`` closes the socket (code,
    reason) and must not raise; ``remote`` and ``context`` are for logs."""

    def __init__(
        self,
        *,
        runtime: CallRuntime,
        streams: Streams,
        codec: StreamCodec,
        find_leg: LegFinder,
        drops: FrameDrops,
        make_output: OutputFactory,
        close: Callable[[int, str], Awaitable[None]],
        context: dict[str, str],
    ) -> None:
        self._runtime = runtime
        self._streams = streams
        self._codec = codec
        self._find_leg = find_leg
        self._drops = drops
        self._make_output = make_output
        self._close = close
        self._context = context
        self._order = MediaOrder()
        self._stats: LegMediaStats | None = None  # the leg's, once the stream is bound
        self._bytes_per_s = 8000.0  # of the stream's payloads, as announced (``_start``)
        self._monotonic = time.monotonic
        self._convert: Callable[[bytes], bytes] | None = None
        self._frame_in = runtime.plane.frame_in  # bound once: called for every frame
        self._connected_token: str | None = None  # what the ``connected`` frame carried
        self._backlog: deque[str | bytes] | None = None  # while a step runs
        self._step: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None  # the close this session asked for
        self.leg_id: str | None = None
        self.output: StreamOutput | None = None
        self.stopped = False  # the provider sent ``stop``
        self.over = False  # stopped or refused: nothing more is read
        self.refused = False  # closed before it was bound to a leg

    # -- the server's side ---------------------------------------------------------------------
    def feed(self, raw: str | bytes) -> None:
        """One message read from the socket; never awaits, never raises."""
        if self.over:
            return
        backlog = self._backlog
        if backlog is not None:
            if len(backlog) >= MAX_BACKLOG:
                backlog.popleft()
                self._drops.waited_too_long(self.leg_id)
            backlog.append(raw)
            return
        try:
            step = self._handle(raw)
        except StreamProtocolError as exc:
            self._refuse(exc)
            return
        if step is not None:
            self._backlog = deque()
            self._step = asyncio.ensure_future(self._run(step))

    async def finish(self) -> None:
        """The socket is gone: end the stream (after any step still running)."""
        self.over = True
        if self._step is not None:
            await asyncio.gather(self._step, return_exceptions=True)
        if self._closing is not None:  # before whoever serves closes it its own way
            await asyncio.gather(self._closing, return_exceptions=True)
        if self.output is not None:
            await self.output.close()
        if self.leg_id is not None:
            leg_id, self.leg_id = self.leg_id, None
            self._streams.release(leg_id)
            if not self.stopped:
                log.info("media stream dropped without stop", leg_id=leg_id)
            await self._runtime.media_stopped(leg_id)

    # -- messages --------------------------------------------------------------------------------
    def _handle(self, raw: str | bytes) -> Step | None:
        """Act on one message; a step to await when it needs the engine's lock."""
        try:
            message = self._codec.parse(raw)
        except BadFrame as exc:
            # A bad start stays fatal: without its identity the stream has no leg.
            if exc.event == "start" and self.leg_id is None:
                raise
            self._drops.drop(exc.kind, exc.reason, self.leg_id)  # raises once it is a flood
            return None
        if isinstance(message, StreamMedia):
            self._media(message)
            return None
        return self._other(message)

    def _media(self, message: StreamMedia) -> None:
        leg_id, stats = self.leg_id, self._stats
        if leg_id is None or stats is None:
            self._drops.drop("before_start", "media before start", leg_id)
            return
        if message.track != "inbound":
            return
        payload = message.payload
        stats.arrived(self._monotonic(), len(payload) / self._bytes_per_s)
        chunk = message.chunk
        order = self._order
        order.count_gaps = chunk is not None
        convert, frame_in = self._convert, self._frame_in
        try:
            for spoken in order.push(chunk if chunk is not None else message.sequence, payload):
                stats.frames_in += 1
                frame_in(leg_id, spoken if convert is None else convert(spoken))
        except UnknownLeg:
            self._let_go(leg_id)

    def _let_go(self, leg_id: str) -> None:
        """The leg went to another node (engine/runtime/adoption.py), whose stream the provider
        is opening: this one is heard no more, and left for the provider to end (a Twilio
        stream closed by its far end would end the call before the new TwiML takes over)."""
        log.info("media for a leg another node holds now: ignored until its stream ends",
                 leg_id=leg_id)  # fmt: skip
        self._frame_in = _ignored

    def _other(self, message: StreamMessage) -> Step | None:
        leg_id = self.leg_id
        if isinstance(message, StreamStart):
            if leg_id is not None:
                self._drops.drop("repeated_start", "a second start on one stream", leg_id)
                return None
            return self._start(message, self._admit(message))
        if isinstance(message, StreamDtmf):
            return None if leg_id is None else self._runtime.media_dtmf(leg_id, message.digit)
        if isinstance(message, StreamStop):
            self.stopped = self.over = True
            self._spawn_close(CLOSE_NORMAL, "stream ended")
        elif isinstance(message, StreamError):
            self._drops.provider_error(message, leg_id)
        elif isinstance(message, StreamUnknown):
            self._drops.unknown(message.event, leg_id)
        elif isinstance(message, StreamConnected):
            self._connected_token = message.auth_token or self._connected_token
        elif not isinstance(message, StreamMark):
            raise AssertionError(f"unhandled stream message {message!r}")
        return None

    def _admit(self, start: StreamStart) -> str:
        try:
            leg_id = self._find_leg(start, self._connected_token)
        except InvalidLegToken as exc:
            raise StreamProtocolError(exc.reason, CLOSE_POLICY) from None
        try:
            leg = self._runtime.machine.leg(leg_id)
        except NotFound:
            raise StreamProtocolError("unknown leg", CLOSE_POLICY) from None
        if not leg.is_alive:
            raise StreamProtocolError("the leg has ended", CLOSE_POLICY)
        if not self._streams.claim(leg_id):
            raise StreamProtocolError("the leg already has a media stream", CLOSE_POLICY)
        self.leg_id = leg_id
        return leg_id

    async def _start(self, start: StreamStart, leg_id: str) -> None:
        decoder = await self._decoder(leg_id, start)
        if decoder is None:
            self.leg_id = None  # refused: the machine retries the stream or ends the leg
            raise StreamProtocolError(f"cannot decode {start.fmt.label()}", CLOSE_UNSUPPORTED_DATA)
        self._convert = decoder.convert
        fmt = decoder.mixer_format
        # G.722 (decoded here) carries 64 kbit/s whatever its rate; the rest is what it says.
        self._bytes_per_s = (
            fmt.sample_rate * fmt.bytes_per_sample if decoder.convert is None else 8000.0
        )
        stats = self._runtime.plane.stats.of(leg_id)
        self._order.counts = stats
        output = self._make_output(self._codec, start.stream_id, stats)
        self.output = output
        stats.stream_started(lambda: output.queued)
        self._stats = stats  # from now on media is taken
        await self._runtime.media_started(
            leg_id,
            decoder.mixer_format,
            self.output,
            out_fmt=self._codec.outbound,
            label=start.fmt.label(),
        )

    async def _decoder(self, leg_id: str, start: StreamStart) -> InboundDecoder | None:
        """How to take the stream's announced format; None (and the machine told) if we cannot.

        Judged only now that the stream is bound to its leg, so a codec callbridge cannot decode
        (Telnyx streams OPUS or AMR-WB calls in their own codec) retries or ends that leg rather
        than leaving it answered and silent.
        """
        try:
            return inbound_decoder(start.fmt)
        except UnsupportedEncoding as exc:
            self._streams.release(leg_id)
            log.warning("media stream codec refused", leg_id=leg_id, reason=str(exc))
            await self._runtime.media_failed(leg_id, "unsupported_codec", str(exc))
            return None

    # -- steps and refusals ----------------------------------------------------------------------
    async def _run(self, step: Step | None) -> None:
        """Await a step, then handle what waited behind it, in order, until none is left."""
        try:
            while step is not None:
                await step
                step = None
                backlog = self._backlog
                while backlog and step is None and not self.over:
                    step = self._handle(backlog.popleft())
        except StreamProtocolError as exc:
            self._refuse(exc)
        except Exception:  # a fault in the engine must not leave the stream half bound
            log.exception("media stream step failed", leg_id=self.leg_id, **self._context)
            self._refuse(StreamProtocolError("internal error", CLOSE_INTERNAL_ERROR))
        finally:
            self._backlog = None

    def _refuse(self, exc: StreamProtocolError) -> None:
        self.refused = self.leg_id is None
        self.over = True
        log.warning("media stream refused", leg_id=self.leg_id, reason=exc.reason, **self._context)
        self._spawn_close(exc.close_code, exc.reason)

    def _spawn_close(self, code: int, reason: str) -> None:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close(code, reason))
            self._closing.add_done_callback(_quiet)


def _quiet(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("media socket close failed", error=str(task.exception()))


def _ignored(leg_id: str, payload: bytes) -> None:
    """Where a let-go leg's frames go."""
