"""Each live leg has an owner node, and any node answers a call command (issue 16, points 2, 4).

Two (then more) engine nodes on one PostgreSQL database and one Redis (tests/nodes.py). A
Telnyx call lands on node a; its commands sent to node b are carried out by a, with a's reply
and a's webhooks; a node that starts while a lives adopts none of a's calls.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from adapters.simulators import TelnyxCall
from adapters.telnyx.kit import TELNYX_KIT
from engine.admission.live_redis import RedisLiveLegs
from engine.api.keys import LIVE_LEGS
from engine.errors import NotFound
from tests.nodes import Cluster, Node, two_nodes
from tests.platform_client import make_org
from tests.redis_server import REDIS_URL
from tests.telnyx_harness import caller

pytestmark = pytest.mark.slow_family  # two engines, PostgreSQL and Redis
NUMBER = "+14155550170"
WAIT_S = 10.0


async def call_on_a(cluster: Cluster) -> tuple[TelnyxCall, str]:
    """A Telnyx call delivered to node a, announced to the application; its call_control_id."""
    await cluster.bridge(NUMBER)
    cluster.balancer.plan.append(0)
    call = await cluster.sim.place_inbound_call(caller(), NUMBER)
    await call.wait_until(
        lambda c: any(e.kind == "call.initiated" and e.status == 200 for e in c.events), WAIT_S
    )
    leg = cluster.nodes[0].app[TELNYX_KIT].legs.of_telnyx(call.call_control_id)
    assert leg is not None
    await cluster.app_server.wait_for("call.initiated", leg.leg_id, WAIT_S)
    return call, leg.leg_id


async def send(
    node: Node, token: str, method: str, path: str, body: Any = None
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"}
    async with node.client.request(method, path, json=body, headers=headers) as reply:
        return reply.status, await reply.json()


def without_duration(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "data": {k: v for k, v in body["data"].items() if k != "call_duration"}}


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with two_nodes(tmp_path) as made:
        yield made


async def alive_key(node: Node) -> str:
    live = node.app[LIVE_LEGS]
    assert isinstance(live, RedisLiveLegs)
    return live.key(f"node:{live.node}:alive")


async def test_commands_sent_to_the_other_node_are_carried_out_by_the_owner(
    cluster: Cluster,
) -> None:
    a, b = cluster.nodes
    call, leg_id = await call_on_a(cluster)
    token = cluster.org.token
    with pytest.raises(NotFound):
        b.runtime.machine.leg(leg_id)  # b does not hold it

    status_a, body_a = await send(a, token, "GET", f"/v2/calls/{leg_id}")
    status_b, body_b = await send(b, token, "GET", f"/v2/calls/{leg_id}")
    assert (status_b, without_duration(body_b)) == (status_a, without_duration(body_a))
    assert status_b == 200 and body_b["data"]["is_alive"] is True
    assert abs(body_b["data"]["call_duration"] - body_a["data"]["call_duration"]) <= 1

    # client_state_update (PUT) and answer through b: a's leg changes, a's webhooks go.
    state = {"client_state": "aGVsbG8="}
    path = f"/v2/calls/{leg_id}/actions/client_state_update"
    assert await send(b, token, "PUT", path, state) == (200, {"data": {"result": "ok"}})
    assert a.runtime.machine.leg(leg_id).client_state == "aGVsbG8="
    answer = f"/v2/calls/{leg_id}/actions/answer"
    assert await send(b, token, "POST", answer, {}) == (200, {"data": {"result": "ok"}})
    await cluster.app_server.wait_for("call.answered", leg_id, WAIT_S)

    hangup = f"/v2/calls/{leg_id}/actions/hangup"
    assert await send(b, token, "POST", hangup, {}) == (200, {"data": {"result": "ok"}})
    await cluster.app_server.wait_for("call.hangup", leg_id, WAIT_S)
    assert not a.runtime.machine.is_alive(leg_id)
    for node in cluster.nodes:
        await node.runtime.settle()  # every webhook queued so far delivered or in flight
    for event in ("call.answered", "call.hangup"):
        assert len(cluster.app_server.of(event, leg_id)) == 1, event
    assert call.hangup is not None  # ended at the simulator

    # The ended leg is a's still: the same 90018 and the same status through b.
    assert await send(b, token, "POST", hangup, {}) == await send(a, token, "POST", hangup, {})
    status_b, body_b = await send(b, token, "GET", f"/v2/calls/{leg_id}")
    status_a, body_a = await send(a, token, "GET", f"/v2/calls/{leg_id}")
    assert (status_b, body_b) == (status_a, body_a)
    assert body_b["data"]["is_alive"] is False


async def test_another_organizations_token_gets_the_same_404_through_either_node(
    cluster: Cluster,
) -> None:
    a, b = cluster.nodes
    _call, leg_id = await call_on_a(cluster)
    other = await make_org(a.client, "other", "Other Inc")
    for method, path in (
        ("GET", f"/v2/calls/{leg_id}"),
        ("POST", f"/v2/calls/{leg_id}/actions/hangup"),
    ):
        on_a = await send(a, other.token, method, path, {})
        assert on_a[0] == 404, on_a
        assert await send(b, other.token, method, path, {}) == on_a
    assert a.runtime.machine.is_alive(leg_id), "another organization changed nothing"
    assert await send(b, "not-a-token", "GET", f"/v2/calls/{leg_id}") == await send(
        a, "not-a-token", "GET", f"/v2/calls/{leg_id}"
    )


async def test_an_owner_gone_or_unreachable_is_answered_503_in_the_envelope(
    cluster: Cluster,
) -> None:
    a, b = cluster.nodes
    _call, leg_id = await call_on_a(cluster)
    key = await alive_key(a)
    await a.client.close()  # a stops (hands its calls over): its URL leaves Redis

    status, body = await send(b, cluster.org.token, "GET", f"/v2/calls/{leg_id}")
    assert status == 503
    (error,) = body["errors"]
    assert error["code"] == "10007" and error["title"] == "Service unavailable"
    assert leg_id in error["detail"] and "a." in error["detail"]
    assert "not alive" in error["detail"]

    # Alive in Redis but nobody answers at its URL (a port nothing listens on).
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await redis.set(key, "http://127.0.0.1:9", px=60_000)
    finally:
        await redis.aclose()
    path = f"/v2/calls/{leg_id}/actions/hangup"
    status, body = await send(b, cluster.org.token, "POST", path, {})
    assert status == 503
    (error,) = body["errors"]
    assert "cannot be reached" in error["detail"] and leg_id in error["detail"]


async def test_a_starting_node_adopts_only_the_calls_no_live_node_holds(cluster: Cluster) -> None:
    a, b = cluster.nodes
    _call, leg_id = await call_on_a(cluster)
    await a.runtime.settle()

    c = await cluster.add_node("c")  # a is alive: its call stays with it
    with pytest.raises(NotFound):
        c.runtime.machine.leg(leg_id)
    status, body = await send(c, cluster.org.token, "GET", f"/v2/calls/{leg_id}")
    assert status == 200 and body["data"]["is_alive"] is True  # a's answer, through c

    await a.client.close()  # a gone: the next node to start takes its call
    d = await cluster.add_node("d")
    assert d.runtime.machine.is_alive(leg_id)
    await d.runtime.settle()  # its hold (the leg's claim, now d's) written to Redis
    status, body = await send(b, cluster.org.token, "GET", f"/v2/calls/{leg_id}")
    assert status == 200 and body["data"]["is_alive"] is True  # d's answer, through b
    assert await b.app[LIVE_LEGS].count_for_number(NUMBER) == 1


async def test_conference_commands_sent_to_the_other_node_are_carried_out_where_its_room_is(
    cluster: Cluster,
) -> None:
    a, b = cluster.nodes
    _call, leg_id = await call_on_a(cluster)
    token = cluster.org.token
    answer = f"/v2/calls/{leg_id}/actions/answer"
    assert await send(a, token, "POST", answer, {}) == (200, {"data": {"result": "ok"}})
    await cluster.app_server.wait_for("call.answered", leg_id, WAIT_S)

    # Created through b from a's leg: made on a (its room is a's), b keeps nothing.
    status, created = await send(b, token, "POST", "/v2/conferences",
                                 {"call_control_id": leg_id, "name": "standup"})  # fmt: skip
    assert status == 200, created
    conference_id = created["data"]["id"]
    assert a.runtime.machine.keeps_conference(conference_id)
    assert not b.runtime.machine.keeps_conference(conference_id)
    await a.runtime.settle()  # its record stored: what b finds the creator by

    path = f"/v2/conferences/{conference_id}"
    for route in (path, f"{path}/participants", f"{path}/participants/{leg_id}"):
        on_a = await send(a, token, "GET", route)
        assert on_a[0] == 200 and await send(b, token, "GET", route) == on_a, route
    mute = f"{path}/actions/mute"
    assert await send(b, token, "POST", mute, {}) == (200, {"data": {"result": "ok"}})
    assert a.runtime.machine.leg(leg_id).muted
    other = await make_org(a.client, "other", "Other Inc")
    assert await send(b, other.token, "GET", path) == await send(a, other.token, "GET", path)
    assert (await send(b, token, "GET", "/v2/conferences/nope"))[0] == 404  # answered here
    end = f"{path}/actions/end"
    assert await send(b, token, "POST", end, {}) == (200, {"data": {"result": "ok"}})
    status, ended = await send(b, token, "GET", path)
    assert status == 200 and ended["data"]["status"] == "completed"
