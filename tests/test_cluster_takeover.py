"""A node cut off or dead: a running node takes its calls over, and the node, should it come
back, is fenced from them (issue 16, point 5).

Two engine nodes on one PostgreSQL database and one Redis (tests/nodes.py). A bridged Telnyx
call lives on node a; a stops refreshing its liveness in Redis (what a kill -9, a lost machine
or a network cut look like to the others) and its key expires. Node b's next refresh takes the
call's legs, adopts them from the store and asks Telnyx for new media streams to itself: the
callers hear each other again (per 20 ms frame), the application gets no call.hangup. Node a,
still running with the legs in memory, can store nothing more about them: its next input on
them is refused (503) and it lets them go; its commands then reach b. The same with real
processes and a kill -9 is tests/test_cluster_failover_e2e.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from adapters.simulators import CallState
from engine.admission.live_redis import RedisLiveLegs
from engine.api.keys import LIVE_LEGS
from engine.cluster.owners_redis import RedisLegOwners
from tests.e2e_checks import hearing, hearing_since, voices
from tests.nodes import Cluster, Node, two_nodes
from tests.redis_server import REDIS_URL
from tests.test_cluster_rooms import (
    TELNYX_NUMBER,
    answer_through,
    call_events,
    settled,
    stream_up,
    telnyx_caller,
)
from tests.test_cluster_routing import send
from tests.test_cluster_webhooks import holds

pytestmark = pytest.mark.slow_family  # two engines, PostgreSQL and Redis


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with two_nodes(tmp_path) as made:
        yield made


def registry(node: Node) -> RedisLiveLegs:
    live = node.app[LIVE_LEGS]
    assert isinstance(live, RedisLiveLegs)
    return live


async def cut_off(node: Node) -> None:
    """The node stops refreshing its liveness and its key expires: to every other node it is
    gone, while it goes on running (a network cut; a kill -9 looks the same from outside)."""
    live = registry(node)
    assert live._task is not None
    live._task.cancel()
    redis = Redis.from_url(REDIS_URL)
    try:
        await redis.delete(live.key(f"node:{live.node}:alive"))  # its TTL, run out
    finally:
        await redis.aclose()


async def test_a_cut_off_nodes_bridged_call_is_taken_over_and_the_node_is_fenced(
    cluster: Cluster,
) -> None:
    a, b = cluster.nodes
    await cluster.bridge(TELNYX_NUMBER)
    answer_through(cluster, a)
    voice_1, voice_2 = voices(2)
    (call_1, leg_1), (call_2, leg_2) = [
        await telnyx_caller(cluster, 0, voice) for voice in (voice_1, voice_2)
    ]
    token = cluster.org.token
    bridge = f"/v2/calls/{leg_1}/actions/bridge"
    assert await send(a, token, "POST", bridge, {"call_control_id": leg_2}) == (
        200,
        {"data": {"result": "ok"}},
    )
    await asyncio.gather(hearing(call_1, [voice_2], voice_1), hearing(call_2, [voice_1], voice_2))

    await cut_off(a)
    await registry(b).refresh()  # b's next refresh: a expired, b takes its calls
    assert holds(b, leg_1) and holds(b, leg_2)
    assert b.runtime.machine.leg(leg_1).room_id == b.runtime.machine.leg(leg_2).room_id
    starts = await asyncio.gather(stream_up(call_1, 2), stream_up(call_2, 2))
    await asyncio.gather(
        hearing_since(call_1, starts[0], [voice_2], voice_1),
        hearing_since(call_2, starts[1], [voice_1], voice_2),
    )

    # a still ran with the legs in memory, but could store nothing more about them: the first
    # input it took on them (their old streams' end, or a command) was refused and it let them
    # go. Its commands then reach b, which carries them out.
    update = f"/v2/calls/{leg_1}/actions/client_state_update"
    state = {"client_state": "dGFrZW4="}
    if holds(a, leg_1):
        status, body = await send(a, token, "PUT", update, state)
        assert status == 503, body
    await a.runtime.settle()
    assert not holds(a, leg_1) and not holds(a, leg_2)
    assert await send(a, token, "PUT", update, state) == (200, {"data": {"result": "ok"}})
    assert b.runtime.machine.leg(leg_1).client_state == "dGFrZW4="
    await settled(cluster)
    for leg_id in (leg_1, leg_2):
        assert call_events(cluster, leg_id) == ["call.initiated", "call.answered", "call.bridged"]


async def test_a_conference_whose_creator_ended_on_a_node_since_gone_is_found_through_any_node(
    tmp_path: Path,
) -> None:
    async with two_nodes(tmp_path) as cluster:
        await cluster.add_node("c")
        a, b, c = cluster.nodes
        await cluster.bridge(TELNYX_NUMBER)
        answer_through(cluster, a)
        said = voices(3)
        calls = [await telnyx_caller(cluster, 0, voice) for voice in said]
        token = cluster.org.token
        made = {"call_control_id": calls[0][1], "name": "standup"}
        status, created = await send(a, token, "POST", "/v2/conferences", made)
        assert status == 200, created
        conference = f"/v2/conferences/{created['data']['id']}"
        for _call, leg_id in calls[1:]:
            status, body = await send(
                a, token, "POST", f"{conference}/actions/join", {"call_control_id": leg_id}
            )
            assert status == 200, body
        # The creator hangs up: the conference goes on with the other two, on a.
        creator_call, creator = calls[0]
        assert (await send(a, token, "POST", f"/v2/calls/{creator}/actions/hangup", {}))[0] == 200
        await creator_call.wait_until(lambda call: call.state is CallState.ENDED, 10.0)
        await a.runtime.settle()
        await registry(a).flush()
        ended = await RedisLegOwners(registry(c)).owner_of(creator)
        assert ended is not None and ended.ended and ended.alive

        await cut_off(a)
        await registry(b).refresh()  # b takes a's calls over, and the conference with them
        assert holds(b, calls[1][1]) and holds(b, calls[2][1])
        through_b = await send(b, token, "GET", conference)
        assert through_b[0] == 200, through_b
        # c keeps nothing of it; the creator's node is gone: a member's node answers.
        assert await send(c, token, "GET", conference) == through_b
