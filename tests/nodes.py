"""Engine nodes on one PostgreSQL database and one Redis, for the multi-node tests (issue 16).

Apps from ``create_app`` (nodes ``a``, ``b``, ...: each its own port, public URL and node URL)
share a fresh PostgreSQL database and a fresh Redis key prefix. The Telnyx simulator's
connection points its webhooks at a load balancer with call affinity (``CallAffinity``): each
new call goes to the next node in turn and its later webhooks follow it, as a reverse proxy
pinning a call would. The application behind the bridge only records webhooks.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import telnyx
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, unused_port

from adapters.simulators import TelnyxCall, TelnyxSimulator
from adapters.simulators.common import LocalServer
from engine.api.keys import RUNTIME
from engine.app import create_app
from engine.config import Settings
from engine.runtime.runtime import CallRuntime
from tests.e2e_checks import watch
from tests.platform_client import BRIDGES, Org, make_org
from tests.postgres import fresh_database
from tests.redis_server import REDIS_URL, redis_prefix
from tests.telnyx_harness import SECRET_KEY, AppServer, telnyx_config

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
    starter: NodeStarter = field(repr=False)

    async def add_node(self, name: str) -> Node:
        """One more node on the same database and Redis (it adopts what no live node holds);
        the balancer does not send it new calls."""
        node = await self.starter.start(name)
        self.nodes.append(node)
        return node

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


@dataclass
class NodeStarter:
    database: str
    prefix: str
    tmp_path: Path
    stack: contextlib.AsyncExitStack

    async def start(self, name: str) -> Node:
        port = unused_port()
        base_url = f"http://127.0.0.1:{port}"
        settings = Settings(
            database_url=self.database,
            secret_key=SECRET_KEY,
            public_url=base_url,
            recordings_dir=str(self.tmp_path / name / "recordings"),
            allow_private_urls=True,
            redis_url=REDIS_URL,
            redis_prefix=self.prefix,
            node_id=name,
            node_url=base_url,  # where the other nodes forward the commands on its legs
        )
        app = create_app(settings)
        client = TestClient(TestServer(app, host="127.0.0.1", port=port))
        await client.start_server()
        self.stack.push_async_callback(client.close)  # closing twice does nothing
        return Node(app, client, base_url)


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
        starter = NodeStarter(database, prefix, tmp_path, stack)
        # One after the other: the first runs the migrations.
        nodes = [await starter.start("a"), await starter.start("b")]
        balancer = CallAffinity([node.base_url for node in nodes])
        await balancer.start()
        stack.push_async_callback(balancer.close)
        org = await make_org(nodes[0].client, "acme", "Acme Inc")
        config_id, connection_id = await telnyx_config(org, sim)
        yield Cluster(nodes, sim, balancer, app_server, org, config_id, connection_id, starter)
