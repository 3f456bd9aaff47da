"""Provider webhooks reaching a node that does not hold their call are carried out by the node
that does (issue 16, point 4), behind a front with no call affinity (tests/nodes.py).

Two engine nodes on one PostgreSQL database and one Redis. A Telnyx call and a Twilio call
land on node a; their later webhooks (the answer, the far end's hangup) are sent to node b, or
to each node in turn: a carries them out, the application gets each of its webhooks once and
in order, and the provider gets a's reply. A forged signature sent to b is refused by a, as on
one node.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.simulators import CallState, TelnyxCall
from adapters.simulators.telnyx_webhooks import WebhookFaults
from adapters.simulators.twilio_calls import TwilioCall
from adapters.telnyx.kit import TELNYX_KIT
from adapters.twilio.kit import TwilioKit
from adapters.wiring import ADAPTERS
from engine.admission.live_redis import RedisLiveLegs
from engine.api.keys import LIVE_LEGS
from engine.cluster.owners_redis import RedisLegOwners
from engine.errors import NotFound
from tests.nodes import Cluster, Node, two_nodes
from tests.telnyx_harness import caller

pytestmark = pytest.mark.slow_family  # two engines, PostgreSQL and Redis
TELNYX_NUMBER = "+14155550180"
TWILIO_NUMBER = "+14155550181"
WAIT_S = 10.0


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with two_nodes(tmp_path) as made:
        yield made


async def command(node: Node, cluster: Cluster, leg_id: str, action: str) -> None:
    headers = {"Authorization": f"Bearer {cluster.org.token}"}
    path = f"/v2/calls/{leg_id}/actions/{action}"
    async with node.client.post(path, json={}, headers=headers) as reply:
        assert reply.status == 200, await reply.text()


def answer_on(cluster: Cluster, node: Node) -> None:
    """The application answers each incoming leg through ``node``'s API."""

    async def on_event(data: dict[str, Any]) -> None:
        if data["event_type"] == "call.initiated" and data["payload"]["direction"] == "incoming":
            await command(node, cluster, data["payload"]["call_control_id"], "answer")

    cluster.app_server.on_event = on_event


def app_events(cluster: Cluster, leg_id: str) -> list[str]:
    """The leg's call.* webhooks in the order the application got them, having checked that
    it got every webhook of the leg once (streaming.* too) and streaming.* in order."""
    events = [
        e["event_type"]
        for e in cluster.app_server.events
        if e["payload"]["call_control_id"] == leg_id
    ]
    assert len(events) == len(set(events)), events
    streaming = [e for e in events if e.startswith("streaming.")]
    assert streaming in ([], ["streaming.started", "streaming.stopped"]), events
    return [e for e in events if e.startswith("call.")]


def holds(node: Node, leg_id: str) -> bool:
    try:
        node.runtime.machine.leg(leg_id)
    except NotFound:
        return False
    return True


def twilio_leg(node: Node, call: TwilioCall) -> str:
    kit = node.app[ADAPTERS].kits["twilio"]
    assert isinstance(kit, TwilioKit)
    leg = kit.legs.by_sid(call.sid)
    assert leg is not None
    return leg.call_control_id


async def telnyx_call_on_a(cluster: Cluster) -> tuple[TelnyxCall, str]:
    cluster.balancer.plan.append(0)  # its first webhook (call.initiated) to a
    call = await cluster.sim.place_inbound_call(caller(), TELNYX_NUMBER)
    await call.wait_until(
        lambda c: any(e.kind == "call.initiated" and e.status == 200 for e in c.events), WAIT_S
    )
    leg = cluster.nodes[0].app[TELNYX_KIT].legs.of_telnyx(call.call_control_id)
    assert leg is not None
    return call, leg.leg_id


async def settled(cluster: Cluster) -> None:
    for node in cluster.nodes:
        await node.runtime.settle()  # every webhook queued so far delivered or in flight


