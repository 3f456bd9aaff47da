"""The media websocket seam: what the engine needs from one stream's socket, and two sockets.

The engine's per-leg media coroutine reads frames and sends text through ``MediaSocket`` only, so
the media port can move to another server library without touching it. Two implementations:

- ``AiohttpMediaSocket``: the server side, over aiohttp's ``WebSocketResponse``; providers dial
  in to ``/media/twilio`` and ``/media/telnyx``.
- ``WebsocketsClientSocket``: the client side, over ``websockets``; callbridge dials out to a
  websocket voice-bot leg.

Contract shared by both: ``receive()`` returns a text frame as ``str``, a binary frame as
``bytes`` and ``None`` once the socket is closed (by either side; ping/pong are handled inside);
``send_text`` on a closed socket raises ``ConnectionResetError``; ``close`` is idempotent and cuts
an over-long reason to the 123 bytes a close frame can carry.

Both are also the synchronous sink of the one output writer (``adapters/stream_output.py``):
``write_now`` puts a text frame on the wire without awaiting (neither library offers that as a
coroutine-free call; how each is done is said where it is) and says whether the socket is now
back-pressured; ``drained`` returns once it takes data again.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Mapping
from typing import Protocol

from aiohttp import WSMsgType, web
from aiohttp.abc import AbstractStreamWriter
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

__all__ = [
    "AiohttpMediaSocket",
    "MediaSocket",
    "WebsocketsClientSocket",
    "bound_media_buffers",
    "reason_bytes",
]

# Provider media frames are a few hundred bytes; Telnyx's largest (30 s of L16/16k in base64)
# is ~1.3 MB. Anything past this is not a media stream.
DEFAULT_MAX_MESSAGE = 2 * 1024 * 1024

# Audio waiting for a peer that reads slowly is late audio, so what a media socket buffers is
# kept small. Left alone, Linux grows a connection's send buffer up to tcp_wmem's maximum (4 MiB
# here) and asyncio holds 64 KiB more: minutes of frames (PCMU in JSON is ~16 KB/s) queued behind
# a stuck peer before the stream's own bounded queue (adapters/stream_output.py: the newest
# second, oldest dropped) sees any back-pressure, and stale audio played when it reads again.
# 16 KiB each (the kernel doubles SO_SNDBUF for its bookkeeping) is about two seconds in all, and
# still far above a stream's bandwidth-delay product (L16/16k in base64, ~43 KB/s, over a 200 ms
# round trip is under 9 KB): a healthy peer never backs up.
MEDIA_SEND_BUFFER_BYTES = 16 * 1024
MEDIA_WRITE_HIGH_WATER = 16 * 1024


def bound_media_buffers(transport: asyncio.BaseTransport | None) -> None:
    """Keep a media socket's send buffers (kernel and asyncio) to a couple of seconds."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # not a TCP socket (a test's pipe): nothing to bound
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MEDIA_SEND_BUFFER_BYTES)
    if isinstance(transport, asyncio.WriteTransport):
        transport.set_write_buffer_limits(high=MEDIA_WRITE_HIGH_WATER)


# RFC 6455: a close frame carries at most 125 bytes, two of which are the code.
_MAX_REASON_BYTES = 123


