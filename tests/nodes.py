"""Engine nodes on one PostgreSQL database and one Redis, for the multi-node tests (issue 16).

Apps from ``create_app`` (nodes ``a``, ``b``, ...: each its own port, media URL and node URL)
share a fresh PostgreSQL database and a fresh Redis key prefix. Their public URL is one front
(``RoundRobin``), a reverse proxy without call affinity: each new call's first webhook goes to
the next node in turn, every later webhook (any call's) to the next node of another turn, so
a call's webhooks land on both nodes and the node that does not hold the call forwards them
(engine/cluster/webhooks.py). The Telnyx simulator's connection and the Twilio simulator's
numbers point at it. The application behind the bridge only records webhooks. ``ground`` is the
database, the prefix and the front alone, for nodes run as processes
(tests/test_cluster_failover_e2e.py).
"""

from __future__ import annotations

import contextlib
import itertools
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import telnyx
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, unused_port

from adapters.simulators import TelnyxCall, TelnyxSimulator, TwilioSimulator
from adapters.simulators.common import LocalServer
from benchmarks.loadtest.nodes import pass_on, webhook_call
from engine.api.keys import RUNTIME
from engine.app import create_app
from engine.config import Settings
from engine.runtime.runtime import CallRuntime
from tests.e2e_checks import watch
from tests.platform_client import BRIDGES, Org, make_org
from tests.postgres import fresh_database
from tests.redis_server import REDIS_URL, redis_prefix
from tests.telnyx_harness import SECRET_KEY, AppServer, telnyx_config


@dataclass(frozen=True)
class Delivery:
    """One provider webhook the front passed on: to which node, and the reply it got."""

    call_id: str
    path: str
    node: int
    status: int
    body: bytes


class RoundRobin:
    """The front for provider webhooks (every node's public URL): a call's first webhook goes to
    the node a test ``plan``s, else the next in turn; every later one to the node ``later``
    names, else the next of another turn. Nothing pins a call to a node. A node in ``down``
    gets nothing: the front's health check has taken it out (a test marks a node it kills)."""

    def __init__(self) -> None:
        self.nodes: list[str] = []
        self.owner: dict[str, int] = {}  # the provider's call id -> node of its first webhook
        self.plan: deque[int] = deque()
        self.later: int | None = None
        self.down: set[int] = set()
        self.deliveries: list[Delivery] = []
        self._turn = itertools.count()
        self._later_turn = itertools.count()
        self._session: aiohttp.ClientSession | None = None
        self.base_url = ""
        app = web.Application()
        for path in ("/webhooks/telnyx", "/webhooks/twilio/voice", "/webhooks/twilio/status"):
            app.router.add_post(path, self._forward)
        self._server = LocalServer(app)

    @property
    def url(self) -> str:
        return self.base_url + "/webhooks/telnyx"

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        self.base_url = await self._server.start()

    async def close(self) -> None:
        await self._server.close()
        if self._session is not None:
            await self._session.close()

    def of(self, call_id: str) -> list[Delivery]:
        return [delivery for delivery in self.deliveries if delivery.call_id == call_id]

    def _node_for(self, call_id: str) -> int:
        if call_id not in self.owner:
            self.owner[call_id] = self.plan.popleft() if self.plan else self._next_up(self._turn)
            return self.owner[call_id]
        if self.later is not None:
            return self.later
        return self._next_up(self._later_turn)

    def _next_up(self, turn: Iterator[int]) -> int:
        assert len(self.down) < len(self.nodes), "every node is down"
        while (node := next(turn) % len(self.nodes)) in self.down:
            pass
        return node

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        call_id = await webhook_call(request, body)
        node = self._node_for(call_id)
        assert self._session is not None
        reply = await pass_on(self._session, self.nodes[node], request, body)
        assert isinstance(reply.body, bytes)
        self.deliveries.append(Delivery(call_id, request.path, node, reply.status, reply.body))
        return reply


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
    balancer: RoundRobin
    app_server: AppServer
    org: Org
    config_id: int
    connection_id: str
    twilio: TwilioSimulator
    twilio_config_id: int
    starter: NodeStarter = field(repr=False)

    async def add_node(self, name: str) -> Node:
        """One more node on the same database and Redis (it adopts what no live node holds);
        the balancer does not send it new calls."""
        node = await self.starter.start(name)
        self.nodes.append(node)
        return node

    async def bridge(
        self,
        *numbers: str,
        channels_count: int = 100,
        twilio: bool = False,
        application: bool = True,
    ) -> str:
        """A bridge whose application is ``app_server`` (without ``application``: none, so
        callbridge answers its callers into the bridge's conference), ``numbers`` connected
        through node a (Telnyx's, or with ``twilio`` Twilio's); their webhooks then go to the
        balancer."""
        hooks = {"webhook_url": self.app_server.url} if application else {}
        slug: str = (await self.org.create_bridge("Sales", **hooks))["slug"]
        await self.connect(slug, *numbers, channels_count=channels_count, twilio=twilio)
        return slug

    async def connect(
        self, slug: str, *numbers: str, channels_count: int = 100, twilio: bool = False
    ) -> None:
        """More numbers on the bridge ``slug``."""
        for number in numbers:
            (self.twilio if twilio else self.sim).add_number(number)
            reply = await self.org.call(
                "POST",
                f"{BRIDGES}{slug}/connect-provider/",
                {
                    "provider_config_id": self.twilio_config_id if twilio else self.config_id,
                    "phone_number": number,
                    "channels_count": channels_count,
                },
            )
            assert reply.status == 200, reply.text
        connection = self.sim.connections[self.connection_id]
        connection.webhook_event_url = connection.webhook_event_failover_url = self.balancer.url

    def node_of(self, call: TelnyxCall) -> Node:
        """The node that took the call's first webhook (its owner, unless adopted since)."""
        return self.nodes[self.balancer.owner[call.call_control_id]]


