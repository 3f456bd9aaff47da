"""Which legs are live, per bridge, number and organization: the API's and call control's seam.

Admission claims a slot for each new leg (``LiveLegs.claim``: the number under its
``channels_count`` and the organization under its ``max_legs``, engine/admission/limits.py,
checked and taken in one step); dial claims one for its placeholder (engine/api/rate_limit.py) and
puts the dialled leg in its place (``hold(..., replaces=)``); a restarted process holds the legs
it adopts (``CallRuntime.adopt``); the runtime releases a leg when it ends. The platform API asks
whether a bridge may be deleted. Two implementations, chosen by the composition root
(engine/app.py): ``LiveLegIndex`` here, in this process's memory (one node, no Redis), and
``RedisLiveLegs`` (engine/admission/live_redis.py, ``CALLBRIDGE_REDIS_URL``), shared by every node.

``hold`` and ``release`` never wait and never fail: a live call must not depend on the counts.
The Redis registry writes them in the background (``flush`` waits for that); ``claim`` and the
counts ask the registry itself, and raise ``LiveLegsUnavailable`` when it cannot answer, so a
new call is refused rather than admitted uncounted.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from dataclasses import dataclass
from typing import Protocol, TypeVar

from engine.errors import CallbridgeError

K = TypeVar("K")


@dataclass(frozen=True, slots=True)
class Place:
    """Where an inbound leg arrived: its bridge and the number dialled."""

    bridge_id: int
    number: str


@dataclass(frozen=True, slots=True)
class Claim:
    """What a new leg asks for: a slot among its organization's ``max_legs`` live legs and, with
    a ``place``, among its number's ``channels`` (its ``channels_count``)."""

    org_id: int
    max_legs: int
    place: Place | None = None
    channels: int = 0
    call: str | None = None  # the provider's call (``provider_call``), kept with the claim


class Limit(enum.Enum):
    """The limit a refused claim would have passed."""

    NUMBER = "number"  # the number's channels_count
    ORGANIZATION = "organization"  # the organization's max_legs
    # Not a limit: the claim's ``call`` is another leg's already (a provider's duplicate of a
    # call's first webhook another node took); only a registry shared by nodes says it.
    CALL = "call"


class LiveLegsUnavailable(CallbridgeError):
    """503: the live-leg counts cannot be read or changed (Redis unreachable), so no new call
    can be admitted; live calls go on."""

    status = 503
    code = "10007"
    title = "Service unavailable"


class LiveLegs(Protocol):
    async def start(self) -> None:
        """Before the first claim (and before adoption): a registry that cannot serve raises."""

    async def close(self) -> None: ...

    async def claim(self, leg_id: str, claim: Claim) -> Limit | None:
        """Count the leg if ``claim``'s limits leave room: checked and counted in one step, so
        two claims anywhere cannot both take the last slot. None when counted (or counted
        already), else the limit in the way."""

    def hold(
        self,
        leg_id: str,
        *,
        org_id: int,
        place: Place | None = None,
        replaces: str | None = None,
        call: str | None = None,
    ) -> None:
        """Count a leg that is live whatever the limits say (an adopted leg; a dialled leg in
        the slot its placeholder ``replaces`` claimed, released in the same step). ``call``:
        its provider call (``provider_call``), for the registries that route by it."""

    def release(self, leg_id: str) -> None:
        """The leg has ended: no longer counted. Releasing a leg not counted does nothing."""

    def forget(self, leg_id: str) -> None:
        """The leg goes on at another node (engine/runtime/adoption.py): no longer this node's
        to write. It stays counted, its claim as it is until that node's ``hold`` moves it."""

    async def flush(self) -> None:
        """Wait until every hold and release so far is written (best effort: a registry that
        cannot be reached keeps them for later)."""

    async def count_for_bridge(self, bridge_id: int) -> int: ...

    async def count_for_number(self, number: str) -> int: ...

    async def count_for_org(self, org_id: int) -> int: ...


@dataclass(frozen=True, slots=True)
class Counted:
    org_id: int
    place: Place | None
    call: str | None = None


def provider_call(provider: str, call_id: str) -> str:
    """The name a leg's provider call is known by across nodes (``Claim.call``): provider
    call ids are unique only per provider."""
    return f"{provider}:{call_id}"


class LiveLegIndex:
    """``LiveLegs`` in this process's memory: one node. Each method runs without an await, so
    a claim's check and count cannot interleave with another."""

    def __init__(self) -> None:
        self._legs: dict[str, Counted] = {}
        self._by_bridge: defaultdict[int, set[str]] = defaultdict(set)
        self._by_number: defaultdict[str, set[str]] = defaultdict(set)
        self._by_org: defaultdict[int, set[str]] = defaultdict(set)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def claim(self, leg_id: str, claim: Claim) -> Limit | None:
        if leg_id in self._legs:
            return None
        place = claim.place
        if place is not None and len(self._by_number.get(place.number, ())) >= claim.channels:
            return Limit.NUMBER
        if len(self._by_org.get(claim.org_id, ())) >= claim.max_legs:
            return Limit.ORGANIZATION
        self._count(leg_id, Counted(claim.org_id, place))
        return None

    def hold(
        self,
        leg_id: str,
        *,
        org_id: int,
        place: Place | None = None,
        replaces: str | None = None,
        call: str | None = None,  # one node: nothing is routed by it
    ) -> None:
        if replaces is not None:
            self.release(replaces)
        self.release(leg_id)
        self._count(leg_id, Counted(org_id, place))

    def release(self, leg_id: str) -> None:
        counted = self._legs.pop(leg_id, None)
        if counted is None:
            return
        _discard(self._by_org, counted.org_id, leg_id)
        if counted.place is not None:
            _discard(self._by_bridge, counted.place.bridge_id, leg_id)
            _discard(self._by_number, counted.place.number, leg_id)

    def forget(self, leg_id: str) -> None:
        self.release(leg_id)  # one node: no other node to go on counting it

    async def flush(self) -> None:
        return None

    async def count_for_bridge(self, bridge_id: int) -> int:
        return len(self._by_bridge.get(bridge_id, ()))

    async def count_for_number(self, number: str) -> int:
        return len(self._by_number.get(number, ()))

    async def count_for_org(self, org_id: int) -> int:
        return len(self._by_org.get(org_id, ()))

    def _count(self, leg_id: str, counted: Counted) -> None:
        self._legs[leg_id] = counted
        self._by_org[counted.org_id].add(leg_id)
        if counted.place is not None:
            self._by_bridge[counted.place.bridge_id].add(leg_id)
            self._by_number[counted.place.number].add(leg_id)


def _discard(index: defaultdict[K, set[str]], key: K, leg_id: str) -> None:
    index[key].discard(leg_id)
    if not index[key]:
        del index[key]
