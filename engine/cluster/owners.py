"""Which node owns each leg: the seam between the call commands' routing, adoption at start and
the registry that knows (issue 16, points 2 and 4).

A leg's owner is the node that holds it in memory and carries out its commands: the node that
made it (an inbound webhook, a dial) or adopted it. With Redis (``CALLBRIDGE_REDIS_URL``) the
owner is the node of the leg's live-leg claim (engine/admission/live_redis.py: one record, so
the count and the owner can never disagree), and a node is reached at the URL it registered
with its liveness (``CALLBRIDGE_NODE_URL``); ``RedisLegOwners`` (owners_redis.py) reads them.
Without Redis there is one node, ``SoleNode``: every leg is its own.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from engine.errors import CallbridgeError


@dataclass(frozen=True, slots=True)
class Owner:
    """The node that owns a leg, as the registry knows it."""

    node: str
    url: str | None  # where its HTTP API is reached; None: the node is not alive
    ended: bool = False  # the leg has ended there (the node keeps it until it prunes it)

    @property
    def alive(self) -> bool:
        return self.url is not None


class OwnersUnavailable(CallbridgeError):
    """503: the registry cannot say which node owns a leg (Redis unreachable)."""

    status = 503
    code = "10007"
    title = "Service unavailable"


class OwnerUnreachable(CallbridgeError):
    """503: the node that owns a leg cannot carry out a command on it (not alive, or its API
    did not answer)."""

    status = 503
    code = "10007"
    title = "Service unavailable"


class LegOwners(Protocol):
    @property
    def node(self) -> str:
        """This node's name."""

    async def owner_of(self, leg_id: str) -> Owner | None:
        """The leg's owner: a live leg's, or an ended one's while its node keeps it; None if
        no node owns it. ``OwnersUnavailable`` if the registry cannot answer."""

    async def owner_of_call(self, call: str) -> tuple[str, Owner] | None:
        """The leg of a provider call (``engine.admission.live.provider_call``) and its owner,
        as ``owner_of``; None if no node knows the call. ``OwnersUnavailable`` as there."""

    async def owner_of_bridge(self, bridge_id: int) -> tuple[str, Owner] | None:
        """Where the bridge's conference room is: a live leg of the bridge (counted against
        it) on a live node, and that node; else the live node that claimed the room for its
        first caller (the leg id empty), so that first callers reaching two nodes at once
        meet on one; else None, and the room is claimed for this node. ``OwnersUnavailable``
        as there."""

    async def owner_of_new_queue(self, org_id: int, name: str) -> Owner | None:
        """For a queue no node holds yet: the live node that claimed it first (its first
        enqueue is carried out there, so two first enqueues reaching two nodes at once make
        one queue); None, and the queue is claimed for this node. ``OwnersUnavailable`` as
        there."""

    async def held_elsewhere(self, leg_ids: Collection[str]) -> set[str]:
        """Of ``leg_ids``, those another node that is alive owns (adoption leaves them to it).
        ``OwnersUnavailable`` if the registry cannot answer."""


class SoleNode:
    """One node, no Redis: every leg is this node's, and nothing is held elsewhere."""

    node = "local"

    async def owner_of(self, leg_id: str) -> Owner | None:
        return None

    async def owner_of_call(self, call: str) -> tuple[str, Owner] | None:
        return None

    async def owner_of_bridge(self, bridge_id: int) -> tuple[str, Owner] | None:
        return None

    async def owner_of_new_queue(self, org_id: int, name: str) -> Owner | None:
        return None

    async def held_elsewhere(self, leg_ids: Collection[str]) -> set[str]:
        return set()
