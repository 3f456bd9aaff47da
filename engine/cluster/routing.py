"""Where a call command or a provider webhook is carried out: here, or at the node that owns
its leg.

The rule (docs/ARCHITECTURE.md, "Leg ownership and routing across nodes"): a node answers
from itself a command on a leg it holds (live or ended), one already forwarded to it, and one
on a leg no node owns (unknown: its 404, as on one node) or that it owns itself. A leg another
live node owns goes there; a live leg whose owner is not alive is 503 (nobody can carry the
command out until a node adopts it); an ended leg whose owner is gone is answered here.
"""

from __future__ import annotations

from collections.abc import Collection

from aiohttp import web

from engine.cluster.forward import REQUEST_HEADERS, Forwarder
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
        return self._elsewhere(leg_id, await self.owners.owner_of(leg_id))

    async def call_elsewhere(self, call: str) -> tuple[str, Owner] | None:
        """As ``elsewhere``, for the leg of a provider call (``provider_call``): that leg and
        its owner, or None to answer here (no node knows the call, or it is this node's)."""
        if self._forwarder is None:
            return None
        found = await self.owners.owner_of_call(call)
        if found is None:
            return None
        leg_id, owner = found
        owner_elsewhere = self._elsewhere(leg_id, owner)
        return None if owner_elsewhere is None else (leg_id, owner_elsewhere)

    async def bridge_elsewhere(self, bridge_id: int) -> tuple[str, Owner] | None:
        """The live node holding a live leg of the bridge, when it is another one: where a new
        call the bridge answers into its conference goes (the room is there). None to take the
        call here."""
        if self._forwarder is None:
            return None
        found = await self.owners.owner_of_bridge(bridge_id)
        if found is None or found[1].node == self.owners.node:
            return None
        return found

    async def new_queue_elsewhere(self, org_id: int, name: str) -> Owner | None:
        """The live node that claimed a queue no node holds yet, when it is another one: where
        the queue is made. None to make it here."""
        if self._forwarder is None:
            return None
        owner = await self.owners.owner_of_new_queue(org_id, name)
        return None if owner is None or owner.node == self.owners.node else owner

    def _elsewhere(self, leg_id: str, owner: Owner | None) -> Owner | None:
        if self._forwarder is None or owner is None or owner.node == self.owners.node:
            return None
        if not owner.alive:
            if owner.ended:
                return None
            raise self._forwarder.not_alive(leg_id, owner)
        return owner

    async def forward(
        self,
        request: web.Request,
        leg_id: str,
        owner: Owner,
        carried: Collection[str] = REQUEST_HEADERS,
    ) -> web.Response:
        if self._forwarder is None:  # never: elsewhere() names no owner without one
            raise RuntimeError("no forwarder on a single node")
        return await self._forwarder.forward(request, leg_id, owner, carried)

    async def call_node(
        self, owner: Owner, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        if self._forwarder is None:  # never: one node has no other node to ask
            raise RuntimeError("no other node on a single node")
        return await self._forwarder.call_node(owner, path, body, headers)

    async def start(self) -> None:
        if self._forwarder is not None:
            await self._forwarder.start()

    async def close(self) -> None:
        if self._forwarder is not None:
            await self._forwarder.close()