async def test_a_telnyx_calls_webhooks_sent_to_the_other_node_are_carried_out_by_its_owner(
    cluster: Cluster,
) -> None:
    a, b = cluster.nodes
    await cluster.bridge(TELNYX_NUMBER)
    answer_on(cluster, b)  # the command goes through b too (forwarded to a)
    cluster.balancer.later = 1  # every later webhook of every call to b
    call, leg_id = await telnyx_call_on_a(cluster)
    await call.wait_for(CallState.STREAMING, WAIT_S)  # media to a, at its own URL
    await cluster.app_server.wait_for("call.answered", leg_id, WAIT_S)
    assert a.runtime.machine.leg(leg_id).answered_at is not None
    assert not holds(b, leg_id)

    await call.hang_up()  # the far end: call.hangup sent to b, carried out by a
    await cluster.app_server.wait_for("call.hangup", leg_id, WAIT_S)
    assert not a.runtime.machine.is_alive(leg_id)
    assert not holds(b, leg_id)
    await settled(cluster)
    assert app_events(cluster, leg_id) == ["call.initiated", "call.answered", "call.hangup"]
    cause = a.runtime.machine.leg(leg_id).hangup_cause
    assert cause is not None and cause.value == "normal_clearing"

    deliveries = cluster.balancer.of(call.call_control_id)
    assert deliveries[0].node == 0 and {d.node for d in deliveries[1:]} == {1}
    assert {"call.answered", "call.hangup"} <= {e.kind for e in call.events[1:]}
    # Telnyx got a's reply through b: "ok" for each, not b's "ignored: unknown call".
    assert all((d.status, d.body) == (200, b"ok") for d in deliveries), deliveries


async def test_a_dialled_telnyx_calls_webhooks_find_its_owner_by_the_leg_in_their_url(
    cluster: Cluster,
) -> None:
    a, b = cluster.nodes
    slug = await cluster.bridge(TELNYX_NUMBER)
    cluster.balancer.plan.append(1)  # even its first webhook goes to b
    cluster.balancer.later = 1
    sdk = a.sdk(cluster.org)
    try:
        placed = await sdk.calls.dial(connection_id=slug, from_=TELNYX_NUMBER, to=caller())
    finally:
        await sdk.close()
    assert placed.data is not None
    leg_id = placed.data.call_control_id
    callee = await cluster.sim.wait_for_call(lambda c: c.direction == "outbound")
    await callee.wait_for(CallState.STREAMING, WAIT_S)
    await cluster.app_server.wait_for("call.answered", leg_id, WAIT_S)
    await callee.hang_up()
    await cluster.app_server.wait_for("call.hangup", leg_id, WAIT_S)
    assert not a.runtime.machine.is_alive(leg_id) and not holds(b, leg_id)
    await settled(cluster)
    assert app_events(cluster, leg_id) == ["call.initiated", "call.answered", "call.hangup"]
    deliveries = cluster.balancer.of(callee.call_control_id)
    assert deliveries and {d.node for d in deliveries} == {1}
    assert all((d.status, d.body) == (200, b"ok") for d in deliveries), deliveries


async def test_a_twilio_calls_webhooks_sent_to_the_other_node_are_carried_out_by_its_owner(
    cluster: Cluster,
) -> None:
    a, b = cluster.nodes
    await cluster.bridge(TWILIO_NUMBER, twilio=True)
    answer_on(cluster, b)
    cluster.balancer.plan.append(0)  # the voice webhook to a, held there until answered
    cluster.balancer.later = 1  # the status callbacks to b
    call = await cluster.twilio.place_inbound_call(caller(), TWILIO_NUMBER)
    await call.wait_for(CallState.STREAMING, WAIT_S)  # a's TwiML, its stream to a
    leg_id = twilio_leg(a, call)
    await cluster.app_server.wait_for("call.answered", leg_id, WAIT_S)
    assert not holds(b, leg_id)

    await call.hang_up()  # status callback "completed" to b, carried out by a
    await cluster.app_server.wait_for("call.hangup", leg_id, WAIT_S)
    assert not a.runtime.machine.is_alive(leg_id) and not holds(b, leg_id)
    await settled(cluster)
    assert app_events(cluster, leg_id) == ["call.initiated", "call.answered", "call.hangup"]
    hangup = cluster.app_server.of("call.hangup", leg_id)[0]["payload"]
    assert (hangup["hangup_cause"], hangup["hangup_source"]) == ("normal_clearing", "caller")
    deliveries = cluster.balancer.of(call.sid)
    assert [d.node for d in deliveries] == [0, 1], deliveries  # voice to a, status to b
    assert deliveries[1].status == 200
    voice = next(e for e in call.events if e.kind == "voice")
    assert b"<Stream" in voice.response


