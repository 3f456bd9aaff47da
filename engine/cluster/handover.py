"""Legs moved between nodes so that a bridge's or a conference's legs share a node (issue 16,
point 3: rooms live on one node; the choice and its measure are in docs/ARCHITECTURE.md).

Moving a leg is the restart path for one leg: the node holding it lets it go
(``Adoption.let_go``: out of its memory, its stored rows untouched) and asks the node taking it
to adopt it (``POST /internal/v1/legs/{id}/adopt``), which loads it from the shared store,
holds its claim (its commands and webhooks go there from then on) and asks the provider for a
new media stream to its own media URL (Twilio: new TwiML with a new ``<Stream>``; Telnyx:
``streaming_stop`` + ``streaming_start``). A node that wants another node's leg asks that node
to hand it over (``POST /internal/v1/legs/{id}/hand-over``). Both requests are signed by the
sending node (engine/cluster/node_auth.py) and name the organization the command came from:
a leg of another organization is not found, as on one node.

If the adopting node cannot be reached, the leg is taken back (adopted again here from the
store, its stream asked for again) unless its claim shows the other node took it after all: a
leg is never held by two nodes, nor by none.
"""

from __future__ import annotations

import orjson

from engine.cluster.node_auth import NodeAuth
from engine.cluster.owners import Owner, OwnerUnreachable
from engine.cluster.routing import CallRouter
from engine.errors import CallbridgeError, NotFound
from engine.logs import get_logger
from engine.runtime.adoption import Adoption, LegStays

log = get_logger("callbridge.cluster")
LEG_PATH = "/internal/v1/legs/{leg_id}"


class LegMover:
    def __init__(self, router: CallRouter, auth: NodeAuth, adoption: Adoption, url: str) -> None:
        self._router = router
        self._auth = auth
        self._adoption = adoption
        self.node = router.owners.node
        self.url = url  # this node's API, where the leg's owner sends the adoption request

    async def pull(self, leg_id: str, org_id: int, owner: Owner) -> None:
        """Have ``owner`` hand the leg over to this node; returns once this node holds it.
        ``LegStays`` with the owner's reason, ``NotFound``, or ``OwnerUnreachable``."""
        body = {"org_id": org_id, "node": self.node, "url": self.url}
        await self._ask(owner, f"{LEG_PATH.format(leg_id=leg_id)}/hand-over", body)

    async def push(self, leg_id: str, org_id: int, to: Owner) -> None:
        """Hand a leg held here over to ``to``; returns once ``to`` holds it."""
        await self._adoption.let_go(leg_id, org_id)
        try:
            await self._ask(to, f"{LEG_PATH.format(leg_id=leg_id)}/adopt", {"org_id": org_id})
        except CallbridgeError:
            if not await self._taken_by(leg_id, to):
                await self._adoption.adopt_leg(leg_id, org_id)
                log.warning("leg taken back: the node it was handed to did not take it",
                            leg_id=leg_id, node=to.node)  # fmt: skip
            raise
        log.info("leg handed over", leg_id=leg_id, to=to.node)

    async def _ask(self, node: Owner, path: str, body: dict[str, object]) -> None:
        raw = orjson.dumps(body)
        status, reply = await self._router.call_node(
            node, path, raw, self._auth.sign("POST", path, raw)
        )
        if status == 200:
            return
        detail = _detail(reply)
        if status == 422:
            raise LegStays(detail)
        if status == 404:
            raise NotFound(detail)
        raise OwnerUnreachable(f"node {node.node} did not move the call: {status} {detail}")

    async def _taken_by(self, leg_id: str, node: Owner) -> bool:
        try:
            owner = await self._router.owners.owner_of(leg_id)
        except CallbridgeError:
            return False
        return owner is not None and owner.node == node.node


def _detail(reply: bytes) -> str:
    """The first error's detail of a node's error reply (engine/api/internal.py)."""
    try:
        errors = orjson.loads(reply)["errors"]
        return str(errors[0]["detail"])
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return reply[:200].decode(errors="replace")
