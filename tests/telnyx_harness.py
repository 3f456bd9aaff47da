"""The real app against the Telnyx simulator, for the Telnyx adapter and end-to-end tests.

``telnyx_stack`` starts callbridge (``create_app``) on a real 127.0.0.1 port whose URL is its own
``public_url``, a ``TelnyxSimulator`` as Telnyx, an organization and a Telnyx configuration
(account_sid = the simulator's connection, auth_token = its API key, public_key = its webhook
key, api_base_url = its URL). ``Stack.bridge`` creates a bridge and connects numbers to it
through the platform API, which provisions them on the simulator. ``AppServer`` is the
application behind a bridge's ``webhook_url``. Nothing here stands in for callbridge's code;
every wait is on an event, with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import telnyx
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, unused_port

from adapters.simulators import TelnyxCall, TelnyxSimulator
from adapters.simulators.audio import (
    FRAME_SAMPLES,
    Samples,
    noise_floor_db,
    tone_level_db,
)
from adapters.simulators.common import LocalServer
from adapters.telnyx.gateway import TelnyxLeg
from adapters.telnyx.kit import TELNYX_KIT, TelnyxKit
from engine.api.keys import RUNTIME
from engine.app import create_app
from engine.config import Settings
from engine.runtime.runtime import CallRuntime
from tests.e2e_checks import watch
from tests.platform_client import BRIDGES, CONFIGS, Org, Reply, make_org

SECRET_KEY = "telnyx-test-secret-" + "s" * 32
WAIT_S = 5.0
CALLERS = itertools.count(15557650000)


def caller() -> str:
    """A fresh caller number, so no two calls of a test share one."""
    return f"+{next(CALLERS)}"


class AppServer:
    """The application behind a bridge's ``webhook_url``: records callbridge's webhooks and
    runs ``on_event`` for each (in the background, like a real app answering 200 at once).
    While ``down`` it answers 503 and records nothing, as a receiver that is down."""

    def __init__(self) -> None:
        self.down = False
        self.events: list[dict[str, Any]] = []
        self.on_event: Callable[[dict[str, Any]], Awaitable[None]] | None = None
        self.failures: list[BaseException] = []
        self._server = LocalServer(self._app())
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hooks", self._hook)
        return app

    async def start(self) -> None:
        self.url = await self._server.start() + "/hooks"

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.close()

    async def _hook(self, request: web.Request) -> web.Response:
        if self.down:
            return web.Response(status=503, text="down")
        data = (await request.json())["data"]
        self.events.append(data)
        self._changed.set()
        if self.on_event is not None:
            task = asyncio.ensure_future(self._run(self.on_event, data))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return web.Response(text="ok")

    async def _run(
        self, handler: Callable[[dict[str, Any]], Awaitable[None]], data: dict[str, Any]
    ) -> None:
        try:
            await handler(data)
        except Exception as exc:
            self.failures.append(exc)
            self._changed.set()

    def of(self, event_type: str, leg: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e["event_type"] == event_type
            and (leg is None or e["payload"]["call_control_id"] == leg)
        ]

    def call_events(self, leg: str) -> list[str]:
        """The leg's call.* webhooks in the order they arrived; every webhook recorded (of any
        leg) arrived once."""
        ids = [e["id"] for e in self.events]
        assert len(ids) == len(set(ids)), "a webhook arrived twice"
        return [
            e["event_type"]
            for e in self.events
            if e["payload"]["call_control_id"] == leg and e["event_type"].startswith("call.")
        ]

    async def wait_for(
        self, event_type: str, leg: str | None = None, timeout_s: float = WAIT_S
    ) -> dict[str, Any]:
        async with asyncio.timeout(timeout_s):
            while True:
                if self.failures:
                    raise RuntimeError("the application failed") from self.failures[0]
                found = self.of(event_type, leg)
                if found:
                    return found[0]
                self._changed.clear()
                await self._changed.wait()

    async def wait_until(self, check: Callable[[], bool], what: str, within: float = 20.0) -> None:
        """Until ``check`` holds, re-judged at each webhook that arrives."""
        async with asyncio.timeout(within):
            while not check():
                self._changed.clear()
                await self._changed.wait()
        assert check(), what


def pairing_application(
    sdk: telnyx.AsyncTelnyx, answered: list[str], bridged: asyncio.Event
) -> Callable[[dict[str, Any]], Awaitable[None]]:
    """An application (``AppServer.on_event``) that answers every call and, once two are
    answered, bridges the first with the second through the official SDK."""

    async def application(data: dict[str, Any]) -> None:
        leg = data["payload"]["call_control_id"]
        if data["event_type"] == "call.initiated":
            await sdk.calls.actions.answer(leg)
        elif data["event_type"] == "call.answered":
            answered.append(leg)
            if len(answered) == 2:
                await sdk.calls.actions.bridge(answered[0], call_control_id_to_bridge_with=leg)
                bridged.set()

    return application


@dataclass
class Stack:
    sim: TelnyxSimulator
    app: web.Application
    client: TestClient  # type: ignore[type-arg]
    org: Org
    config_id: int
    connection_id: str
    base_url: str
    app_server: AppServer
    bridges: list[str] = field(default_factory=list)

    @property
    def runtime(self) -> CallRuntime:
        return self.app[RUNTIME]

    @property
    def kit(self) -> TelnyxKit:
        return self.app[TELNYX_KIT]

    async def connect(self, slug: str, number: str) -> Reply:
        return await self.org.call(
            "POST",
            f"{BRIDGES}{slug}/connect-provider/",
            {"provider_config_id": self.config_id, "phone_number": number},
        )

    async def bridge(
        self, *numbers: str, webhook_url: str | None = None, status: str = "ACTIVE"
    ) -> str:
        """A bridge with ``numbers`` (added to the simulated account) connected; its slug."""
        fields: dict[str, Any] = {"status": status}
        if webhook_url is not None:
            fields["webhook_url"] = webhook_url
        created = await self.org.create_bridge(f"Bridge {len(self.bridges) + 1}", **fields)
        slug: str = created["slug"]
        self.bridges.append(slug)
        for number in numbers:
            self.sim.add_number(number)
            reply = await self.connect(slug, number)
            assert reply.status == 200, reply.text
        return slug

    async def update_config(self, **changes: Any) -> None:
        reply = await self.org.call("PATCH", f"{CONFIGS}{self.config_id}/", changes)
        assert reply.status == 200, reply.text

    async def leg_of(self, call: TelnyxCall, timeout_s: float = WAIT_S) -> TelnyxLeg:
        """callbridge's leg for a simulated call, once its call.initiated has been answered."""
        await call.wait_until(
            lambda c: any(e.kind == "call.initiated" and e.status for e in c.events), timeout_s
        )
        leg = self.kit.legs.of_telnyx(call.call_control_id)
        assert leg is not None, f"no leg for {call.call_control_id}: {call.events}"
        return leg

    async def taken(self, call: TelnyxCall, kind: str, timeout_s: float = WAIT_S) -> None:
        """callbridge has acknowledged the call's ``kind`` webhook: the engine has applied it."""
        await call.wait_until(
            lambda c: any(e.kind == kind and e.status for e in c.events), timeout_s
        )

    def leg_state(self, leg_id: str) -> str:
        return self.runtime.machine.leg(leg_id).state.value


