"""Where a call command is carried out: here, or at the node that owns its leg.

The rule (docs/ARCHITECTURE.md, "Leg ownership and routing across nodes"): a node answers
from itself a command on a leg it holds (live or ended), one already forwarded to it, and one
on a leg no node owns (unknown: its 404, as on one node) or that it owns itself. A leg another
live node owns goes there; a live leg whose owner is not alive is 503 (nobody can carry the
command out until a node adopts it); an ended leg whose owner is gone is answered here.
"""

from __future__ import annotations

from aiohttp import web

from engine.cluster.forward import Forwarder
from engine.cluster.owners import LegOwners, Owner


class CallRouter:
    def __init__(self, owners: LegOwners, forwarder: Forwarder | None) -> None:
        self.owners = owners
        self._forwarder = forwarder  # None: one node (no Redis), nothing is ever forwarded

    @property
    def single_node(self) -> bool:
        return self._forwarder is None

    async def elsewhere(self, leg_id: str) -> Owner | None:
        """The live node that must carry out a command on ``leg_id`` (one this node does not
        hold), or None to answer here. ``OwnerUnreachable`` for a live leg whose owner is not
        alive; ``OwnersUnavailable`` if the registry cannot answer."""
        if self._forwarder is None:
            return None
        owner = await self.owners.owner_of(leg_id)
        if owner is None or owner.node == self.owners.node:
            return None
        if not owner.alive:
            if owner.ended:
                return None
            raise self._forwarder.not_alive(leg_id, owner)
        return owner

    async def forward(self, request: web.Request, leg_id: str, owner: Owner) -> web.Response:
        if self._forwarder is None:  # never: elsewhere() names no owner without one
            raise RuntimeError("no forwarder on a single node")
        return await self._forwarder.forward(request, leg_id, owner)

    async def start(self) -> None:
        if self._forwarder is not None:
            await self._forwarder.start()

    async def close(self) -> None:
        if self._forwarder is not None:
            await self._forwarder.close()
