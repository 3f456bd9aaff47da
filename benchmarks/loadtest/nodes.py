"""Several engine nodes under load: ``callbridge serve --workers N`` on PostgreSQL and Redis
(issue 16: CPU per leg per node against one node's).

What such a deployment has around it, made here for the run: a fresh PostgreSQL database on the
server ``--database-url`` names (dropped at the end), a fresh Redis key prefix, and the front a
deployment puts before its nodes (``WebhookFront``: the provider webhooks' public URL). The
front is sticky per call, as a proxy hashing on the call would be: a call's webhooks all reach
the node its first one reached, which owns it (the nodes would forward them otherwise; the
forwarding is tested in tests/test_cluster_webhooks.py, not measured here). A call's node is
the hash of its provider call id, so calls spread evenly whatever order they arrive in (taken
in turn, a run whose Twilio and Telnyx calls alternated put every call of one provider on one
node, and every room with it: a bridge's room is on its path leg's node). Media streams go
straight to each worker's media URL (``CALLBRIDGE_PUBLIC_MEDIA_URL`` with ``{port}``).
"""

from __future__ import annotations

import contextlib
import secrets
import zlib
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import orjson
from aiohttp import web
from sqlalchemy.engine import make_url

from adapters.simulators.common import LocalServer

HOP_BY_HOP = frozenset({"host", "content-length", "transfer-encoding", "connection"})
WEBHOOK_PATHS = ("/webhooks/telnyx", "/webhooks/twilio/voice", "/webhooks/twilio/status")


class WebhookFront:
    """Provider webhooks to ``nodes`` (base URLs): each call's to the node its provider call
    id hashes to (``node_of``)."""

    def __init__(self, nodes: list[str]) -> None:
        self.nodes = nodes
        self.calls: dict[str, int] = {}  # the provider's call id -> its node
        self._session: aiohttp.ClientSession | None = None
        app = web.Application()
        for path in WEBHOOK_PATHS:
            app.router.add_post(path, self._forward)
        self._server = LocalServer(app)
        self.base_url = ""

    async def start(self) -> str:
        self._session = aiohttp.ClientSession()
        self.base_url = await self._server.start()
        return self.base_url

    async def close(self) -> None:
        await self._server.close()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        call_id = await webhook_call(request, body)
        node = self.calls.setdefault(call_id, node_of(call_id, len(self.nodes)))
        assert self._session is not None
        return await pass_on(self._session, self.nodes[node], request, body)


def node_of(call_id: str, nodes: int) -> int:
    """The node of the call ``call_id`` among ``nodes``: a hash, stable across runs."""
    return zlib.crc32(call_id.encode()) % nodes


async def webhook_call(request: web.Request, body: bytes) -> str:
    """The provider's id of the call a webhook is about (Telnyx's call_control_id, Twilio's
    CallSid), as a front hashing on calls reads it."""
    if request.path == "/webhooks/telnyx":
        return str(orjson.loads(body)["data"]["payload"]["call_control_id"])
    return str((await request.post())["CallSid"])


async def pass_on(
    session: aiohttp.ClientSession, node: str, request: web.Request, body: bytes
) -> web.Response:
    """``request`` sent to the node at base URL ``node`` as a proxy does; its answer back."""
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    async with session.post(node + request.path_qs, data=body, headers=headers) as reply:
        answer = await reply.read()
        kept = {"Content-Type": reply.headers.get("Content-Type", "text/plain")}
    return web.Response(status=reply.status, body=answer, headers=kept)


@contextlib.asynccontextmanager
async def fresh_postgres(server_url: str) -> AsyncIterator[str]:
    """A new, empty database on the PostgreSQL server of ``server_url`` (its SQLAlchemy URL,
    asyncpg driver), dropped when the run is over."""
    server = make_url(server_url)
    admin_url = server.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"callbridge_loadtest_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(admin_url, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield server.set(drivername="postgresql+asyncpg", database=name).render_as_string(
            hide_password=False
        )
    finally:
        admin = await asyncpg.connect(admin_url, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def redis_prefix() -> str:
    """A key prefix of the run's own in Redis: its counts and claims meet nobody else's."""
    return f"loadtest-{secrets.token_hex(6)}"


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (``serve --workers``' workers), from /proc."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(child) for child in handle.read().split()]
    except OSError:
        return []
