"""Live-leg counts in Redis, shared by every node (``CALLBRIDGE_REDIS_URL``; issue 16, point 2).

The same ``LiveLegs`` as the in-memory index (engine/admission/live.py), for several engine
processes on one store: a number's ``channels_count`` and an organization's ``max_legs`` then hold
across all of them. Every change is a Lua script (engine/admission/live_scripts.py), atomic in
Redis: a claim checks both limits and counts the leg in one step.

Node rule (docs/ARCHITECTURE.md, "Live-leg counts across nodes"): each process is a node with an
id of its own (``CALLBRIDGE_NODE_ID`` or the host name, plus the process id and a random part, so
a restarted process is a new node). Each claim records its node. A node is alive while its key
``node:<id>:alive`` exists: set for ``CALLBRIDGE_REDIS_NODE_TTL_S`` and refreshed every third of
it; its value is the node's URL (``CALLBRIDGE_NODE_URL``), where other nodes forward the
commands on its legs (engine/cluster/). Every node, at each refresh, drops the claims of the
nodes whose key has expired. A claim's node is its leg's owner; a leg this node ends is
remembered as its own for ``ended_ttl_s`` (as long as the runtime keeps ended legs). A node
that adopts legs (a restart on the same store) holds them: their claims move to it, and only
what nobody adopted goes with the dead node. A node that finds its own key gone (Redis
restarted empty, or the node was cut off longer than the TTL and swept) registers again with
every leg it still holds.

Live calls never wait on Redis: ``hold`` and ``release`` change this node's own record at once
and are written in the background (and again after an outage: nothing is lost while Redis is
away). New calls do: a claim that Redis cannot answer raises ``LiveLegsUnavailable``, so the
call is refused (inbound busy, dial 429) with the reason, and the registry logs the outage once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from engine.admission.live import Claim, Counted, Limit, LiveLegsUnavailable, Place
from engine.admission.live_scripts import CLAIM, TAKE_OVER, WRITE
from engine.logs import get_logger

log = get_logger("callbridge.admission")

# One Redis request's bound (connecting included): a claim waits at most this long before the
# call is refused. Not retried: the caller's provider, or the application, tries again.
REDIS_TIMEOUT_S = 2.0
# While Redis is unreachable claims are refused at once (not each after a timeout: a burst of
# calls would queue behind one another), and the keep-alive task tries it this often.
PROBE_S = 1.0
# How long a leg that ended stays known as its node's: the runtime's retention of ended legs
# (engine/runtime/runtime.py ENDED_LEG_RETENTION_S), passed by the composition root.
ENDED_TTL_S = 3600.0
_LIMITS = {1: Limit.NUMBER, 2: Limit.ORGANIZATION, 3: Limit.CALL}


def redacted(url: str) -> str:
    """The URL without its credentials, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def node_name(node_id: str | None) -> str:
    """This process's node: the configured id (or the host name), its pid and a random part."""
    return f"{node_id or socket.gethostname()}.{os.getpid()}.{secrets.token_hex(3)}"


