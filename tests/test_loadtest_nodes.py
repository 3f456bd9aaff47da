"""The load test against several nodes (benchmarks/loadtest/nodes.py, issue 16): the front
spreads calls over the nodes by their ids and keeps each call's webhooks on its node; a run with
``--engine-workers`` needs a spawned engine; each node's CPU and legs are read off its own
``/metrics``; the run itself is in BENCHMARKS.md."""

from __future__ import annotations

import aiohttp
import orjson
import pytest
from aiohttp import web

from adapters.simulators.common import LocalServer
from benchmarks.loadtest.config import LoadConfig
from benchmarks.loadtest.measures import MetricsSnapshot, NodeWindow, node_windows, parse_metrics
from benchmarks.loadtest.nodes import WebhookFront, node_of


async def test_the_front_spreads_new_calls_and_keeps_each_calls_webhooks_on_its_node() -> None:
    seen: list[tuple[int, str, str]] = []

    def node(index: int) -> LocalServer:
        async def hook(request: web.Request) -> web.Response:
            if request.path == "/webhooks/telnyx":
                call = (await request.json())["data"]["payload"]["call_control_id"]
            else:
                call = (await request.post())["CallSid"]
            seen.append((index, request.path, str(call)))
            return web.Response(text=f"node {index}")

        app = web.Application()
        app.router.add_post("/webhooks/telnyx", hook)
        app.router.add_post("/webhooks/twilio/voice", hook)
        return LocalServer(app)

    nodes = [node(0), node(1)]
    front = WebhookFront([await server.start() for server in nodes])
    url = await front.start()
    try:
        async with aiohttp.ClientSession() as session:

            async def telnyx(call: str) -> str:
                body = orjson.dumps({"data": {"payload": {"call_control_id": call}}})
                async with session.post(f"{url}/webhooks/telnyx", data=body) as reply:
                    return await reply.text()

            async def twilio(sid: str) -> str:
                async with session.post(f"{url}/webhooks/twilio/voice?x=1",
                                        data={"CallSid": sid}) as reply:  # fmt: skip
                    return await reply.text()

            answers = [await telnyx("c1"), await twilio("CA2"), await telnyx("c3")]
            answers += [await telnyx("c1"), await twilio("CA2"), await telnyx("c1")]
        expected = [f"node {node_of(call, 2)}" for call in ("c1", "CA2", "c3", "c1", "CA2", "c1")]
        assert answers == expected
        assert [index for index, _path, call in seen if call == "c1"] == [node_of("c1", 2)] * 3
        assert ("/webhooks/twilio/voice", "CA2") in [(path, call) for _i, path, call in seen]
    finally:
        await front.close()
        for server in nodes:
            await server.close()


def test_several_workers_need_a_spawned_engine() -> None:
    with pytest.raises(ValueError, match="--spawn-engine"):
        LoadConfig(legs=20, engine_workers=2).steps()
    assert LoadConfig(legs=20, engine_workers=2, spawn_engine=True).steps() == [20]


def test_calls_spread_evenly_over_the_nodes_whatever_order_they_arrive_in() -> None:
    # Twilio and Telnyx calls alternating, as a load test's pairs arrive: taken in turn, every
    # call of one provider would land on one node.
    arrivals = [f"CA{i:032x}" if i % 2 else f"v3:{i:022x}" for i in range(400)]
    per_node = [0, 0]
    twilio_on = [0, 0]
    for call in arrivals:
        node = node_of(call, 2)
        per_node[node] += 1
        twilio_on[node] += call.startswith("CA")
    assert min(per_node) >= 160 and min(twilio_on) >= 80, (per_node, twilio_on)
    assert all(node_of(call, 2) == node_of(call, 2) for call in arrivals)  # stable


def test_pinned_workers_need_several_workers_and_a_core() -> None:
    with pytest.raises(ValueError, match="--pin-workers"):
        LoadConfig(legs=20, spawn_engine=True, pin_workers=True).steps()
    with pytest.raises(ValueError, match="--pin-workers"):
        LoadConfig(legs=20, engine_workers=2, spawn_engine=True, pin_workers=True,
                   engine_core=None).steps()  # fmt: skip
    assert LoadConfig(legs=20, engine_workers=2, spawn_engine=True, pin_workers=True).steps()


METRICS = """# TYPE callbridge_legs gauge
callbridge_legs{state="bridged",provider="telnyx"} 30.0
callbridge_legs{state="answered",provider="twilio"} 12.0
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 41.5
"""


def test_each_nodes_cpu_and_legs_come_from_its_own_metrics() -> None:
    snapshot = parse_metrics(METRICS)
    assert (snapshot.legs, snapshot.cpu_s) == (42.0, 41.5)
    idle = parse_metrics("# TYPE callbridge_legs gauge\nprocess_cpu_seconds_total 3.0\n")
    assert (idle.legs, idle.cpu_s) == (0.0, 3.0)
    before = [MetricsSnapshot({}, None, 40.0, 39.5), MetricsSnapshot({}, None, 0.0, 1.0)]
    after = [snapshot, idle]
    assert node_windows(before, after, 10.0) == (NodeWindow(0.2, 42), NodeWindow(0.2, 0))
    assert NodeWindow(0.2, 40).to_json()["cpu_per_leg_pct"] == 0.5
    # A node that could not be read: no figures rather than a part passing for the whole.
    assert node_windows([None, before[1]], after, 10.0) == ()
