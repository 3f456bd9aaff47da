"""Rooms live on one node: a bridge or a conference joining legs of different nodes moves the
legs to one node first (issue 16, point 3; engine/cluster/handover.py).

Three engine nodes on one PostgreSQL database and one Redis (tests/nodes.py), each with its own
media URL; the providers' webhooks reach them through one front. Callers land on different
nodes, the application drives them through yet another node, and every caller must hear the
others (judged per 20 ms frame, from the moment a moved leg's new stream is up), with each
call.* webhook once and in order and no call.hangup.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from adapters.simulators import Callee, CallState, SimulatedCall, TelnyxCall, ToneSource
from adapters.simulators.twilio_calls import TwilioCall
from adapters.telnyx.kit import TELNYX_KIT
from benchmarks.loadtest.judge import Voice, VoiceSource
from engine.cluster.handover import LEG_PATH
from engine.cluster.node_auth import HEADER
from tests.e2e_checks import Tap, hearing, hearing_since, tap, voices
from tests.nodes import Cluster, Node, two_nodes
from tests.platform_client import make_org
from tests.telnyx_harness import caller
from tests.test_cluster_routing import send
from tests.test_cluster_webhooks import holds, twilio_leg

pytestmark = pytest.mark.slow_family  # three engines, PostgreSQL and Redis
TWILIO_NUMBER, TELNYX_NUMBER = "+14155550190", "+14155550191"
WAIT_S = 10.0


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with two_nodes(tmp_path) as made:
        await made.add_node("c")
        yield made


def answer_through(cluster: Cluster, node: Node) -> None:
    """The application answers each incoming leg through ``node``'s API."""

    async def on_event(data: dict[str, Any]) -> None:
        if data["event_type"] == "call.initiated" and data["payload"]["direction"] == "incoming":
            leg_id = data["payload"]["call_control_id"]
            status, body = await send(
                node, cluster.org.token, "POST", f"/v2/calls/{leg_id}/actions/answer", {}
            )
            assert status == 200, body

    cluster.app_server.on_event = on_event


async def telnyx_caller(cluster: Cluster, node: int, voice: Voice) -> tuple[TelnyxCall, str]:
    """A Telnyx caller whose call lands on ``node``, answered and streaming; its leg."""
    cluster.balancer.plan.append(node)
    call = await cluster.sim.place_inbound_call(caller(), TELNYX_NUMBER, source=VoiceSource(voice))
    tap(call)
    await call.wait_until(lambda c: c.state is CallState.STREAMING, WAIT_S)
    leg = cluster.nodes[node].app[TELNYX_KIT].legs.of_telnyx(call.call_control_id)
    assert leg is not None
    return call, leg.leg_id


async def twilio_caller(cluster: Cluster, node: int, voice: Voice) -> tuple[TwilioCall, str]:
    cluster.balancer.plan.append(node)
    call = await cluster.twilio.place_inbound_call(
        caller(), TWILIO_NUMBER, source=VoiceSource(voice)
    )
    tap(call)
    await call.wait_until(lambda c: c.state is CallState.STREAMING, WAIT_S)
    return call, twilio_leg(cluster.nodes[node], call)


async def callers_on_a_and_b(
    cluster: Cluster, voice_a: Voice, voice_b: Voice
) -> tuple[tuple[TelnyxCall, str], tuple[TelnyxCall, str]]:
    """A Telnyx caller on node a and one on node b, answered through a."""
    await cluster.bridge(TELNYX_NUMBER)
    answer_through(cluster, cluster.nodes[0])
    return await telnyx_caller(cluster, 0, voice_a), await telnyx_caller(cluster, 1, voice_b)


async def stream_up(call: SimulatedCall, streams: int) -> int:
    """The tap frame at which the call's ``streams``-th media stream was up."""
    await call.wait_until(
        lambda c: len(c.streams) >= streams and c.state is CallState.STREAMING, WAIT_S
    )
    assert isinstance(call.playout, Tap)
    return len(call.playout.frames)


def call_events(cluster: Cluster, leg_id: str) -> list[str]:
    return cluster.app_server.call_events(leg_id)


async def settled(cluster: Cluster) -> None:
    for node in cluster.nodes:
        await node.runtime.settle()


