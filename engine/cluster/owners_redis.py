"""Leg owners read from the Redis live-leg registry (``CALLBRIDGE_REDIS_URL``).

A node is taken for alive while its key lives with a URL that is not this node's own: nodes
must be given distinct URLs (``CALLBRIDGE_NODE_URL``), and a process that finds its own URL
registered by another node is that node's successor at the same address.

No second registry: a leg's owner is the node of its claim (``leg:<id>``'s ``node``), or, for a
leg that ended, the node that ended it (``ended:<id>``); a node is alive while its key
``node:<node>:alive`` exists, and that key's value is its URL. The key layout and the scripts
that write it are engine/admission/live_scripts.py; ``RedisLiveLegs`` keeps them written. One
read is one Lua script, so a leg's owner and that owner's liveness are read at one instant.
"""

from __future__ import annotations

from collections.abc import Collection

from redis.exceptions import RedisError

from engine.admission.live_redis import RedisLiveLegs
from engine.cluster.owners import Owner, OwnersUnavailable

# ARGV: prefix, then leg ids. For each leg three values: its node ('' if none), that node's
# URL ('' if it is not alive), and 1 if the leg has ended (else 0).
OWNERS = """
local P = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local node = redis.call('HGET', P .. 'leg:' .. ARGV[i], 'node')
  local ended = 0
  if not node then
    node = redis.call('GET', P .. 'ended:' .. ARGV[i])
    ended = 1
  end
  local url = ''
  if node then url = redis.call('GET', P .. 'node:' .. node .. ':alive') or '' end
  out[#out + 1] = node or ''
  out[#out + 1] = url
  out[#out + 1] = ended
end
return out
"""


class RedisLegOwners:
    def __init__(self, registry: RedisLiveLegs) -> None:
        self._registry = registry
        self._owners = registry.client.register_script(OWNERS)

    @property
    def node(self) -> str:
        return self._registry.node

    async def owner_of(self, leg_id: str) -> Owner | None:
        return (await self._read([leg_id]))[leg_id]

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
        try:
            flat = await self._owners(args=[self._registry.prefix, *leg_ids])
        except RedisError as exc:
            raise OwnersUnavailable(
                f"which node holds the call cannot be read (Redis: {exc})"
            ) from exc
        found: dict[str, Owner | None] = {}
        for index, leg_id in enumerate(leg_ids):
            node, url, ended = flat[3 * index : 3 * index + 3]
            found[leg_id] = (
                Owner(node, self._reachable(node, url), bool(int(ended))) if node else None
            )
        return found

    def _reachable(self, node: str, url: str) -> str | None:
        """The owner's URL, or None if it is not alive: its key gone, or cleared (the node has
        stopped, handing its calls over), or the URL this node now listens on (a process at
        this address before it, so gone: a restart adopts its calls at once, even after a
        kill -9, without waiting for its key to lapse)."""
        if not url or (url == self._registry.url and node != self.node):
            return None
        return url
