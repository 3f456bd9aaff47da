"""The real callbridge app on 127.0.0.1 with the Twilio simulator as its Twilio account.

``TwilioEnv.start`` serves ``create_app(settings)`` on a reserved port whose URL is the app's
``public_url``, creates an organization and a Twilio provider configuration pointing at the
simulator (``api_base_url``, account sid, auth token); ``bridge`` creates a bridge and connects
numbers through the platform API, which provisions them on the simulator. ``AppHooks`` is the
application behind a bridge's ``webhook_url``. Waiting is on events with timeouts, never sleeps.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient, unused_port

from adapters.simulators import TwilioCall, TwilioSimulator, noise_floor_db, tone_level_db
from adapters.twilio.gateway import TwilioLeg
from adapters.twilio.kit import TwilioKit
from adapters.twilio.twiml import ConnectStream, parse_twiml
from adapters.wiring import ADAPTERS
from engine.api.keys import LIVE_LEGS, RUNTIME
from engine.app import create_app
from engine.config import Settings
from engine.runtime.runtime import CallRuntime
from tests.e2e_checks import watch
from tests.platform_client import BRIDGES, Org, make_org

SECRET_KEY = "twilio-test-secret-key-" + "s" * 32
WAIT_S = 5.0
SAMPLE_RATE = 8000


@dataclass
class Hook:
    event_type: str
    payload: dict[str, Any]

    @property
    def leg(self) -> str:
        return str(self.payload.get("call_control_id"))


class AppHooks:
    """The application's webhook endpoint: callbridge's Telnyx-shaped events, in order."""

    def __init__(self) -> None:
        self.hooks: list[Hook] = []
        self.url = ""
        self._taken: set[int] = set()
        self._changed = asyncio.Condition()

    @classmethod
    async def start(cls, aiohttp_server: Any) -> AppHooks:
        hooks = cls()
        app = web.Application()
        app.router.add_post("/hooks", hooks._receive)
        server = await aiohttp_server(app)
        hooks.url = str(server.make_url("/hooks"))
        return hooks

    async def _receive(self, request: web.Request) -> web.Response:
        data = orjson.loads(await request.read())["data"]
        async with self._changed:
            self.hooks.append(Hook(data["event_type"], data["payload"]))
            self._changed.notify_all()
        return web.Response(text="ok")

    def _find(self, event_type: str, leg: str | None) -> int | None:
        for i, hook in enumerate(self.hooks):
            wanted = hook.event_type == event_type and (leg is None or hook.leg == leg)
            if wanted and i not in self._taken:
                return i
        return None

    async def next(self, event_type: str, leg: str | None = None) -> Hook:
        """The earliest webhook of ``event_type`` (for ``leg``) not returned before."""
        async with asyncio.timeout(WAIT_S), self._changed:
            await self._changed.wait_for(lambda: self._find(event_type, leg) is not None)
            index = self._find(event_type, leg)
            assert index is not None
            self._taken.add(index)
            return self.hooks[index]


class TwilioEnv:
    def __init__(
        self, client: TestClient[Any, Any], org: Org, config: dict[str, Any], sim: TwilioSimulator
    ) -> None:
        self.client = client
        self.org = org
        self.config = config
        self.sim = sim
        assert client.app is not None
        self.app: web.Application = client.app

    @classmethod
    async def start(
        cls,
        aiohttp_server: Any,
        aiohttp_client: Any,
        tmp_path: Path,
        sim: TwilioSimulator,
        database_url: str | None = None,
    ) -> TwilioEnv:
        port = unused_port()
        settings = Settings(
            database_url=database_url or f"sqlite:///{tmp_path / 'callbridge.db'}",
            secret_key=SECRET_KEY,
            public_url=f"http://127.0.0.1:{port}",
            recordings_dir=str(tmp_path / "recordings"),
            # Simulators, bots and webhook receivers all listen on 127.0.0.1.
            allow_private_urls=True,
            # These tests share two cores with the simulators and (console tests) a browser
            # starting up, which can delay a tick past 20 ms for a second: refusing calls as
            # overloaded is tested in tests/test_admission_load.py, not wanted here.
            overload_late_s=0.2,
        )
        watch(sim)
        server = await aiohttp_server(create_app(settings), port=port)
        client = await aiohttp_client(server)
        org = await make_org(client, "acme", "Acme")
        config = await org.create_config(
            "twilio",
            name="Twilio (simulated)",
            account_sid=sim.account_sid,
            auth_token=sim.auth_token,
            api_base_url=sim.base_url,
        )
        return cls(client, org, config, sim)

    # --- the app's parts -----------------------------------------------------------------------

    @property
    def public_url(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    @property
    def runtime(self) -> CallRuntime:
        runtime: CallRuntime = self.app[RUNTIME]
        return runtime

    @property
    def kit(self) -> TwilioKit:
        kit = self.app[ADAPTERS].kits["twilio"]
        assert isinstance(kit, TwilioKit)
        return kit

    async def live_count(self, number: str) -> int:
        return await self.app[LIVE_LEGS].count_for_number(number)

    def leg_count(self) -> int:
        return len(self.runtime.machine.snapshot().legs)

    def leg_of(self, call: TwilioCall) -> str:
        """The call_control_id of a simulated call callbridge tracks."""
        leg: TwilioLeg | None = self.kit.legs.by_sid(call.sid)
        assert leg is not None, f"callbridge does not track {call.sid}"
        return leg.call_control_id

    def state(self, leg: str) -> str:
        return self.runtime.machine.leg(leg).state.value

    @staticmethod
    def stream_of(call: TwilioCall) -> ConnectStream:
        """The <Connect><Stream> callbridge answered the call's voice webhook with."""
        for record in call.events:
            if record.kind == "voice" and record.ok:
                verbs = parse_twiml(record.response)
                if verbs and isinstance(verbs[0], ConnectStream):
                    return verbs[0]
        raise AssertionError(f"{call.sid} got no <Connect><Stream>")

    # --- the platform API ----------------------------------------------------------------------

    async def bridge(
        self, name: str, numbers: tuple[str, ...], *, webhook_url: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        """A bridge with ``numbers`` (added to the simulated account) connected to it."""
        if webhook_url is not None:
            fields["webhook_url"] = webhook_url
        bridge = await self.org.create_bridge(name, **fields)
        for number in numbers:
            if number not in self.sim.numbers:
                self.sim.add_number(number)
            reply = await self.connect(bridge["slug"], number)
            assert reply.status == 200, reply.text
        return bridge

    async def connect(self, slug: str, number: str) -> Any:
        return await self.org.call(
            "POST",
            f"{BRIDGES}{slug}/connect-provider/",
            {"provider_config_id": self.config["id"], "phone_number": number},
        )

    # --- the Call Control API ------------------------------------------------------------------

    async def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.org.token}"}
        resp = await self.client.request(method, path, json=body, headers=headers)
        return resp.status, await resp.json()

    async def act(self, leg: str, action: str, body: Any = None) -> None:
        status, reply = await self.api("POST", f"/v2/calls/{leg}/actions/{action}", body or {})
        assert status == 200, reply


# --- audio ---------------------------------------------------------------------------------------


async def record_after(call: TwilioCall, seconds: float, timeout_s: float = WAIT_S) -> np.ndarray:
    """What ``call`` hears during the next ``seconds`` (waits on the call, not on a clock)."""
    start = len(call.received_audio())
    want = start + int(seconds * SAMPLE_RATE)
    await call.wait_until(lambda c: len(c.received_audio()) >= want, timeout_s)
    return call.received_audio()[start:want]


def assert_hears(audio: np.ndarray, hears: tuple[float, ...], own: float) -> None:
    """Each tone of ``hears`` at least 20 dB above the caller's own tone and the noise floor."""
    own_db = tone_level_db(audio, own)
    floor_db = noise_floor_db(audio, exclude_hz=(*hears, own))
    for freq in hears:
        level = tone_level_db(audio, freq)
        assert level >= own_db + 20, f"{freq} Hz at {level:.1f} dB vs own {own} Hz {own_db:.1f}"
        assert level >= floor_db + 20, f"{freq} Hz at {level:.1f} dB vs floor {floor_db:.1f}"