async def test_a_twilio_and_a_telnyx_caller_on_two_nodes_bridged_through_a_third_hear_each_other(
    cluster: Cluster,
) -> None:
    a, b, c = cluster.nodes
    await cluster.bridge(TWILIO_NUMBER, twilio=True)
    await cluster.bridge(TELNYX_NUMBER)
    answer_through(cluster, c)
    twilio_voice, telnyx_voice = voices(2)
    twilio_call, twilio_id = await twilio_caller(cluster, 0, twilio_voice)  # on a
    telnyx_call, telnyx_id = await telnyx_caller(cluster, 1, telnyx_voice)  # on b

    # Sent to c; carried out by b, the Telnyx leg's owner, which takes the Twilio leg from a.
    path = f"/v2/calls/{telnyx_id}/actions/bridge"
    status, body = await send(c, cluster.org.token, "POST", path, {"call_control_id": twilio_id})
    assert (status, body) == (200, {"data": {"result": "ok"}})
    assert holds(b, twilio_id) and holds(b, telnyx_id)
    assert not holds(a, twilio_id) and not holds(c, twilio_id)
    assert b.runtime.machine.leg(twilio_id).room_id == b.runtime.machine.leg(telnyx_id).room_id

    # The Twilio call's media moved to b (new TwiML, a new <Stream> to b's media URL).
    start = await stream_up(twilio_call, 2)
    assert isinstance(telnyx_call.playout, Tap)
    await asyncio.gather(
        hearing_since(twilio_call, start, [telnyx_voice], twilio_voice),
        hearing_since(telnyx_call, len(telnyx_call.playout.frames), [twilio_voice], telnyx_voice),
    )
    await settled(cluster)
    for leg_id in (twilio_id, telnyx_id):
        assert call_events(cluster, leg_id) == ["call.initiated", "call.answered", "call.bridged"]

    # The Twilio leg is b's now: its commands and Twilio's webhooks go there, from any node.
    status, _ = await send(a, cluster.org.token, "POST", f"/v2/calls/{twilio_id}/actions/hangup")
    assert status == 200
    await cluster.app_server.wait_for("call.hangup", twilio_id, WAIT_S)
    await cluster.app_server.wait_for("call.hangup", telnyx_id, WAIT_S)  # no park: hung up
    await settled(cluster)
    assert call_events(cluster, twilio_id)[-1] == "call.hangup"
    for call in (twilio_call, telnyx_call):
        await call.wait_until(lambda c: c.state is CallState.ENDED, WAIT_S)  # at the providers


async def test_a_conference_gathers_members_that_arrived_on_all_three_nodes(
    cluster: Cluster,
) -> None:
    nodes = cluster.nodes
    await cluster.bridge(TELNYX_NUMBER)
    answer_through(cluster, nodes[2])
    said = voices(3)
    calls = [await telnyx_caller(cluster, i, said[i]) for i in range(3)]
    token = cluster.org.token

    # Created through b from a's leg: made on a. Joined through c and b: carried out on a.
    status, created = await send(nodes[1], token, "POST", "/v2/conferences",
                                 {"call_control_id": calls[0][1], "name": "all-hands"})  # fmt: skip
    assert status == 200, created
    conference = created["data"]["id"]
    join = f"/v2/conferences/{conference}/actions/join"
    for via, (_call, leg_id) in ((nodes[2], calls[1]), (nodes[1], calls[2])):
        status, body = await send(via, token, "POST", join, {"call_control_id": leg_id})
        assert status == 200, body
    for _call, leg_id in calls:
        assert holds(nodes[0], leg_id) and not holds(nodes[1], leg_id)
        assert not holds(nodes[2], leg_id)
    # Listed alike by every node (from the store: each node keeps only its own).
    lists = [await send(node, token, "GET", "/v2/conferences") for node in nodes]
    assert lists[0][0] == 200 and [c["id"] for c in lists[0][1]["data"]] == [conference]
    assert lists[1] == lists[0] and lists[2] == lists[0]

    starts = list(await asyncio.gather(*(stream_up(call, 2) for call, _ in calls[1:])))
    first = calls[0][0]
    assert isinstance(first.playout, Tap)
    starts.insert(0, len(first.playout.frames))
    await asyncio.gather(
        *(
            hearing_since(call, start, others(said, i), said[i])
            for i, ((call, _leg), start) in enumerate(zip(calls, starts, strict=True))
        )
    )
    await settled(cluster)
    for _call, leg_id in calls:
        assert "call.hangup" not in call_events(cluster, leg_id)


def others(said: Sequence[Voice], i: int) -> list[Voice]:
    return [voice for j, voice in enumerate(said) if j != i]