@contextlib.asynccontextmanager
async def telnyx_stack(tmp_path: Path, **settings: Any) -> AsyncIterator[Stack]:
    """``settings``: Settings fields to set besides the stack's own."""
    port = unused_port()
    base_url = f"http://127.0.0.1:{port}"
    defaults: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'callbridge.db'}",
        "secret_key": SECRET_KEY,
        "public_url": base_url,
        "recordings_dir": str(tmp_path / "recordings"),
        # Simulators, bots and webhook receivers all listen on 127.0.0.1.
        "allow_private_urls": True,
    }
    config = Settings(**{**defaults, **settings})
    app = create_app(config)
    sim = TelnyxSimulator()
    await sim.start()
    watch(sim)
    client = TestClient(TestServer(app, host="127.0.0.1", port=port))
    app_server = AppServer()
    try:
        await client.start_server()
        await app_server.start()
        org = await make_org(client, "acme", "Acme Inc")
        config_id, connection_id = await telnyx_config(org, sim)
        yield Stack(sim, app, client, org, config_id, connection_id, base_url, app_server)
    finally:
        # The simulator first: its calls close their media sockets, so the app's streams end.
        await sim.close()
        await app_server.close()
        await client.close()


async def telnyx_config(org: Org, sim: TelnyxSimulator) -> tuple[int, str]:
    """A Telnyx configuration of ``org`` for a new connection of ``sim``: the configuration's
    id and the connection's. The connection starts with no webhook URL: connecting a number
    points it at callbridge."""
    connection_id = sim.add_connection(webhook_url=None)
    config = await org.create_config(
        "telnyx",
        account_sid=connection_id,
        auth_token=sim.api_key,
        public_key=sim.public_key,
        api_base_url=sim.base_url,
    )
    return int(config["id"]), connection_id


# --- audio -------------------------------------------------------------------------------------


def heard_since(call: TelnyxCall, tick: int, frames: int) -> Samples:
    """``frames`` 20 ms frames of what ``call`` heard, from its playout tick ``tick`` on."""
    audio = call.received_audio()
    return audio[tick * FRAME_SAMPLES : (tick + frames) * FRAME_SAMPLES]


async def wait_ticks(call: TelnyxCall, tick: int, timeout_s: float = WAIT_S) -> None:
    await call.wait_until(lambda c: c.playout_tick >= tick, timeout_s)


def tone_margins(audio: Samples, wanted: list[float], unwanted: list[float]) -> list[float]:
    """For each wanted tone, its level minus the loudest unwanted tone and the noise floor."""
    floor = noise_floor_db(audio, exclude_hz=[*wanted, *unwanted])
    worst = max([floor, *(tone_level_db(audio, f) for f in unwanted)])
    return [tone_level_db(audio, f) - worst for f in wanted]


def frame_rows(audio: Samples) -> np.ndarray[Any, np.dtype[np.int16]]:
    whole = len(audio) // FRAME_SAMPLES * FRAME_SAMPLES
    return audio[:whole].reshape(-1, FRAME_SAMPLES)
