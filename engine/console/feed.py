"""``GET /console/api/feed``: the signed-in organization's messages as server-sent events.

Each message is one ``event:`` (``live``, ``levels``, ``bridges``, ``webhooks``, ``audit``)
with its JSON on one ``data:`` line (JSON has no raw newline), as the HTML standard's
EventSource reads them. A comment line every ``KEEPALIVE_S`` lets proxies see the stream alive.
"""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AbstractAsyncContextManager

from aiohttp import web

from engine.console.guard import require_session
from engine.console.hub import Message
from engine.console.keys import HUB, SESSIONS
from engine.console.sessions import ConsoleSession

__all__ = ["event_stream", "feed"]

KEEPALIVE_S = 15.0


async def feed(request: web.Request) -> web.StreamResponse:
    session = require_session(request)
    return await event_stream(request, session, request.app[HUB].subscribe(session.org_id))


async def event_stream(
    request: web.Request,
    session: ConsoleSession,
    subscription: AbstractAsyncContextManager[asyncio.Queue[Message]],
) -> web.StreamResponse:
    """A hub subscription's messages as server-sent events, until it ends (None), the client
    goes, or the session is signed out or expires."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # a buffering proxy would hold the meters back
        }
    )
    await response.prepare(request)
    sessions = request.app[SESSIONS]
    async with subscription as queue:
        with contextlib.suppress(ConnectionResetError):
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if message is None or sessions.get(session.session_id) is None:
                    break  # shutting down, or signed out or expired meanwhile
                event, data = message
                await response.write(b"event: " + event.encode() + b"\ndata: " + data + b"\n\n")
    return response
