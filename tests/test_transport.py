"""The media websocket seam, over a real aiohttp server on 127.0.0.1.

The server side is ``AiohttpMediaSocket``; the client side is ``WebsocketsClientSocket`` (and
aiohttp's own test client where a binary frame or a raw view of the close frame is needed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from adapters.transport import AiohttpMediaSocket, MediaSocket, WebsocketsClientSocket

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]

LONG_REASON = "é" * 100  # 200 bytes: more than a close frame can carry


class EchoServer:
    """Echoes text frames, reports binary ones, closes on request, records how it ended."""

    def __init__(self) -> None:
        # (close code, peer's close reason, what receive() gives once closed)
        self.ended: asyncio.Future[tuple[int | None, str | None, object]] = (
            asyncio.get_running_loop().create_future()
        )
        self.headers: dict[str, str] = {}
        self.remote = ""

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        socket = await AiohttpMediaSocket.accept(request)
        media: MediaSocket = socket
        self.headers = {"signature": media.headers.get("x-twilio-signature", "")}
        self.remote = media.remote
        while (frame := await media.receive()) is not None:
            if frame == "close-please":
                await media.close(4000, "leg hung up")
            elif frame == "close-long":
                await media.close(4001, LONG_REASON)
            elif isinstance(frame, bytes):
                await media.send_text(f"binary:{len(frame)}")
            else:
                await media.send_text(frame)
        self.ended.set_result((media.close_code, media.close_reason, await media.receive()))
        return socket.response

    async def result(self) -> tuple[int | None, str | None, object]:
        # A bound, not a sleep: a broken close must fail the test rather than hang it.
        return await asyncio.wait_for(self.ended, timeout=5)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/media", self.handle)
        return app


def ws_url(server: TestServer) -> str:
    return str(server.make_url("/media")).replace("http://", "ws://", 1)


async def test_client_and_server_echo_text(aiohttp_server: ServerFactory) -> None:
    echo = EchoServer()
    server = await aiohttp_server(echo.app())
    client = await WebsocketsClientSocket.connect(
        ws_url(server), headers={"X-Twilio-Signature": "c2ln"}
    )
    await client.send_text('{"event": "connected"}')
    assert await client.receive() == '{"event": "connected"}'
    assert echo.headers == {"signature": "c2ln"}
    assert echo.remote == "127.0.0.1"
    assert client.remote == f"127.0.0.1:{server.port}"
    assert client.headers["upgrade"].lower() == "websocket"
    await client.close(1000, "done")


async def test_server_close_reason_reaches_the_client(aiohttp_server: ServerFactory) -> None:
    echo = EchoServer()
    server = await aiohttp_server(echo.app())
    client = await WebsocketsClientSocket.connect(ws_url(server))
    await client.send_text("close-please")
    assert await client.receive() is None
    assert (client.close_code, client.close_reason) == (4000, "leg hung up")
    assert await echo.result() == (4000, None, None)
    with pytest.raises(ConnectionResetError):
        await client.send_text("late")


async def test_client_close_reason_reaches_the_server(aiohttp_server: ServerFactory) -> None:
    echo = EchoServer()
    server = await aiohttp_server(echo.app())
    client = await WebsocketsClientSocket.connect(ws_url(server))
    await client.close(4002, "bot finished")
    assert await echo.result() == (4002, "bot finished", None)
    assert await client.receive() is None


async def test_over_long_close_reason_is_cut_to_fit(aiohttp_server: ServerFactory) -> None:
    echo = EchoServer()
    server = await aiohttp_server(echo.app())
    client = await WebsocketsClientSocket.connect(ws_url(server))
    await client.send_text("close-long")
    assert await client.receive() is None
    assert client.close_code == 4001
    assert client.close_reason == "é" * 61  # 122 bytes: whole characters within 123


async def test_server_socket_reports_binary_frames(aiohttp_client: ClientFactory) -> None:
    echo = EchoServer()
    client = await aiohttp_client(echo.app())
    async with client.ws_connect("/media") as ws:
        await ws.send_bytes(b"\x00" * 160)
        assert await ws.receive_str() == "binary:160"
        await ws.send_str("close-please")
        closing = await ws.receive()
        assert closing.type is WSMsgType.CLOSE
        assert (closing.data, closing.extra) == (4000, "leg hung up")


async def test_server_send_after_close_raises(aiohttp_client: ClientFactory) -> None:
    outcome: asyncio.Future[tuple[str, object, int | None]] = (
        asyncio.get_running_loop().create_future()
    )

    async def handle(request: web.Request) -> web.WebSocketResponse:
        socket = await AiohttpMediaSocket.accept(request)
        await socket.close(1000, "bye")
        try:
            await socket.send_text("late")
            sent = "sent"
        except ConnectionResetError:
            sent = "refused"
        outcome.set_result((sent, await socket.receive(), socket.close_code))
        return socket.response

    app = web.Application()
    app.router.add_get("/media", handle)
    client = await aiohttp_client(app)
    async with client.ws_connect("/media") as ws:
        closing = await ws.receive()
        assert (closing.type, closing.extra) == (WSMsgType.CLOSE, "bye")
    assert await asyncio.wait_for(outcome, timeout=5) == ("refused", None, 1000)


async def test_accept_refuses_a_plain_http_request(aiohttp_client: ClientFactory) -> None:
    async def handle(request: web.Request) -> web.WebSocketResponse:
        socket = await AiohttpMediaSocket.accept(request)
        return socket.response

    app = web.Application()
    app.router.add_get("/media", handle)
    client = await aiohttp_client(app)
    response = await client.get("/media")
    assert response.status == 400
