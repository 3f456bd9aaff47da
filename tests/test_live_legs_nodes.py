"""Two engine nodes on one PostgreSQL database and one Redis: the live-leg limits hold across them
(issue 16, points 2 and 7: "``channels_count`` of 2 holds across nodes under simultaneous calls").

Two apps from ``create_app`` (two nodes: node ids ``a`` and ``b``, each its own public URL) share
a fresh PostgreSQL database and a fresh Redis key prefix. The Telnyx simulator's connection
points its webhooks at a load balancer with call affinity (``CallAffinity``): each new call goes
to the next node in turn and its later webhooks follow it, as a reverse proxy pinning a call
would. The application behind the bridge only records webhooks; the official SDK dials.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import telnyx
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, unused_port

from adapters.simulators import CallState, TelnyxCall, TelnyxSimulator
from adapters.simulators.common import LocalServer
from adapters.telnyx.kit import TELNYX_KIT
from engine.admission.live_redis import RedisLiveLegs
from engine.api.keys import LIVE_LEGS, RUNTIME, STORE
from engine.app import create_app
from engine.config import Settings
from engine.runtime.runtime import CallRuntime
from engine.store.base import OrgLimitsRecord
from tests.e2e_checks import watch
from tests.platform_client import BRIDGES, Org, make_org
from tests.postgres import fresh_database
from tests.redis_server import REDIS_URL, redis_prefix
from tests.telnyx_harness import SECRET_KEY, AppServer, caller, telnyx_config

pytestmark = pytest.mark.slow_family  # two engines, PostgreSQL and Redis
NUMBER = "+14155550190"
WAIT_S = 10.0
HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection"}


class CallAffinity:
    """A load balancer for provider webhooks: a call's first webhook goes to the next node in
    turn (or to the node a test ``plan``s), every later one to the same node."""

    def __init__(self, nodes: list[str]) -> None:
        self.nodes = nodes
        self.owner: dict[str, int] = {}  # the provider's call id -> node index
        self.plan: deque[int] = deque()
        self._turn = itertools.cycle(range(len(nodes)))
        self._session: aiohttp.ClientSession | None = None
        self.url = ""
        app = web.Application()
        app.router.add_post("/webhooks/telnyx", self._forward)
        self._server = LocalServer(app)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        self.url = await self._server.start() + "/webhooks/telnyx"

    async def close(self) -> None:
        await self._server.close()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        call_id = orjson.loads(body)["data"]["payload"]["call_control_id"]
        if call_id not in self.owner:
            self.owner[call_id] = self.plan.popleft() if self.plan else next(self._turn)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        assert self._session is not None
        url = self.nodes[self.owner[call_id]] + "/webhooks/telnyx"
        async with self._session.post(url, data=body, headers=headers) as reply:
            return web.Response(status=reply.status, body=await reply.read())


@dataclass
class Node:
    app: web.Application
    client: TestClient  # type: ignore[type-arg]
    base_url: str

    @property
    def runtime(self) -> CallRuntime:
        return self.app[RUNTIME]

    def sdk(self, org: Org) -> telnyx.AsyncTelnyx:
        return telnyx.AsyncTelnyx(api_key=org.token, base_url=self.base_url + "/v2", max_retries=0)


@dataclass
class Cluster:
    nodes: list[Node]
    sim: TelnyxSimulator
    balancer: CallAffinity
    app_server: AppServer
    org: Org
    config_id: int
    connection_id: str

    async def bridge(self, *numbers: str, channels_count: int = 100) -> str:
        """A bridge whose application is ``app_server``, ``numbers`` connected through node a;
        the connection's webhooks then go to the balancer."""
        slug: str = (await self.org.create_bridge("Sales", webhook_url=self.app_server.url))["slug"]
        for number in numbers:
            self.sim.add_number(number)
            reply = await self.org.call(
                "POST",
                f"{BRIDGES}{slug}/connect-provider/",
                {
                    "provider_config_id": self.config_id,
                    "phone_number": number,
                    "channels_count": channels_count,
                },
            )
            assert reply.status == 200, reply.text
        connection = self.sim.connections[self.connection_id]
        connection.webhook_event_url = connection.webhook_event_failover_url = self.balancer.url
        return slug

    def node_of(self, call: TelnyxCall) -> Node:
        return self.nodes[self.balancer.owner[call.call_control_id]]


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with (
        fresh_database() as database,
        redis_prefix() as prefix,
        contextlib.AsyncExitStack() as stack,
    ):
        sim = await TelnyxSimulator().start()
        watch(sim)
        stack.push_async_callback(sim.close)  # first out: its calls close their media sockets
        app_server = AppServer()
        await app_server.start()
        stack.push_async_callback(app_server.close)
        nodes = []
        for name in ("a", "b"):  # one after the other: the first runs the migrations
            port = unused_port()
            base_url = f"http://127.0.0.1:{port}"
            settings = Settings(
                database_url=database,
                secret_key=SECRET_KEY,
                public_url=base_url,
                recordings_dir=str(tmp_path / name / "recordings"),
                allow_private_urls=True,
                redis_url=REDIS_URL,
                redis_prefix=prefix,
                node_id=name,
            )
            app = create_app(settings)
            client = TestClient(TestServer(app, host="127.0.0.1", port=port))
            await client.start_server()
            stack.push_async_callback(client.close)
            nodes.append(Node(app, client, base_url))
        balancer = CallAffinity([node.base_url for node in nodes])
        await balancer.start()
        stack.push_async_callback(balancer.close)
        org = await make_org(nodes[0].client, "acme", "Acme Inc")
        config_id, connection_id = await telnyx_config(org, sim)
        yield Cluster(nodes, sim, balancer, app_server, org, config_id, connection_id)


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