async def test_a_leg_that_cannot_move_is_refused_with_its_reason_or_the_other_leg_moves(
    cluster: Cluster,
) -> None:
    a, b, _c = cluster.nodes
    voice_a, voice_b = voices(2)
    (call_a, leg_a), (call_b, leg_b) = await callers_on_a_and_b(cluster, voice_a, voice_b)
    token = cluster.org.token
    record = {"format": "wav", "channels": "single"}
    for leg_id in (leg_a, leg_b):
        status, body = await send(a, token, "POST", f"/v2/calls/{leg_id}/actions/record_start",
                                  record)  # fmt: skip
        assert status == 200, body

    # Both recorded: neither moves, and the answer says why for each.
    bridge = f"/v2/calls/{leg_a}/actions/bridge"
    status, body = await send(b, token, "POST", bridge, {"call_control_id": leg_b})
    assert status == 422, body
    (error,) = body["errors"]
    assert error["code"] == "90018" and error["detail"].count("it is being recorded") == 2
    assert holds(a, leg_a) and holds(b, leg_b)

    # a's leg no longer recorded: it goes to b (b's leg stays, its recording there), bridged.
    status, body = await send(a, token, "POST", f"/v2/calls/{leg_a}/actions/record_stop", {})
    assert status == 200, body
    await cluster.app_server.wait_for("call.recording.saved", leg_a, WAIT_S)
    status, body = await send(b, token, "POST", bridge, {"call_control_id": leg_b})
    assert (status, body) == (200, {"data": {"result": "ok"}})
    assert holds(b, leg_a) and not holds(a, leg_a)
    start = await stream_up(call_a, 2)
    assert isinstance(call_b.playout, Tap)
    await asyncio.gather(
        hearing_since(call_a, start, [voice_b], voice_a),
        hearing_since(call_b, len(call_b.playout.frames), [voice_a], voice_b),
    )


async def test_node_requests_need_the_deployments_signature(cluster: Cluster) -> None:
    a, b, _c = cluster.nodes
    await cluster.bridge(TELNYX_NUMBER)
    answer_through(cluster, a)
    _call, leg_id = await telnyx_caller(cluster, 0, voices(1)[0])
    path = LEG_PATH.format(leg_id=leg_id) + "/hand-over"
    body = {"org_id": cluster.org.org_id, "node": "b", "url": b.base_url}
    for headers in ({}, {HEADER: "t=1,v1=00"}):
        async with a.client.post(path, json=body, headers=headers) as reply:
            assert reply.status == 401, await reply.text()
    assert holds(a, leg_id) and not holds(b, leg_id)


async def test_another_organizations_bridge_moves_nothing(cluster: Cluster) -> None:
    a, b, _c = cluster.nodes
    (_call_a, leg_a), (_call_b, leg_b) = await callers_on_a_and_b(cluster, *voices(2))
    other = await make_org(a.client, "other", "Other Inc")
    bridge = f"/v2/calls/{leg_b}/actions/bridge"
    on_b = await send(b, other.token, "POST", bridge, {"call_control_id": leg_a})
    assert on_b[0] == 404, on_b
    assert holds(a, leg_a) and holds(b, leg_b) and not holds(b, leg_a)
    # Its own legs, the other leg another organization's: 404 too, as on one node.
    assert (await send(b, other.token, "POST", bridge, {"call_control_id": leg_a}))[0] == 404


async def test_a_dial_joining_a_live_leg_is_placed_by_that_legs_node(cluster: Cluster) -> None:
    a, _b, c = cluster.nodes
    slug = await cluster.bridge(TELNYX_NUMBER)
    answer_through(cluster, a)
    _call, leg_id = await telnyx_caller(cluster, 0, voices(1)[0])
    callee = "+14155550192"
    cluster.sim.set_callee(callee, Callee(source=lambda: ToneSource(1000)))
    body = {"connection_id": slug, "to": callee, "from": TELNYX_NUMBER, "link_to": leg_id,
            "bridge_on_answer": True}  # fmt: skip
    status, reply = await send(c, cluster.org.token, "POST", "/v2/calls", body)
    assert status == 200, reply
    new_leg = reply["data"]["call_control_id"]
    assert holds(a, new_leg) and not holds(c, new_leg)  # born where the leg it joins lives
    await cluster.app_server.wait_for("call.bridged", new_leg, WAIT_S)
    assert a.runtime.machine.leg(new_leg).room_id == a.runtime.machine.leg(leg_id).room_id


async def test_a_bridges_conference_callers_are_taken_where_its_room_is(
    cluster: Cluster,
) -> None:
    nodes = cluster.nodes
    slug = await cluster.bridge(TELNYX_NUMBER, application=False)  # callbridge answers them
    await cluster.connect(slug, TWILIO_NUMBER, twilio=True)
    said = voices(3)
    calls: list[SimulatedCall] = []
    for node, voice in zip((0, 1, 2), said, strict=True):
        cluster.balancer.plan.append(node)  # each caller's first webhook to another node
        if node == 1:
            call: SimulatedCall = await cluster.twilio.place_inbound_call(
                caller(), TWILIO_NUMBER, source=VoiceSource(voice)
            )
        else:
            call = await cluster.sim.place_inbound_call(
                caller(), TELNYX_NUMBER, source=VoiceSource(voice)
            )
        tap(call)
        await call.wait_until(lambda c: c.state is CallState.STREAMING, WAIT_S)
        calls.append(call)
    await asyncio.gather(*(hearing(call, others(said, i), said[i]) for i, call in enumerate(calls)))
    # All taken by node a, where the first made the bridge's conference room: one room.
    legs = [leg for leg in nodes[0].runtime.machine.snapshot().legs if leg.is_alive]
    assert len(legs) == 3 and len({leg.room_id for leg in legs}) == 1
    for other in nodes[1:]:
        assert not [leg for leg in other.runtime.machine.snapshot().legs if leg.is_alive]


