"""The media port: provider media websockets served by picows, apart from the HTTP API.

``CALLBRIDGE_MEDIA_PORT`` puts the provider media paths (``/media/twilio``, ``/media/telnyx``)
on a port of their own, served by picows, which measured 11 us per echoed message here against
aiohttp's 18 us; the HTTP API stays on aiohttp. Providers connect to wss on 443, so a deployment
routes the media paths to this port at its reverse proxy (README, "Deployment") and says where
with ``CALLBRIDGE_PUBLIC_MEDIA_URL``.

picows calls back on every frame, and writes synchronously to the socket. So a frame goes from
the socket to the mixer (``StreamSession.feed``) with no task switch, and the engine's frames go
out from the tick that made them, through the one output writer (``adapters/stream_output.py``)
given picows' synchronous send: no writer task woken per frame. picows' ``pause_writing`` and
``resume_writing`` tell that writer when to hold frames and when to flush them.

A stream here is the same stream as on the API port: the same binding per provider (the kit's
``media_binding``), the same ``StreamSession`` rules, the same registry (one stream per leg;
closed at shutdown). Fragmented messages are reassembled up to ``DEFAULT_MAX_MESSAGE``; a
request for any other path is answered 404.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from functools import partial

from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    ws_create_server,
)
from yarl import URL

from adapters.context import AdapterContext
from adapters.media_session import StreamSessions
from adapters.stream_output import FrameWriter
from adapters.stream_session import BindingFactory, StreamSession
from adapters.streams import StreamCodec
from adapters.transport import DEFAULT_MAX_MESSAGE, bound_media_buffers, reason_bytes
from engine.logs import get_logger
from engine.media_plane.stats import LegMediaStats

__all__ = ["MediaStreamListener", "direct_output", "serve_media"]

log = get_logger("callbridge.media_session")

_TEXT = WSMsgType.TEXT
_PAYLOAD_TYPES = (WSMsgType.TEXT, WSMsgType.BINARY)


def direct_output(
    transport: WSTransport, codec: StreamCodec, stream_id: str, stats: LegMediaStats
) -> FrameWriter[bytes]:
    """The engine's ``MediaOutput`` for one picows stream: picows writes synchronously, so the
    writer writes to it directly; the listener tells it of back-pressure (``pause_writing``,
    ``resume_writing``) and of the end (``on_ws_disconnected``)."""
    return FrameWriter(
        partial(transport.send, _TEXT),
        codec.media_renderer(stream_id),
        stats,
        clear=codec.render_clear(stream_id),
    )


class MediaStreamListener(WSListener):
    """One websocket on the media port: frames in to its ``StreamSession``."""

    def __init__(
        self, sessions: StreamSessions, binding: BindingFactory, request: WSUpgradeRequest
    ) -> None:
        self._sessions = sessions
        self._binding = binding
        self._url = URL(request.path.decode("latin-1"))
        self._headers: Mapping[str, str] = request.headers
        self._transport: WSTransport | None = None
        self._session: StreamSession | None = None
        self._output: FrameWriter[bytes] | None = None
        self._fragments: list[bytes] = []
        self._fragment_bytes = 0
        self._ended: asyncio.Task[None] | None = None

    # -- picows callbacks --------------------------------------------------------------------
    def on_ws_connected(self, transport: WSTransport) -> None:
        self._transport = transport
        bound_media_buffers(transport.underlying_transport)
        codec, find_leg, context = self._binding(self._url.query, self._headers)
        peer = transport.underlying_transport.get_extra_info("peername")
        remote = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        self._session = self._sessions.session(
            codec,
            find_leg,
            make_output=self._make_output,
            close=self.close,
            context={**context, "remote": remote},
        )
        self._sessions.opened(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        session = self._session
        assert session is not None  # connected first
        kind = frame.msg_type
        if kind in _PAYLOAD_TYPES:
            if frame.fin:
                session.feed(frame.get_payload_as_bytes())
            else:
                self._fragments, self._fragment_bytes = [], 0
                self._fragment(transport, frame)
        elif kind is WSMsgType.CONTINUATION:
            self._fragment(transport, frame)
        elif kind is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self._output is not None:
            self._output.lost()
        session = self._session
        if session is not None and self._ended is None:
            self._sessions.closed(self, session)
            # Shielded from nothing: this runs on its own, and must end the stream whatever.
            self._ended = asyncio.ensure_future(session.finish())

    def pause_writing(self) -> None:
        if self._output is not None:
            self._output.pause()

    def resume_writing(self) -> None:
        if self._output is not None:
            self._output.resume()

    # -- the session's side --------------------------------------------------------------------
    def _make_output(
        self, codec: StreamCodec, stream_id: str, stats: LegMediaStats
    ) -> FrameWriter[bytes]:
        assert self._transport is not None
        self._output = direct_output(self._transport, codec, stream_id, stats)
        return self._output

    async def close(self, code: int, reason: str) -> None:
        transport = self._transport
        if transport is not None and not transport.is_disconnected:
            transport.send_close(WSCloseCode(code), reason_bytes(reason))
            transport.disconnect()

    def _fragment(self, transport: WSTransport, frame: WSFrame) -> None:
        """A part of a fragmented message; the whole goes to the session at the last part."""
        if not self._fragments and frame.msg_type is WSMsgType.CONTINUATION:
            return  # a continuation of nothing: nothing to assemble (RFC 6455 5.4)
        self._fragment_bytes += frame.payload_size
        if self._fragment_bytes > DEFAULT_MAX_MESSAGE:
            transport.send_close(WSCloseCode.MESSAGE_TOO_BIG, b"message too big")
            transport.disconnect()
            return
        self._fragments.append(frame.get_payload_as_bytes())
        if frame.fin:
            whole, self._fragments = b"".join(self._fragments), []
            assert self._session is not None
            self._session.feed(whole)

    async def ended(self) -> None:
        """For tests and shutdown: the stream's end has been handled."""
        if self._ended is not None:
            await asyncio.shield(self._ended)


async def serve_media(context: AdapterContext) -> AsyncIterator[asyncio.Server]:
    """Listen on the media port for as long as the app runs (an app cleanup context)."""
    sessions = context.require_sessions()
    port = context.settings.media_port
    assert port is not None

    def route(request: WSUpgradeRequest) -> MediaStreamListener | None:
        path = URL(request.path.decode("latin-1")).path
        binding = context.media_bindings.get(path)
        if binding is None:
            return None  # picows answers 404
        return MediaStreamListener(sessions, binding, request)

    server = await ws_create_server(
        route,
        context.settings.host,
        port,
        max_frame_size=DEFAULT_MAX_MESSAGE,
        websocket_handshake_timeout=10,
        # The event loop's own transport (uvloop's, in C) rather than aiofastnet's, which picows
        # takes when it is installed: in three alternating runs of bench_forwarder the engine's
        # ratio to the forwarder was 0.92-0.97 with uvloop's against 0.95-1.00 (BENCHMARKS.md).
        use_aiofastnet=False,
        logger_name="media",
    )
    log.info("media port listening", host=context.settings.host, port=port)
    try:
        yield server
    finally:
        server.close()
        await server.wait_closed()
