"""Every live media stream of this process, and serving one over an aiohttp websocket.

The provider endpoints accept a websocket and hand it here with their ``StreamCodec`` and a way
to find the leg from the stream's ``start`` (a leg token). What happens to each message is the
provider- and server-neutral ``StreamSession``'s (``adapters/stream_session.py``); this module
keeps the registry (one stream per leg, every open socket so shutdown can close them) and the
aiohttp side: a read loop that feeds the session, and the stream's output: the one output writer
(``adapters/stream_output.py``) over the socket's synchronous ``write_now``. The media port's
faster server is ``adapters/picows_media.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from adapters.stream_drops import FrameDrops
from adapters.stream_output import FrameWriter
from adapters.stream_session import CLOSE_NORMAL, LegFinder, OutputFactory, StreamSession
from adapters.streams import StreamCodec
from adapters.transport import MediaSocket
from engine.logs import get_logger
from engine.media_plane.stats import LegMediaStats
from engine.metrics import Metrics
from engine.runtime.runtime import CallRuntime

__all__ = ["CLOSE_GOING_AWAY", "LegFinder", "StreamSessions", "socket_output"]

log = get_logger("callbridge.media_session")

CLOSE_GOING_AWAY = 1001  # RFC 6455: the server is going down


class Closable(Protocol):
    """An open media socket, as shutdown sees it."""

    async def close(self, code: int, reason: str) -> None: ...


def socket_output(
    socket: MediaSocket, codec: StreamCodec, stream_id: str, stats: LegMediaStats
) -> FrameWriter[bytes]:
    """The engine's ``MediaOutput`` for one aiohttp stream: written at once, from the caller,
    while the socket takes data; one drain task only while it is back-pressured."""
    return FrameWriter(
        socket.write_now,
        codec.media_renderer(stream_id),
        stats,
        drained=socket.drained,
        clear=codec.render_clear(stream_id),
    )


class StreamSessions:
    """Every live media stream of this process, one per leg (the sessions' ``Streams``)."""

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
        self._legs: set[str] = set()
        self._sockets: set[Closable] = set()
        self.refused = 0

    # -- the registry ----------------------------------------------------------------------------
    def claim(self, leg_id: str) -> bool:
        if leg_id in self._legs:
            return False
        self._legs.add(leg_id)
        return True

    def release(self, leg_id: str) -> None:
        self._legs.discard(leg_id)

    def has_stream(self, leg_id: str) -> bool:
        return leg_id in self._legs

    @property
    def sockets(self) -> tuple[Closable, ...]:
        """The media sockets open now (whatever server took them)."""
        return tuple(self._sockets)

    def opened(self, socket: Closable) -> None:
        """A socket is open: ``close_all`` closes it at shutdown unless ``closed`` first."""
        self._sockets.add(socket)

    def closed(self, socket: Closable, session: StreamSession) -> None:
        self._sockets.discard(socket)
        self.refused += session.refused

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

    def session(
        self,
        codec: StreamCodec,
        find_leg: LegFinder,
        *,
        make_output: OutputFactory,
        close: Callable[[int, str], Awaitable[None]],
        context: Mapping[str, str],
    ) -> StreamSession:
        """A new stream's session (``adapters/stream_session.py``), for any server."""
        return StreamSession(
            runtime=self._runtime,
            streams=self,
            codec=codec,
            find_leg=find_leg,
            drops=FrameDrops(codec.provider, self._dropped_frames, self._clock, context),
            make_output=make_output,
            close=close,
            context=dict(context),
        )

    # -- aiohttp ---------------------------------------------------------------------------------
    async def serve(
        self,
        socket: MediaSocket,
        codec: StreamCodec,
        find_leg: LegFinder,
        *,
        context: Mapping[str, str] | None = None,
    ) -> None:
        """Run one aiohttp stream to its end; every refusal is a close with a reason, and
        logged."""

        def output(codec: StreamCodec, stream_id: str, stats: LegMediaStats) -> FrameWriter[bytes]:
            return socket_output(socket, codec, stream_id, stats)

        session = self.session(
            codec,
            find_leg,
            make_output=output,
            close=socket.close,
            context={**(context or {}), "remote": socket.remote},
        )
        self.opened(socket)  # until it ends: close_all may close it first
        try:
            while not session.over:
                raw = await socket.receive()
                if raw is None:
                    break
                session.feed(raw)
        finally:
            # Shielded: a server that cancels handlers when the peer's TCP goes away (aiohttp's
            # handler_cancellation, on in its TestServer) would otherwise skip the end and
            # leave the leg holding a stream that is gone.
            self.closed(socket, session)
            await asyncio.shield(session.finish())
        await socket.close(CLOSE_NORMAL, "stream ended")