class RedisLiveLegs:
    def __init__(
        self,
        client: Redis,
        *,
        prefix: str,
        node: str,
        ttl_s: float,
        where: str,
        url: str = "",
        ended_ttl_s: float = ENDED_TTL_S,
    ) -> None:
        self.client = client
        self.prefix = f"callbridge:{{{prefix}}}:"
        self.node = node
        self.url = url  # where other nodes reach this node's HTTP API (its alive key's value)
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._ended_ms = max(1, round(ended_ttl_s * 1000))
        self._beat_s = ttl_s / 3
        self._where = where
        self._mine: dict[str, Counted] = {}  # the legs this node holds (and so wants counted)
        self._dirty: set[str] = set()  # legs whose hold or release Redis has not taken yet
        self._ended: set[str] = set()  # released legs that ended (not a dial's placeholder)
        self._lock = asyncio.Lock()  # one write at a time, in the order they were asked for
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reachable = True
        self._outage = ""  # why Redis is unreachable, while it is
        self._claim = client.register_script(CLAIM)
        self._write = client.register_script(WRITE)
        self._take_over = client.register_script(TAKE_OVER)
        # Set by the composition root (engine/app.py): the adoption of the legs this node took
        # over from an expired node, answering those it adopted (the others' claims are
        # dropped); and the legs it lost to another node while it was gone (fenced).
        self.on_taken_over: Callable[[list[str]], Awaitable[set[str]]] | None = None
        self.on_lost: Callable[[list[str]], Awaitable[None]] | None = None
        self._adopting: set[asyncio.Task[None]] = set()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str,
        node_id: str | None,
        ttl_s: float,
        node_url: str = "",
        ended_ttl_s: float = ENDED_TTL_S,
    ) -> RedisLiveLegs:
        client = Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )
        node = node_name(node_id)
        return cls(client, prefix=prefix, node=node, ttl_s=ttl_s, where=redacted(url),
                   url=node_url, ended_ttl_s=ended_ttl_s)  # fmt: skip

    def key(self, name: str) -> str:
        return self.prefix + name

    # ---- lifetime --------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self.client.ping()
            async with self._lock:
                await self._register()
        except RedisError as exc:
            raise LiveLegsUnavailable(
                f"CALLBRIDGE_REDIS_URL: Redis at {self._where} does not answer: {exc}",
                field="CALLBRIDGE_REDIS_URL",
            ) from exc
        self._task = asyncio.create_task(self._keep_alive())
        log.info("live-leg counts shared in Redis", redis=self._where, node=self.node,
                 prefix=self.prefix, node_ttl_s=self._ttl_ms / 1000)  # fmt: skip

    async def close(self) -> None:
        """Stop refreshing. The legs still held stay counted: the calls are handed over, and
        the node that adopts them takes their claims; what nobody adopts goes with this node's
        key, one TTL from its last refresh. The key's URL is cleared at once: this node takes
        no more commands, and its calls are for any node that starts to adopt
        (engine/cluster/owners_redis.py reads a node without a URL as not alive)."""
        for task in (self._task, *self._adopting):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.flush()
        with contextlib.suppress(RedisError):  # unreachable: its key lapses with its TTL
            await self.client.set(self.key(f"node:{self.node}:alive"), "", xx=True, keepttl=True)
        await self.client.aclose()

    # ---- claims --------------------------------------------------------------------------
    async def claim(self, leg_id: str, claim: Claim) -> Limit | None:
        args = [self.prefix, self.node, leg_id, claim.org_id, *_place_args(claim.place)]
        args += [claim.channels, claim.max_legs, claim.call or ""]
        if not self._reachable:
            raise LiveLegsUnavailable(self._unavailable(self._outage))
        async with self._lock:
            try:
                await self._write_dirty()  # this node's releases first: their slots are free
                result = await self._claim(args=args)
                if result == -1:  # this node's key had lapsed: register, then claim
                    await self._register()
                    result = await self._claim(args=args)
            except RedisError as exc:
                self._lost(exc)
                raise LiveLegsUnavailable(self._unavailable(self._outage)) from exc
            self._found()
            if result == 0:
                self._mine[leg_id] = Counted(claim.org_id, claim.place, claim.call)
                return None
        return _LIMITS[int(result)]

    def hold(
        self,
        leg_id: str,
        *,
        org_id: int,
        place: Place | None = None,
        replaces: str | None = None,
        call: str | None = None,
    ) -> None:
        if replaces is not None and self._mine.pop(replaces, None) is not None:
            self._dirty.add(replaces)
        self._mine[leg_id] = Counted(org_id, place, call)
        self._ended.discard(leg_id)
        self._dirty.add(leg_id)
        self._wake.set()

    def release(self, leg_id: str) -> None:
        if self._mine.pop(leg_id, None) is not None:
            self._ended.add(leg_id)
            self._dirty.add(leg_id)
            self._wake.set()

    def forget(self, leg_id: str) -> None:
        # Not written: a write would drop the claim the other node's hold is about to move.
        self._mine.pop(leg_id, None)
        self._dirty.discard(leg_id)

    async def flush(self) -> None:
        async with self._lock:
            try:
                await self._write_dirty()
                if not self._reachable:
                    await self.client.ping()  # nothing was written, perhaps: is Redis back?
            except RedisError as exc:
                self._lost(exc)  # kept dirty: written once Redis answers
            else:
                self._found()

    # ---- counts ----------------------------------------------------------------------------
    async def count_for_bridge(self, bridge_id: int) -> int:
        return await self._count(f"bridge:{bridge_id}")

    async def count_for_number(self, number: str) -> int:
        return await self._count(f"number:{number}")

    async def count_for_org(self, org_id: int) -> int:
        return await self._count(f"org:{org_id}")

    async def _count(self, name: str) -> int:
        await self.flush()
        try:
            return int(await self.client.scard(self.key(name)))
        except RedisError as exc:
            self._lost(exc)
            raise LiveLegsUnavailable(self._unavailable(self._outage)) from exc

    # ---- writing (under ``_lock``) -------------------------------------------------------------
    async def _write_dirty(self) -> None:
        if not self._dirty:
            return
        legs, self._dirty = self._dirty, set()
        try:
            if await self._write_legs(legs, ttl_ms=0) == -1:
                await self._register(legs)
        except BaseException:  # a Redis fault, or cancelled: written next time
            self._dirty |= legs
            raise

    async def _register(self, releases: set[str] | frozenset[str] = frozenset()) -> None:
        """Alive for one TTL, with every leg this node holds counted (again)."""
        await self._write_legs(set(self._mine) | releases, ttl_ms=self._ttl_ms)

    async def _write_legs(self, legs: set[str], *, ttl_ms: int) -> int:
        holds = [leg for leg in legs if leg in self._mine]
        args: list[str | int] = [self.prefix, self.node, ttl_ms, self.url, self._ended_ms]
        args.append(len(holds))
        for leg in holds:
            counted = self._mine[leg]
            args += [leg, counted.org_id, *_place_args(counted.place), counted.call or ""]
        ended = [leg for leg in legs if leg in self._ended]
        args += [len(ended), *ended]
        args += [leg for leg in legs if leg not in self._mine and leg not in self._ended]
        reply = await self._write(args=args)
        if isinstance(reply, list):  # registering: the legs another node took meanwhile
            self._lose([str(leg) for leg in reply])
            reply = 0
        if reply == 0:
            self._ended.difference_update(ended)
        return int(reply)

    # ---- liveness ----------------------------------------------------------------------------
    async def _keep_alive(self) -> None:
        """Write holds and releases as they come; every third of the TTL refresh this node's
        key and drop the claims of nodes whose key expired."""
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + self._beat_s
        while True:
            wait_s = max(0.0, next_beat - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait_s if self._reachable else PROBE_S)
            self._wake.clear()
            beat = loop.time() >= next_beat or not self._reachable
            if beat:
                next_beat = loop.time() + self._beat_s
            try:
                async with self._lock:
                    await self._write_dirty()
                    if beat:
                        await self._beat()
            except RedisError as exc:
                self._lost(exc)
            except Exception:  # a fault of ours must not stop the refreshing: logged, going on
                log.exception("live-leg registry: refreshing failed", node=self.node)
            else:
                self._found()

    async def refresh(self) -> None:
        """What the keep-alive task does every third of the TTL, now, and then waits for the
        adoption of what it took over and the letting go of what it lost."""
        async with self._lock:
            await self._write_dirty()
            await self._beat()
        await asyncio.gather(*self._adopting, return_exceptions=True)

    async def _beat(self) -> None:
        """Refresh this node's key (registering again if it had lapsed), then sweep."""
        alive = self.key(f"node:{self.node}:alive")
        if not await self.client.set(alive, self.url, px=self._ttl_ms, xx=True):
            log.warning("this node's liveness had lapsed in Redis: its legs are counted again",
                        node=self.node, legs=len(self._mine))  # fmt: skip
            await self._register()
        taken = [str(leg) for leg in await self._take_over(args=[self.prefix, self.node])]
        if not taken:
            return
        if self.on_taken_over is None:  # nobody here to adopt them: their claims go
            self._dirty.update(taken)
            await self._write_dirty()
            log.info("claims of expired nodes dropped", legs=len(taken))
            return
        log.info("legs of expired nodes taken over", legs=len(taken), node=self.node)
        self._spawn(self._adopt(self.on_taken_over, taken))

    async def _adopt(
        self, adopt: Callable[[list[str]], Awaitable[set[str]]], taken: list[str]
    ) -> None:
        """The taken legs to the runtime to adopt; the claims of those it did not adopt
        dropped, as an expired node's claims were before nodes took over."""
        adopted: set[str] = set()
        try:
            adopted = await adopt(taken)
        except Exception:  # logged; their claims go as for nobody's legs
            log.exception("taking over an expired node's legs failed", legs=len(taken))
        left = [leg for leg in taken if leg not in adopted and leg not in self._mine]
        if left:
            self._dirty.update(left)  # neither held nor ended here: dropped whoever holds them
            self._wake.set()
            log.info("claims of expired nodes dropped", legs=len(left))

    def _lose(self, lost: list[str]) -> None:
        """Legs another node took over while this one was gone: not this node's any more."""
        if not lost:
            return
        for leg in lost:
            self.forget(leg)
        log.warning("legs taken over by another node while this node was gone: let go",
                    node=self.node, legs=len(lost))  # fmt: skip
        if self.on_lost is not None:
            self._spawn(self.on_lost(lost))

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._adopting.add(task)
        task.add_done_callback(self._adopting.discard)

    def _unavailable(self, error: str) -> str:
        return f"live-leg counts unavailable (Redis at {self._where}: {error})"

    def _lost(self, exc: Exception) -> None:
        self._outage = str(exc) or type(exc).__name__
        if self._reachable:
            self._reachable = False
            log.warning("Redis unreachable: new calls are refused until it answers, live calls "
                        "go on", redis=self._where, error=self._outage)  # fmt: skip

    def _found(self) -> None:
        if not self._reachable:
            self._reachable = True
            log.info("Redis answers again: new calls are admitted", redis=self._where)


def _place_args(place: Place | None) -> list[str | int]:
    return ["", ""] if place is None else [place.bridge_id, place.number]
