"""Leg owners read from the Redis live-leg registry (``CALLBRIDGE_REDIS_URL``).

A node is taken for alive while its key lives with a URL that is not this node's own: nodes
must be given distinct URLs (``CALLBRIDGE_NODE_URL``), and a process that finds its own URL
registered by another node is that node's successor at the same address.

No second registry: a leg's owner is the node of its claim (``leg:<id>``'s ``node``), or, for a
leg that ended, the node that ended it (``ended:<id>``); a provider call names its leg
(``call:<provider>:<id>``, written with the claim), never a node; a node is alive while its key
``node:<node>:alive`` exists, and that key's value is its URL. The key layout and the scripts
that write it are engine/admission/live_scripts.py; ``RedisLiveLegs`` keeps them written. One
read is one Lua script, so a leg's owner and that owner's liveness are read at one instant.
"""

from __future__ import annotations

from collections.abc import Collection

from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from engine.admission.live_redis import RedisLiveLegs
from engine.cluster.owners import Owner, OwnersUnavailable

_OWNER = """
local P = ARGV[1]
local function owner(leg, out)
  local node = redis.call('HGET', P .. 'leg:' .. leg, 'node')
  local ended = 0
  if not node then
    node = redis.call('GET', P .. 'ended:' .. leg)
    ended = 1
  end
  local url = ''
  if node then url = redis.call('GET', P .. 'node:' .. node .. ':alive') or '' end
  out[#out + 1] = node or ''
  out[#out + 1] = url
  out[#out + 1] = ended
end
"""
# ARGV: prefix, then leg ids. For each leg three values: its node ('' if none), that node's
# URL ('' if it is not alive), and 1 if the leg has ended (else 0).
OWNERS = (
    _OWNER
    + """
local out = {}
for i = 2, #ARGV do owner(ARGV[i], out) end
return out
"""
)
# ARGV: prefix, a provider call. Its leg ('' if no node knows the call), then that leg's three
# values as OWNERS gives them.
CALL_OWNER = (
    _OWNER
    + """
local leg = redis.call('GET', P .. 'call:' .. ARGV[2])
if not leg then return {''} end
local out = {leg}
owner(leg, out)
return out
"""
)


# A room that has no leg yet, named for what it is for (``bridge:<id>``, a bridge's conference;
# ``queue:<org>:<name>``): claimed by the first node to ask (``room-claim:<what>``), for as long
# as a new room takes to get its first leg counted, and by far more; until then every other
# node asking is sent there, so two first callers or enqueues reaching two nodes in the same
# instant meet on one. Another live node's claim: {'', node, url, 0}; none, this node's own, or
# a dead node's: claimed for this node, {''}.
_CLAIM_ROOM = """
local function claim_room(what, this_node, ms)
  local claim = P .. 'room-claim:' .. what
  local node = redis.call('GET', claim)
  if node and node ~= this_node then
    local url = redis.call('GET', P .. 'node:' .. node .. ':alive')
    if url and url ~= '' then return {'', node, url, 0} end
  end
  redis.call('SET', claim, this_node, 'PX', ms)
  return {''}
end
"""
# ARGV: prefix, a bridge id, this node, the claim's lifetime (ms). A live leg counted against the
# bridge whose node is alive, and that node and its URL; else the bridge's room claim. After the
# first caller's leg is counted (admission writes the count, with the bridge, when the call is
# taken: engine/admission/live_scripts.py), the bridge's live legs say where the room is.
BRIDGE_OWNER = (
    _OWNER
    + _CLAIM_ROOM
    + """
for _, leg in ipairs(redis.call('SMEMBERS', P .. 'bridge:' .. ARGV[2])) do
  local node = redis.call('HGET', P .. 'leg:' .. leg, 'node')
  if node then
    local url = redis.call('GET', P .. 'node:' .. node .. ':alive')
    if url and url ~= '' then return {leg, node, url, 0} end
  end
end
return claim_room('bridge:' .. ARGV[2], ARGV[3], ARGV[4])
"""
)
# ARGV: prefix, what the room is for, this node, the claim's lifetime (ms).
CLAIM_ROOM = (
    "local P = ARGV[1]\n" + _CLAIM_ROOM + "\nreturn claim_room(ARGV[2], ARGV[3], ARGV[4])\n"
)
ROOM_CLAIM_MS = 30_000


class RedisLegOwners:
    def __init__(self, registry: RedisLiveLegs) -> None:
        self._registry = registry
        self._owners = registry.client.register_script(OWNERS)
        self._call_owner = registry.client.register_script(CALL_OWNER)
        self._bridge_owner = registry.client.register_script(BRIDGE_OWNER)
        self._claim_room = registry.client.register_script(CLAIM_ROOM)

    @property
    def node(self) -> str:
        return self._registry.node

    async def owner_of(self, leg_id: str) -> Owner | None:
        return (await self._read([leg_id]))[leg_id]

    async def owner_of_call(self, call: str) -> tuple[str, Owner] | None:
        found = await self._run(self._call_owner, [call])
        leg_id = found[0]
        if not leg_id:
            return None
        owner = self._owner(*found[1:4])
        return None if owner is None else (leg_id, owner)

    async def owner_of_bridge(self, bridge_id: int) -> tuple[str, Owner] | None:
        claim = [str(bridge_id), self.node, str(ROOM_CLAIM_MS)]
        found = await self._run(self._bridge_owner, claim)
        if len(found) == 1:
            return None
        owner = self._owner(*found[1:4])
        if owner is None or not owner.alive:
            return None  # a claim of this node's predecessor at its address: taken here
        return (found[0] or f"bridge {bridge_id}'s first call", owner)

    async def owner_of_new_queue(self, org_id: int, name: str) -> Owner | None:
        claim = [f"queue:{org_id}:{name}", self.node, str(ROOM_CLAIM_MS)]
        found = await self._run(self._claim_room, claim)
        owner = self._owner(*found[1:4]) if len(found) > 1 else None
        return owner if owner is not None and owner.alive else None

    async def held_elsewhere(self, leg_ids: Collection[str]) -> set[str]:
        if not leg_ids:
            return set()
        owners = await self._read(list(leg_ids))
        return {
            leg_id
            for leg_id, owner in owners.items()
            if owner is not None and owner.alive and owner.node != self.node
        }

    async def _read(self, leg_ids: list[str]) -> dict[str, Owner | None]:
        flat = await self._run(self._owners, leg_ids)
        return {
            leg_id: self._owner(*flat[3 * index : 3 * index + 3])
            for index, leg_id in enumerate(leg_ids)
        }

    async def _run(self, script: AsyncScript, args: list[str]) -> list[str]:
        try:
            found: list[str] = await script(args=[self._registry.prefix, *args])
        except RedisError as exc:
            raise OwnersUnavailable(
                f"which node holds the call cannot be read (Redis: {exc})"
            ) from exc
        return found

    def _owner(self, node: str, url: str, ended: str | int) -> Owner | None:
        return Owner(node, self._reachable(node, url), bool(int(ended))) if node else None

    def _reachable(self, node: str, url: str) -> str | None:
        """The owner's URL, or None if it is not alive: its key gone, or cleared (the node has
        stopped, handing its calls over), or the URL this node now listens on (a process at
        this address before it, so gone: a restart adopts its calls at once, even after a
        kill -9, without waiting for its key to lapse)."""
        if not url or (url == self._registry.url and node != self.node):
            return None
        return url