class MediaSocket(Protocol):
    """One media stream's websocket, as the engine sees it."""

    @property
    def remote(self) -> str:
        """The peer's address, for logs."""
        ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Handshake headers (the request's on a server socket, the response's on a client
        socket); lookups are case-insensitive."""
        ...

    @property
    def close_code(self) -> int | None:
        """The close code once the socket is closed, else None."""
        ...

    @property
    def close_reason(self) -> str | None:
        """The reason the peer gave when it closed the socket, if it did."""
        ...

    async def receive(self) -> str | bytes | None: ...

    async def send_text(self, text: str | bytes) -> None:
        """A text frame; ``bytes`` are text already encoded as UTF-8."""
        ...

    def write_now(self, message: bytes) -> bool:
        """A text frame (UTF-8 ``message``) onto the wire without awaiting; True when the socket
        is back-pressured after it. Raises ``ConnectionResetError`` once the socket is closed."""
        ...

    async def drained(self) -> None:
        """Return once the socket takes data again (at once if it does now, or is gone); may
        raise ``ConnectionResetError`` if the connection is lost meanwhile."""
        ...

    async def close(self, code: int, reason: str) -> None: ...


_FIN_TEXT = 0x81  # RFC 6455 5.2: FIN, opcode 1 (text); a server's frames are not masked
_HEADER_7 = struct.Struct("!BB").pack
_HEADER_16 = struct.Struct("!BBH").pack
_HEADER_64 = struct.Struct("!BBQ").pack


def text_frame_header(length: int) -> bytes:
    """The header of one unmasked, unfragmented, uncompressed text frame of ``length`` bytes."""
    if length < 126:
        return _HEADER_7(_FIN_TEXT, length)
    if length < 1 << 16:
        return _HEADER_16(_FIN_TEXT, 126, length)
    return _HEADER_64(_FIN_TEXT, 127, length)


def reason_bytes(reason: str) -> bytes:
    # Cut on a character boundary so the peer gets valid UTF-8 (it must close on invalid UTF-8).
    return reason.encode("utf-8")[:_MAX_REASON_BYTES].decode("utf-8", "ignore").encode("utf-8")


class AiohttpMediaSocket:
    """Server-side media socket over an aiohttp ``WebSocketResponse``.

    ``write_now``: aiohttp's sends are coroutines, though an uncompressed frame is written to
    the transport before their first await. So the frame is written here, whole, to the
    connection's asyncio transport (``BaseRequest.transport``, public), with the RFC 6455 header
    a server's text frame has: aiohttp writes its own frames (pings, pongs, close) whole and
    synchronously too, so the two never interleave within a frame. The frame is not compressed
    even if permessage-deflate was agreed, which RFC 7692 allows per message (RSV1 unset), and
    nothing goes after aiohttp's close frame (``closed`` is set before it is written). The
    socket is back-pressured once the transport holds more than its high-water mark (when
    asyncio pauses the protocol), and ``drained`` is the response's payload writer's ``drain``
    (``AbstractStreamWriter``, public), which waits for the protocol to resume.
    """

    __slots__ = (
        "_close_reason",
        "_headers",
        "_high_water",
        "_payload",
        "_remote",
        "_transport",
        "_ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.BaseRequest,
        payload: AbstractStreamWriter | None = None,
    ) -> None:
        self._ws = ws
        self._payload = payload
        self._headers: Mapping[str, str] = request.headers
        self._remote = request.remote or ""
        self._close_reason: str | None = None
        transport = self._transport = request.transport
        bound_media_buffers(transport)
        self._high_water = transport.get_write_buffer_limits()[1] if transport is not None else 0

    @classmethod
    async def accept(
        cls,
        request: web.BaseRequest,
        *,
        max_message: int = DEFAULT_MAX_MESSAGE,
        heartbeat: float | None = None,
    ) -> AiohttpMediaSocket:
        """Complete the upgrade (HTTP 101) and wrap the socket.

        Refuse a stream (bad signature, unknown token) before calling this, with a plain HTTP
        error; after it, refuse with ``close``. Raises ``aiohttp.web.HTTPBadRequest`` if the
        request is not a websocket upgrade.
        """
        ws = web.WebSocketResponse(max_msg_size=max_message, heartbeat=heartbeat)
        payload = await ws.prepare(request)
        return cls(ws, request, payload)

    @property
    def response(self) -> web.WebSocketResponse:
        """The aiohttp response, for the handler to return once the stream is over."""
        return self._ws

    @property
    def remote(self) -> str:
        return self._remote

    @property
    def headers(self) -> Mapping[str, str]:
        return self._headers

    @property
    def close_code(self) -> int | None:
        return int(self._ws.close_code) if self._ws.close_code is not None else None

    @property
    def close_reason(self) -> str | None:
        return self._close_reason

    async def receive(self) -> str | bytes | None:
        ws = self._ws
        # aiohttp raises after a few reads of a closed socket; answer None without reading.
        if ws.closed:
            return None
        try:
            msg = await ws.receive()
        except ConnectionResetError:
            # Answering a ping while the peer is closing: the stream is over, not an error.
            return None
        if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
            data: str | bytes = msg.data
            return data
        if msg.type is WSMsgType.CLOSE:
            # aiohttp has already answered the close (autoclose); keep the peer's reason.
            self._close_reason = msg.extra or None
        # CLOSE, CLOSING, CLOSED and ERROR all mean the stream is over. Ping and pong never
        # reach here: the response answers them itself (autoping).
        return None

    async def send_text(self, text: str | bytes) -> None:
        if self._ws.closed:
            raise ConnectionResetError("media socket is closed")
        if isinstance(text, bytes):
            await self._ws.send_frame(text, WSMsgType.TEXT)
        else:
            await self._ws.send_str(text)

    def write_now(self, message: bytes) -> bool:
        transport = self._transport
        if self._ws.closed or transport is None or transport.is_closing():
            raise ConnectionResetError("media socket is closed")
        transport.write(text_frame_header(len(message)) + message)
        return transport.get_write_buffer_size() > self._high_water

    async def drained(self) -> None:
        if self._payload is None:
            raise ConnectionResetError("media socket was never opened")
        await self._payload.drain()

    async def close(self, code: int, reason: str) -> None:
        await self._ws.close(code=code, message=reason_bytes(reason))


class WebsocketsClientSocket:
    """Client-side media socket over a ``websockets`` connection (a dialled voice-bot leg)."""

    __slots__ = ("_connection",)

    def __init__(self, connection: ClientConnection) -> None:
        self._connection = connection

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        open_timeout: float = 10.0,
        max_message: int = DEFAULT_MAX_MESSAGE,
        sock: socket.socket | None = None,
    ) -> WebsocketsClientSocket:
        """Open a websocket to ``url`` with extra handshake ``headers``, over ``sock`` when
        given (a TCP socket already connected to the URL's host, e.g. by the URL policy)."""
        connection = await connect(
            url,
            sock=sock,
            additional_headers=headers,
            open_timeout=open_timeout,
            max_size=max_message,
            # Frames are base64 audio in JSON: deflate would spend CPU on every 20 ms frame of
            # every leg for a small saving, and the providers do not negotiate it either.
            compression=None,
        )
        return cls(connection)

    @property
    def remote(self) -> str:
        address = self._connection.remote_address
        if isinstance(address, tuple) and len(address) >= 2:
            return f"{address[0]}:{address[1]}"
        return str(address)

    @property
    def headers(self) -> Mapping[str, str]:
        response = self._connection.response
        return response.headers if response is not None else {}

    @property
    def close_code(self) -> int | None:
        return self._connection.close_code

    @property
    def close_reason(self) -> str | None:
        return self._connection.close_reason or None

    async def receive(self) -> str | bytes | None:
        try:
            return await self._connection.recv()
        except ConnectionClosed:
            return None

    async def send_text(self, text: str | bytes) -> None:
        try:
            await self._connection.send(text, text=True)
        except ConnectionClosed as exc:
            raise ConnectionResetError("media socket is closed") from exc

    def write_now(self, message: bytes) -> bool:
        # What ``send`` does before its first await, without the await: the sans-I/O protocol
        # frames the message, ``send_data`` writes it to the transport, ``paused`` is the
        # connection's flow control (names of the asyncio ``Connection`` checked against
        # websockets 17.4, the version installed; none of them starts with an underscore).
        connection = self._connection
        protocol = connection.protocol
        if protocol.state is not State.OPEN:
            raise ConnectionResetError("media socket is closed")
        protocol.send_text(message)
        connection.send_data()
        return connection.paused

    async def drained(self) -> None:
        try:
            await self._connection.drain()
        except OSError as exc:
            raise ConnectionResetError("media socket is closed") from exc

    async def close(self, code: int, reason: str) -> None:
        await self._connection.close(code, reason_bytes(reason).decode("utf-8"))
