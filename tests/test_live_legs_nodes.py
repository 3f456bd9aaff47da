"""Two engine nodes on one PostgreSQL database and one Redis: the live-leg limits hold across them
(issue 16, points 2 and 7: "``channels_count`` of 2 holds across nodes under simultaneous calls").

The two nodes, their database, Redis and load balancer are tests/nodes.py's; the official SDK
dials.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import telnyx

from adapters.simulators import CallState, TelnyxCall
from adapters.telnyx.kit import TELNYX_KIT
from engine.admission.live_redis import RedisLiveLegs
from engine.api.keys import LIVE_LEGS, STORE
from engine.store.base import OrgLimitsRecord
from tests.nodes import Cluster, two_nodes
from tests.telnyx_harness import caller

pytestmark = pytest.mark.slow_family  # two engines, PostgreSQL and Redis
NUMBER = "+14155550190"
WAIT_S = 10.0


def rejected(cluster: Cluster, call: TelnyxCall) -> list[Any]:
    path = f"/v2/calls/{call.call_control_id}/actions/reject"
    return [r.json for r in cluster.sim.requests if r.path == path]


async def admitted(cluster: Cluster, calls: list[TelnyxCall]) -> list[TelnyxCall]:
    """The calls their node admitted, once each call is decided: admitted calls announced to
    the application (``call.initiated``), the others rejected (ended at the simulator)."""
    taken: list[TelnyxCall] = []
    for call in calls:
        await call.wait_until(
            lambda c: any(e.kind == "call.initiated" and e.status == 200 for e in c.events),
            WAIT_S,
        )  # its node has decided, and (if admitted) made the leg before answering 200
        leg = cluster.node_of(call).app[TELNYX_KIT].legs.of_telnyx(call.call_control_id)
        if leg is None:
            await call.wait_for(CallState.ENDED, WAIT_S)
        else:
            await cluster.app_server.wait_for("call.initiated", leg.leg_id, WAIT_S)
            taken.append(call)
    return taken


async def test_a_number_with_two_channels_takes_two_simultaneous_calls_across_two_nodes(
    tmp_path: Path,
) -> None:
    async with two_nodes(tmp_path) as cluster:
        await cluster.bridge(NUMBER, channels_count=2)
        calls = await asyncio.gather(
            *(cluster.sim.place_inbound_call(caller(), NUMBER) for _ in range(6))
        )
        up = await admitted(cluster, calls)
        assert sorted(cluster.balancer.owner.values()) == [0, 0, 0, 1, 1, 1], "3 calls each"
        assert len(up) == 2, "exactly two admitted, by whichever nodes"
        for call in calls:
            if call in up:
                assert rejected(cluster, call) == [] and call.state is not CallState.ENDED
            else:  # rejected busy at the simulator
                assert rejected(cluster, call) == [{"cause": "USER_BUSY"}]
                assert call.hangup == ("user_busy", "callee", "486")
        assert len(cluster.app_server.of("call.initiated")) == 2
        for node in cluster.nodes:
            assert await node.app[LIVE_LEGS].count_for_number(NUMBER) == 2

        # One hangs up on its node; the next call, delivered to the other node, is admitted.
        leaving = up[0]
        other = 1 - cluster.balancer.owner[leaving.call_control_id]
        await leaving.hang_up()
        await leaving.wait_until(
            lambda c: any(e.kind == "call.hangup" and e.status == 200 for e in c.events), WAIT_S
        )
        await cluster.node_of(leaving).runtime.settle()  # its release written to Redis
        cluster.balancer.plan.extend([other, 1 - other])
        again = await cluster.sim.place_inbound_call(caller(), NUMBER)
        assert await admitted(cluster, [again]) == [again]
        assert cluster.node_of(again) is cluster.nodes[other]
        full = await cluster.sim.place_inbound_call(caller(), NUMBER)  # full again: busy
        assert await admitted(cluster, [full]) == []
        assert rejected(cluster, full) == [{"cause": "USER_BUSY"}]
        assert await cluster.nodes[0].app[LIVE_LEGS].count_for_number(NUMBER) == 2
        live = cluster.nodes[other].app[LIVE_LEGS]
        assert isinstance(live, RedisLiveLegs) and live.node.startswith(("a.", "b."))


async def test_an_organizations_max_legs_holds_across_nodes_for_dials(tmp_path: Path) -> None:
    async with two_nodes(tmp_path) as cluster:
        slug = await cluster.bridge("+14155550191")
        a, b = cluster.nodes
        await a.app[STORE].set_org_limits(cluster.org.org_id, OrgLimitsRecord(max_legs=2))
        sdk_a, sdk_b = a.sdk(cluster.org), b.sdk(cluster.org)
        try:

            async def dial(sdk: telnyx.AsyncTelnyx) -> str:
                placed = await sdk.calls.dial(connection_id=slug, from_=caller(), to=caller())
                assert placed.data is not None
                return placed.data.call_control_id

            on_a = await dial(sdk_a)
            await dial(sdk_b)
            for sdk, node in ((sdk_b, "b"), (sdk_a, "a")):
                with pytest.raises(telnyx.RateLimitError) as refused:
                    await dial(sdk)
                assert refused.value.response.headers["Retry-After"] == "1", node
                (error,) = refused.value.body["errors"]  # type: ignore[index]
                assert error["code"] == "10011" and "2 live leg(s)" in error["detail"], node

            await sdk_a.calls.actions.hangup(on_a)
            await cluster.app_server.wait_for("call.hangup", on_a, WAIT_S)
            await a.runtime.settle()  # the leg's release written to Redis
            assert await b.app[LIVE_LEGS].count_for_org(cluster.org.org_id) == 1
            await dial(sdk_b)
            assert await a.app[LIVE_LEGS].count_for_org(cluster.org.org_id) == 2
        finally:
            await sdk_a.close()
            await sdk_b.close()