async def test_a_round_robin_front_carries_a_call_through_both_nodes(cluster: Cluster) -> None:
    a, b = cluster.nodes
    await cluster.bridge(TELNYX_NUMBER)
    answer_on(cluster, a)
    call, leg_id = await telnyx_call_on_a(cluster)  # later webhooks: a, b, a, ... in turn
    await call.wait_for(CallState.STREAMING, WAIT_S)
    await cluster.app_server.wait_for("call.answered", leg_id, WAIT_S)
    await call.hang_up()
    await cluster.app_server.wait_for("call.hangup", leg_id, WAIT_S)
    await settled(cluster)
    assert app_events(cluster, leg_id) == ["call.initiated", "call.answered", "call.hangup"]
    deliveries = cluster.balancer.of(call.call_control_id)
    assert {d.node for d in deliveries} == {0, 1}, deliveries
    # Each carried out by a (b would say "ignored: unknown call"), the hangup from the caller.
    assert all((d.status, d.body) == (200, b"ok") for d in deliveries), deliveries
    hangup = cluster.app_server.of("call.hangup", leg_id)[0]["payload"]
    assert (hangup["hangup_cause"], hangup["hangup_source"]) == ("normal_clearing", "caller")
    assert not holds(b, leg_id) and not a.runtime.machine.is_alive(leg_id)


async def post(node: Node, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    async with node.client.post(path, data=body, headers=headers) as reply:
        return reply.status, await reply.text()


async def test_a_forged_signature_sent_to_the_other_node_is_refused_by_the_owner(
    cluster: Cluster,
) -> None:
    a, b = cluster.nodes
    await cluster.bridge(TELNYX_NUMBER)
    await cluster.bridge(TWILIO_NUMBER, twilio=True)
    call, leg_id = await telnyx_call_on_a(cluster)
    hangup = {
        "data": {
            "record_type": "event",
            "event_type": "call.hangup",
            "id": "forged-1",
            "occurred_at": "2026-01-01T00:00:00Z",
            "payload": {"call_control_id": call.call_control_id, "hangup_cause": "normal_clearing"},
        }
    }
    forged = {
        "Content-Type": "application/json",
        "telnyx-signature-ed25519": "AAAA",
        "telnyx-timestamp": str(int(time.time())),
    }
    body = orjson.dumps(hangup)
    on_b = await post(b, "/webhooks/telnyx", body, forged)
    assert on_b == (403, "signature refused")
    assert on_b == await post(a, "/webhooks/telnyx", body, forged)
    assert a.runtime.machine.is_alive(leg_id), "nothing changed"

    cluster.balancer.plan.append(0)
    cluster.app_server.on_event = None
    twilio = await cluster.twilio.place_inbound_call(caller(), TWILIO_NUMBER)
    await cluster.app_server.wait_until(
        lambda: any(e["event_type"] == "call.initiated" for e in cluster.app_server.events[1:]),
        "the Twilio call announced",
        WAIT_S,
    )
    twilio_leg_id = twilio_leg(a, twilio)
    fields = f"CallSid={twilio.sid}&AccountSid={cluster.twilio.account_sid}&CallStatus=completed"
    bad = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "AAAA="}
    on_b = await post(b, "/webhooks/twilio/status", fields.encode(), bad)
    assert on_b == (403, "bad X-Twilio-Signature")
    assert on_b == await post(a, "/webhooks/twilio/status", fields.encode(), bad)
    assert a.runtime.machine.is_alive(twilio_leg_id), "nothing changed"


