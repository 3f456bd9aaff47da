"""kill -9 of the node that owns a bridged call: another node takes the call over (issue 16,
point 5).

Two ``callbridge serve`` processes (tests/engine_process.py), node1 and node2, on one fresh
PostgreSQL database and one fresh Redis key prefix, each with its own API and media URL and a
liveness TTL of 3 s; the providers' webhooks reach them through one front without call affinity
(tests/nodes.py ``RoundRobin``). A Twilio caller and a Telnyx caller land on node1, the
application answers and bridges them through node1's API with the official telnyx SDK, and they
hear each other (judged per 20 ms frame). node1 is killed with SIGKILL (and taken out of the
front, as its health check would). Within 10 s node2 must hold both legs (their owner in Redis,
their commands answered by node2) and each caller's provider must have been given a new media
stream to node2 (Twilio: the call updated with new TwiML; Telnyx: streaming_start); both callers
hear each other again from then, the application gets no ``call.hangup`` and every webhook once,
in order per leg. A hangup sent through node2's API then ends both legs at their providers, with
one ``call.hangup`` each.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import telnyx
from redis.asyncio import Redis

from adapters.simulators import CallState, SimulatedCall
from tests.e2e_checks import hearing, hearing_since
from tests.engine_process import (
    TELNYX_NUMBER,
    TELNYX_VOICE,
    TWILIO_NUMBER,
    TWILIO_VOICE,
    Engine,
    World,
    bridged_pair,
    new_stream_start,
    pending_deliveries,
    until,
    world_of,
)
from tests.nodes import RoundRobin, ground
from tests.redis_server import REDIS_URL

pytestmark = pytest.mark.slow_family  # two engine processes, PostgreSQL and Redis

NODE_TTL_S = "3"  # a node is taken for dead 3 s after its last refresh (at most 1 s before death)
TAKEOVER_S = 10.0  # issue 16: the call resumes on another node within 10 s of the kill
LEG_EVENTS = ["call.initiated", "call.answered", "call.bridged"]


@dataclass
class Nodes:
    w: World  # its engine is node1, whose API the application uses
    node1: Engine
    node2: Engine
    front: RoundRobin
    prefix: str


def node(tmp_path: Path, name: str, database: str, prefix: str, front: RoundRobin) -> Engine:
    engine = Engine(tmp_path / name, database=database)
    engine.extra_env = {
        "CALLBRIDGE_REDIS_URL": REDIS_URL,
        "CALLBRIDGE_REDIS_PREFIX": prefix,
        "CALLBRIDGE_REDIS_NODE_TTL_S": NODE_TTL_S,
        "CALLBRIDGE_NODE_ID": name,
        "CALLBRIDGE_NODE_URL": engine.base_url,  # where the other node forwards it commands
        # Webhooks come through the front (the URL Twilio signs is the front's on every node);
        # media streams reach each node at its own URL.
        "CALLBRIDGE_PUBLIC_URL": front.base_url,
        "CALLBRIDGE_PUBLIC_MEDIA_URL": media_url(engine),
    }
    return engine


def media_url(engine: Engine) -> str:
    return engine.base_url.replace("http://", "ws://")


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path) -> AsyncIterator[Nodes]:
    async with ground() as shared:
        node1, node2 = (
            node(tmp_path, name, shared.database, shared.prefix, shared.front)
            for name in ("node1", "node2")
        )
        shared.stack.push_async_callback(node2.stop)  # after world_of's end: simulators, node1

        async def start() -> None:
            for engine in (node1, node2):  # one after the other: the first runs the migrations
                await engine.start()
                shared.front.nodes.append(engine.base_url)

        w = await shared.stack.enter_async_context(world_of(node1, start))
        yield Nodes(w, node1, node2, shared.front, shared.prefix)


async def owner_url(prefix: str, leg_id: str) -> str:
    """The API URL of the live node that owns ``leg_id`` in Redis ('' if none is alive)."""
    client = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        keys = f"callbridge:{{{prefix}}}:"
        owner = await client.hget(f"{keys}leg:{leg_id}", "node")
        if not isinstance(owner, str):
            return ""
        url = await client.get(f"{keys}node:{owner}:alive")
        return url if isinstance(url, str) else ""
    finally:
        await client.aclose()


async def call_status(engine: Engine, token: str, leg_id: str) -> tuple[int, bool]:
    """``GET /v2/calls/{leg}`` at ``engine``: its HTTP status and the leg's ``is_alive``."""
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{engine.base_url}/v2/calls/{leg_id}", headers=headers) as reply,
    ):
        body = await reply.json()
        return reply.status, bool(reply.status == 200 and body["data"]["is_alive"])


