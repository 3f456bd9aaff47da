"""A request carried to the node that owns its leg (issue 16, point 4: "any node answers any
request"): a call command, or a provider webhook (engine/cluster/webhooks.py).

The request goes as it came (method, path and query undecoded, body, and the headers that
matter: a command's ``Authorization``, so that the owner authenticates it itself and answers
another organization's token as it would on one node; a webhook's provider signature headers,
so that the owner verifies it itself) plus ``X-Callbridge-Forwarded-By`` naming this node; a
request that carries that header is never forwarded again. The owner's status, body and the
headers that matter come back unchanged: the reply, and the webhooks (the owner's outbox), are
those of one node. An owner that cannot be reached is ``OwnerUnreachable``, logged with the
leg and the node.
"""

from __future__ import annotations

from collections.abc import Collection

import aiohttp
from aiohttp import web
from yarl import URL

from engine.cluster.owners import Owner, OwnerUnreachable
from engine.logs import get_logger

log = get_logger("callbridge.cluster")

FORWARDED_BY = "X-Callbridge-Forwarded-By"
# Idempotency-Key: the API does not read one today; carried so that a client's key reaches
# the node that would honour it. X-Request-ID: one id in both nodes' logs.
REQUEST_HEADERS = (
    "Authorization",
    "Content-Type",
    "Accept",
    "Idempotency-Key",
    "User-Agent",
    "X-Request-ID",
)
# What a provider webhook carries besides its signature headers (named by its adapter): how the
# body is encoded, and who sent it, for the owner's logs.
WEBHOOK_HEADERS = (
    "Content-Type",
    "User-Agent",
    "X-Request-ID",
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
)
REPLY_HEADERS = ("Content-Type", "Retry-After", "Allow", "WWW-Authenticate")
CONNECT_TIMEOUT_S = 2.0  # a node that does not accept a connection in this long is gone
# An owner's answer waits for its store commit (and a dial's provider call): the same bound as
# a provider REST request (CALLBRIDGE_PROVIDER_TIMEOUT_S's default) plus that commit.
REPLY_TIMEOUT_S = 15.0


class Forwarder:
    """Carries requests to other nodes over one connection pool; ``start`` before use."""

    def __init__(self, node: str) -> None:
        self.node = node
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # Node URLs are the operator's, registered by the nodes themselves: not tenant URLs,
        # so not under the URL policy (it would refuse the private addresses nodes live on).
        timeout = aiohttp.ClientTimeout(total=REPLY_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        self._session = aiohttp.ClientSession(timeout=timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def forward(
        self,
        request: web.Request,
        leg_id: str,
        owner: Owner,
        carried: Collection[str] = REQUEST_HEADERS,
    ) -> web.Response:
        """``request`` answered by ``owner``, with the ``carried`` headers it has."""
        if self._session is None or owner.url is None:
            raise OwnerUnreachable(self._gone(leg_id, owner))
        headers = {name: request.headers[name] for name in carried if name in request.headers}
        headers[FORWARDED_BY] = self.node
        url = URL(owner.url.rstrip("/") + request.raw_path, encoded=True)
        body = await request.read()
        try:
            async with self._session.request(
                request.method, url, data=body, headers=headers, allow_redirects=False
            ) as reply:
                payload = await reply.read()
                kept = {
                    name: reply.headers[name] for name in REPLY_HEADERS if name in reply.headers
                }
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = str(exc) or type(exc).__name__
            log.warning("request not forwarded: owner unreachable", leg_id=leg_id,
                        path=request.path, owner=owner.node, url=owner.url,
                        error=error)  # fmt: skip
            raise OwnerUnreachable(
                f"the node holding call '{leg_id}' ({owner.node}) did not answer: {error}; "
                "the command may or may not have been carried out"
                if isinstance(exc, TimeoutError)
                else f"the node holding call '{leg_id}' ({owner.node}) cannot be reached: {error}"
            ) from exc
        log.info("request forwarded to its owner", leg_id=leg_id, path=request.path,
                 owner=owner.node, status=reply.status)  # fmt: skip
        return web.Response(status=reply.status, body=payload, headers=kept)

    async def call_node(
        self, owner: Owner, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        """This node's own POST of ``body`` to ``path`` at ``owner`` (engine/cluster/handover.py):
        its status and body; ``OwnerUnreachable`` if it cannot be had."""
        if self._session is None or owner.url is None:
            raise OwnerUnreachable(f"node {owner.node} is not alive")
        url = URL(owner.url.rstrip("/") + path, encoded=True)
        headers = {**headers, "Content-Type": "application/json", FORWARDED_BY: self.node}
        try:
            async with self._session.post(url, data=body, headers=headers) as reply:
                return reply.status, await reply.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = str(exc) or type(exc).__name__
            log.warning("node request failed", path=path, node=owner.node, error=error)
            raise OwnerUnreachable(f"node {owner.node} did not answer: {error}") from exc

    @staticmethod
    def _gone(leg_id: str, owner: Owner) -> str:
        return (
            f"the node holding call '{leg_id}' ({owner.node}) is not alive (its liveness in "
            "Redis has lapsed): its calls are taken over only by a node that starts"
        )

    def not_alive(self, leg_id: str, owner: Owner) -> OwnerUnreachable:
        log.warning("request refused: its owner is not alive", leg_id=leg_id,
                    owner=owner.node)  # fmt: skip
        return OwnerUnreachable(self._gone(leg_id, owner))