async def test_a_bridges_first_callers_reaching_two_nodes_at_once_meet_in_one_room(
    cluster: Cluster,
) -> None:
    # Neither caller's leg is counted against the bridge when the other's webhook is routed:
    # the first node to ask claims the bridge's room, and the other caller is passed to it.
    nodes = cluster.nodes
    await cluster.bridge(TELNYX_NUMBER, application=False)  # callbridge answers them
    said = voices(2)
    cluster.balancer.plan += [0, 1]  # the first webhook to reach the front to a, the next to b
    calls: list[SimulatedCall] = list(
        await asyncio.gather(
            *(
                cluster.sim.place_inbound_call(caller(), TELNYX_NUMBER, source=VoiceSource(v))
                for v in said
            )
        )
    )
    for call in calls:
        tap(call)
    await asyncio.gather(
        *(call.wait_until(lambda c: c.state is CallState.STREAMING, WAIT_S) for call in calls)
    )
    await asyncio.gather(*(hearing(call, others(said, i), said[i]) for i, call in enumerate(calls)))
    holding = [
        [leg for leg in node.runtime.machine.snapshot().legs if leg.is_alive] for node in nodes
    ]
    assert sorted(len(legs) for legs in holding) == [0, 0, 2], holding
    legs = next(legs for legs in holding if legs)
    assert len({leg.room_id for leg in legs}) == 1


async def test_a_queue_lives_on_the_node_of_its_calls(cluster: Cluster) -> None:
    a, b, _c = cluster.nodes
    await cluster.bridge(TELNYX_NUMBER)
    answer_through(cluster, a)
    said = voices(3)
    (call_x, leg_x), (_call_y, leg_y), (call_z, leg_z) = [
        await telnyx_caller(cluster, node, voice)
        for node, voice in zip((0, 1, 1), said, strict=True)
    ]
    token, enqueue = cluster.org.token, {"queue_name": "support"}
    for node, leg_id in ((a, leg_x), (b, leg_y)):  # each through its own node
        status, body = await send(
            node, token, "POST", f"/v2/calls/{leg_id}/actions/enqueue", enqueue
        )
        assert status == 200, body
    queue = a.runtime.machine.queue(cluster.org.org_id, "support")
    assert queue is not None and queue.members == (leg_x, leg_y)
    assert b.runtime.machine.queue(cluster.org.org_id, "support") is None and not holds(b, leg_y)

    # An agent on b takes the longest-waiting caller: carried out on a, the agent moved there.
    status, body = await send(
        b, token, "POST", f"/v2/calls/{leg_z}/actions/bridge", {"queue": "support"}
    )
    assert (status, body) == (200, {"data": {"result": "ok"}})
    assert (
        holds(a, leg_z)
        and a.runtime.machine.leg(leg_z).room_id == a.runtime.machine.leg(leg_x).room_id
    )
    start = await stream_up(call_z, 2)
    assert isinstance(call_x.playout, Tap)
    await asyncio.gather(
        hearing_since(call_z, start, [said[0]], said[2]),
        hearing_since(call_x, len(call_x.playout.frames), [said[2]], said[0]),
    )
    queue = a.runtime.machine.queue(cluster.org.org_id, "support")
    assert queue is not None and queue.members == (leg_y,)


async def test_two_first_enqueues_through_two_nodes_at_once_make_one_queue(
    cluster: Cluster,
) -> None:
    a, b, _c = cluster.nodes
    await cluster.bridge(TELNYX_NUMBER)
    answer_through(cluster, a)
    said = voices(2)
    (_call_x, leg_x), (_call_y, leg_y) = [
        await telnyx_caller(cluster, node, voice) for node, voice in zip((0, 1), said, strict=True)
    ]
    # Neither node has the queue, nor a stored row of it, when both ask: one claims it.
    token, enqueue = cluster.org.token, {"queue_name": "sales"}
    replies = await asyncio.gather(
        *(
            send(node, token, "POST", f"/v2/calls/{leg_id}/actions/enqueue", enqueue)
            for node, leg_id in ((a, leg_x), (b, leg_y))
        )
    )
    assert [status for status, _body in replies] == [200, 200], replies
    queues = [node.runtime.machine.queue(cluster.org.org_id, "sales") for node in (a, b)]
    made = [queue for queue in queues if queue is not None]
    assert len(made) == 1 and sorted(made[0].members) == sorted((leg_x, leg_y)), queues