def streams_to(call: SimulatedCall, engine: Engine) -> list[bool]:
    """For each of the call's media streams, whether it went to ``engine``'s media URL."""
    return [stream.url.startswith(media_url(engine) + "/") for stream in call.streams]


async def test_kill_9_of_the_node_owning_a_bridged_call_resumes_it_on_the_other_node(
    tmp_path: Path,
) -> None:
    async with two_nodes(tmp_path) as cluster:
        w, node1, node2 = cluster.w, cluster.node1, cluster.node2
        cluster.front.plan.extend([0, 0])  # both callers' first webhooks to node1
        twilio_call, telnyx_call = await bridged_pair(w)
        legs = w.legs[TWILIO_NUMBER], w.legs[TELNYX_NUMBER]
        await asyncio.gather(
            hearing(twilio_call, [TELNYX_VOICE], TWILIO_VOICE),
            hearing(telnyx_call, [TWILIO_VOICE], TELNYX_VOICE),
        )
        for leg_id in legs:
            assert await owner_url(cluster.prefix, leg_id) == node1.base_url
        assert streams_to(twilio_call, node1) == streams_to(telnyx_call, node1) == [True]

        cluster.front.down.add(0)
        await node1.kill()
        async with asyncio.timeout(TAKEOVER_S):
            starts = await asyncio.gather(
                new_stream_start(twilio_call, 2, TAKEOVER_S),
                new_stream_start(telnyx_call, 2, TAKEOVER_S),
            )
            for leg_id in legs:
                assert await owner_url(cluster.prefix, leg_id) == node2.base_url, node2.logs()
                assert await call_status(node2, w.org.token, leg_id) == (200, True)
        assert streams_to(twilio_call, node2)[1:] == streams_to(telnyx_call, node2)[1:] == [True]
        await asyncio.gather(
            hearing_since(twilio_call, starts[0], [TELNYX_VOICE], TWILIO_VOICE),
            hearing_since(telnyx_call, starts[1], [TWILIO_VOICE], TELNYX_VOICE),
        )
        assert twilio_call.state is not CallState.ENDED and telnyx_call.state is not CallState.ENDED
        for leg_id in legs:
            assert w.receiver.call_events(leg_id) == LEG_EVENTS, node2.logs()

        # The call is node2's: a hangup through its API ends both legs at their providers.
        sdk = telnyx.AsyncTelnyx(
            api_key=w.org.token, base_url=node2.base_url + "/v2", max_retries=0
        )
        try:
            await sdk.calls.actions.hangup(legs[0])  # the Twilio caller's
        finally:
            await sdk.close()
        await twilio_call.wait_for(CallState.ENDED)
        await telnyx_call.wait_for(CallState.ENDED)

        async def all_delivered() -> bool:
            return await pending_deliveries(node2, w.org.token) == 0

        await w.receiver.wait_until(
            lambda: all(w.receiver.of("call.hangup", leg_id) for leg_id in legs), "call.hangup"
        )
        await until(all_delivered, "every webhook delivered")
        for leg_id in legs:
            assert w.receiver.call_events(leg_id) == [*LEG_EVENTS, "call.hangup"], node2.logs()