@dataclass
class NodeStarter:
    database: str
    prefix: str
    tmp_path: Path
    stack: contextlib.AsyncExitStack
    front: RoundRobin

    async def start(self, name: str) -> Node:
        port = unused_port()
        base_url = f"http://127.0.0.1:{port}"
        settings = Settings(
            database_url=self.database,
            secret_key=SECRET_KEY,
            # Webhooks reach the nodes through the front (the URL Twilio signs is the front's,
            # on every node); media streams reach each node at its own URL.
            public_url=self.front.base_url,
            public_media_url=base_url.replace("http://", "ws://"),
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
        self.front.nodes.append(base_url)
        return Node(app, client, base_url)


@dataclass
class Ground:
    """What the nodes of a test share: a fresh database, a fresh Redis key prefix and the front.
    What a test pushes on ``stack`` is closed at the end, last pushed first, the front last."""

    database: str
    prefix: str
    front: RoundRobin
    stack: contextlib.AsyncExitStack


@contextlib.asynccontextmanager
async def ground() -> AsyncIterator[Ground]:
    async with (
        fresh_database() as database,
        redis_prefix() as prefix,
        contextlib.AsyncExitStack() as stack,
    ):
        front = RoundRobin()
        await front.start()
        stack.push_async_callback(front.close)
        yield Ground(database, prefix, front, stack)


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with ground() as shared:
        database, prefix, balancer, stack = (
            shared.database, shared.prefix, shared.front, shared.stack
        )  # fmt: skip
        sim = await TelnyxSimulator().start()
        watch(sim)
        stack.push_async_callback(sim.close)  # out before the nodes: its calls close their media
        twilio = await TwilioSimulator().start()
        watch(twilio)
        stack.push_async_callback(twilio.close)
        app_server = AppServer()
        await app_server.start()
        stack.push_async_callback(app_server.close)
        starter = NodeStarter(database, prefix, tmp_path, stack, balancer)
        # One after the other: the first runs the migrations.
        nodes = [await starter.start("a"), await starter.start("b")]
        org = await make_org(nodes[0].client, "acme", "Acme Inc")
        config_id, connection_id = await telnyx_config(org, sim)
        twilio_config = await org.create_config(
            "twilio",
            account_sid=twilio.account_sid,
            auth_token=twilio.auth_token,
            api_base_url=twilio.base_url,
        )
        yield Cluster(nodes, sim, balancer, app_server, org, config_id, connection_id, twilio,
                      int(twilio_config["id"]), starter)  # fmt: skip