async def test_a_webhook_for_a_call_whose_owner_is_gone_is_answered_503(cluster: Cluster) -> None:
    a, _b = cluster.nodes
    await cluster.bridge(TELNYX_NUMBER)
    call, _leg_id = await telnyx_call_on_a(cluster)
    await a.runtime.settle()
    await a.client.close()  # a stops: its call is nobody's until a node adopts it
    cluster.balancer.later = 1
    await call.hang_up()
    await call.wait_until(
        lambda c: any(e.kind == "call.hangup" and e.status is not None for e in c.events), WAIT_S
    )
    after = cluster.balancer.of(call.call_control_id)[1:]
    assert after and all(d.node == 1 and d.status == 503 for d in after), after
    assert b"not alive" in after[0].body  # for Telnyx to send it again (its failover URL)


async def test_a_duplicate_first_webhook_on_the_other_node_starts_no_second_leg(
    cluster: Cluster,
) -> None:
    a, b = cluster.nodes
    await cluster.bridge(TELNYX_NUMBER)
    cluster.balancer.plan.append(0)
    cluster.balancer.later = 1  # Telnyx's duplicate of call.initiated goes to b
    twice = WebhookFaults(duplicate=frozenset({"call.initiated"}))
    call = await cluster.sim.place_inbound_call(caller(), TELNYX_NUMBER, faults=twice)
    await call.wait_until(
        lambda c: sum(e.kind == "call.initiated" and e.status is not None for e in c.events) == 2,
        WAIT_S,
    )
    first, again = cluster.balancer.of(call.call_control_id)[:2]
    assert (first.node, first.body, again.node, again.body) == (0, b"ok", 1, b"duplicate")
    await cluster.app_server.wait_for("call.initiated", None, WAIT_S)
    await settled(cluster)
    assert len(cluster.app_server.of("call.initiated")) == 1
    assert len(a.runtime.machine.snapshot().legs) == 1
    assert b.runtime.machine.snapshot().legs == ()


async def test_a_taken_over_calls_webhooks_reach_the_node_that_took_it(cluster: Cluster) -> None:
    a, b = cluster.nodes
    await cluster.bridge(TELNYX_NUMBER)
    call, leg_id = await telnyx_call_on_a(cluster)
    await cluster.app_server.wait_for("call.initiated", leg_id, WAIT_S)
    await a.runtime.settle()
    await a.client.close()  # a hands its call over; nobody starts to adopt it
    registry, gone = b.app[LIVE_LEGS], a.app[LIVE_LEGS]
    assert isinstance(registry, RedisLiveLegs) and isinstance(gone, RedisLiveLegs)
    await registry.client.delete(registry.key(f"node:{gone.node}:alive"))
    await registry.refresh()  # a's TTL lapsed: b, the node that noticed, takes its call over
    assert b.runtime.machine.is_alive(leg_id)
    found = await RedisLegOwners(registry).owner_of_call(f"telnyx:{call.call_control_id}")
    assert found is not None and found[0] == leg_id and found[1].node == registry.node
    c = await cluster.add_node("c")  # adopts nothing: b, alive, holds the call
    assert not holds(c, leg_id)
    await b.runtime.settle()
    cluster.balancer.later = 2
    await call.hang_up()  # to c, carried out by b
    await cluster.app_server.wait_for("call.hangup", leg_id, WAIT_S)
    assert not b.runtime.machine.is_alive(leg_id) and not holds(c, leg_id)
    (delivery,) = [d for d in cluster.balancer.of(call.call_control_id) if d.node == 2]
    assert (delivery.status, delivery.body) == (200, b"ok")
