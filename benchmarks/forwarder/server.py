"""The bare forwarder: what the engine's media path is measured against.

An aiohttp websocket server on uvloop that accepts Telnyx media streams on the engine's media
path (``/media/telnyx``), pairs the two streams that present the same ``token`` in the query
string (the engine pairs its legs by a bridge command instead; the benchmark gives a pair's two
legs one token), and, for every ``media`` frame one leg sends, sends its peer a Telnyx outbound
media frame (``{"event": "media", "media": {"payload": ...}}``, the engine's rendering) with that
payload. Bare but honest: every frame is received, parsed with orjson and a frame rendered with
orjson and sent; the payload itself passes through as base64 (nothing is mixed, decoded or
detected), and nothing else is done. It prints ``listening <port>`` once it accepts connections.

``python -m benchmarks.forwarder [--host 127.0.0.1] [--port 0]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Final

import orjson
from aiohttp import WSMsgType, web

from adapters.telnyx.gateway import MEDIA_PATH

__all__ = ["Pairs", "Seat", "forwarder_app", "main"]

_MAX_MESSAGE: Final = 4 * 1024 * 1024


class Seat:
    """One stream and, once its pair's other stream has started, that stream's seat."""

    __slots__ = ("peer", "ws")

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.peer: Seat | None = None


class Pairs:
    """Streams waiting for their pair's other stream, by token."""

    def __init__(self) -> None:
        self._waiting: dict[str, Seat] = {}

    def join(self, token: str, seat: Seat) -> None:
        other = self._waiting.pop(token, None)
        if other is None:
            self._waiting[token] = seat
        else:
            seat.peer, other.peer = other, seat

    def leave(self, token: str, seat: Seat) -> None:
        if self._waiting.get(token) is seat:
            del self._waiting[token]
        if seat.peer is not None:
            seat.peer.peer = None
            seat.peer = None


PAIRS: Final = web.AppKey("pairs", Pairs)


async def media_socket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=_MAX_MESSAGE, autoping=True)
    await ws.prepare(request)
    pairs = request.app[PAIRS]
    token = request.query.get("token", "")
    seat = Seat(ws)
    try:
        async for message in ws:
            if message.type is not WSMsgType.TEXT:
                continue
            frame = orjson.loads(message.data)
            event = frame.get("event")
            if event == "media":
                peer = seat.peer
                if peer is not None and not peer.ws.closed:
                    out = {"event": "media", "media": {"payload": frame["media"]["payload"]}}
                    with contextlib.suppress(ConnectionError):
                        await peer.ws.send_frame(orjson.dumps(out), WSMsgType.TEXT)
            elif event == "start":
                pairs.join(token, seat)
    finally:
        pairs.leave(token, seat)
    return ws


def forwarder_app() -> web.Application:
    app = web.Application()
    app[PAIRS] = Pairs()
    app.router.add_get(MEDIA_PATH, media_socket)
    return app


async def serve(host: str, port: int) -> None:
    runner = web.AppRunner(forwarder_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    print(f"listening {runner.addresses[0][1]}", flush=True)
    try:
        await asyncio.Event().wait()  # until the benchmark terminates this process
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.forwarder",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(serve(args.host, args.port))
