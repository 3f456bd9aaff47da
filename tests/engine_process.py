"""``callbridge serve`` as a real process, and the world the process tests share (issue 12,
point 2; issue 16, point 5).

``Engine`` runs ``python -m engine.cli serve`` on a port of its own, its output in a log file
under its directory, waits for ``/healthz``, and kills it with SIGKILL or stops it with SIGTERM.
``world`` is one such process on a SQLite file with the Twilio and Telnyx simulators and the
application (``AppServer``) behind a bridge with one number of each provider
(``connect_numbers``); ``bridged_pair`` brings a caller of each in, answered and bridged by the
application through the official telnyx SDK. tests/test_restart_e2e.py and
tests/test_cluster_failover_e2e.py (two processes on PostgreSQL and Redis) use them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import telnyx
from aiohttp.test_utils import unused_port

from adapters.simulators import CallState, SimulatedCall, TelnyxSimulator, TwilioSimulator
from benchmarks.loadtest.judge import VoiceSource
from tests.e2e_checks import Tap, tap, voices, watch
from tests.platform_client import BRIDGES, Org
from tests.telnyx_harness import AppServer

SECRET_KEY = "restart-e2e-secret-" + "x" * 32
TWILIO_NUMBER, TELNYX_NUMBER = "+15550101010", "+15550202020"
TWILIO_VOICE, TELNYX_VOICE = voices(2)
START_S = 30.0  # the longest a serve process may take to answer /healthz on a loaded machine


@dataclass
class Engine:
    """``callbridge serve`` as a process on one database (default: a SQLite file in
    ``tmp_path``, which also holds its recordings and its logs)."""

    tmp_path: Path
    port: int = field(default_factory=unused_port)
    process: asyncio.subprocess.Process | None = None
    runs: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)
    extra_args: tuple[str, ...] = ()
    database: str = ""

    def __post_init__(self) -> None:
        self.tmp_path.mkdir(parents=True, exist_ok=True)
        self.database = self.database or f"sqlite:///{self.tmp_path / 'callbridge.db'}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CALLBRIDGE_SECRET_KEY": SECRET_KEY,
            "CALLBRIDGE_DATABASE_URL": self.database,
            "CALLBRIDGE_PUBLIC_URL": self.base_url,
            "CALLBRIDGE_ALLOW_PRIVATE_URLS": "true",
            "CALLBRIDGE_RECORDINGS_DIR": str(self.tmp_path / "recordings"),
            "CALLBRIDGE_LOG_FORMAT": "json",
            **self.extra_env,
        }

    async def create_org(self) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "engine.cli", "org", "create", "--handle", "acme",
            "--name", "Acme", "--database", self.database,
            stdout=asyncio.subprocess.PIPE, env=self.env(),
        )  # fmt: skip
        out, _ = await process.communicate()
        assert process.returncode == 0
        created = json.loads(out)
        return int(created["org_id"]), str(created["token"])

    async def start(self) -> None:
        self.runs += 1
        log = (self.tmp_path / f"serve-{self.runs}.log").open("wb")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "engine.cli", "serve", "--host", "127.0.0.1",
            "--port", str(self.port), *self.extra_args,
            stdout=log, stderr=log, env=self.env(),
        )  # fmt: skip
        async with asyncio.timeout(START_S), aiohttp.ClientSession() as session:
            while True:
                assert self.process.returncode is None, self.logs()
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{self.base_url}/healthz") as reply:
                        if reply.status == 200:
                            return
                await asyncio.sleep(0.05)  # polling a port that is not listening yet

    def logs(self) -> str:
        return (self.tmp_path / f"serve-{self.runs}.log").read_text(errors="replace")[-4000:]

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def terminate(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    async def exited(self, within: float = 60.0) -> int:
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), within)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


@dataclass
class World:
    engine: Engine  # the process whose API the application (and the platform client) uses
    twilio: TwilioSimulator
    telnyx: TelnyxSimulator
    receiver: AppServer
    session: aiohttp.ClientSession
    org: Org
    legs: dict[str, str] = field(default_factory=dict)  # "to" number -> leg
    bridge_slug: str = ""
    config_ids: dict[str, int] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def world_of(
    engine: Engine, start: Callable[[], Awaitable[None]] | None = None
) -> AsyncIterator[World]:
    """The simulators, the application and ``engine``'s organization, then ``start`` (default:
    ``engine.start``) and the numbers connected through ``engine``'s API."""
    twilio_sim, telnyx_sim = TwilioSimulator(), TelnyxSimulator()
    watch(twilio_sim, telnyx_sim)
    receiver = AppServer()
    org_id, token = await engine.create_org()
    session = aiohttp.ClientSession(base_url=engine.base_url)
    try:
        await twilio_sim.start()
        await telnyx_sim.start()
        await receiver.start()
        await (start or engine.start)()
        org = Org(session, org_id, "acme", token)  # type: ignore[arg-type]
        w = World(engine, twilio_sim, telnyx_sim, receiver, session, org)
        await connect_numbers(w)
        yield w
    finally:
        await telnyx_sim.close()
        await twilio_sim.close()
        await engine.stop()
        await receiver.close()
        await session.close()


@contextlib.asynccontextmanager
async def world(tmp_path: Path, *args: str, **env: str) -> AsyncIterator[World]:
    """One serve process (``args``, ``env`` added) on a SQLite file in ``tmp_path``."""
    async with world_of(Engine(tmp_path, extra_env=env, extra_args=args)) as w:
        yield w


async def connect(w: World, provider: str, number: str) -> None:
    """Connect one more number of ``provider`` to the bridge."""
    reply = await w.org.call(
        "POST",
        f"{BRIDGES}{w.bridge_slug}/connect-provider/",
        {"provider_config_id": w.config_ids[provider], "phone_number": number},
    )
    assert reply.status == 200, reply.text


async def connect_numbers(w: World) -> None:
    twilio_cfg = await w.org.create_config(
        "twilio",
        account_sid=w.twilio.account_sid,
        auth_token=w.twilio.auth_token,
        api_base_url=w.twilio.base_url,
    )
    connection = w.telnyx.add_connection(webhook_url=None)
    telnyx_cfg = await w.org.create_config(
        "telnyx",
        account_sid=connection,
        auth_token=w.telnyx.api_key,
        public_key=w.telnyx.public_key,
        api_base_url=w.telnyx.base_url,
    )
    bridge = await w.org.create_bridge("Cross", webhook_url=w.receiver.url)
    w.bridge_slug = bridge["slug"]
    w.config_ids = {"twilio": twilio_cfg["id"], "telnyx": telnyx_cfg["id"]}
    w.twilio.add_number(TWILIO_NUMBER)
    w.telnyx.add_number(TELNYX_NUMBER, connection)
    await connect(w, "twilio", TWILIO_NUMBER)
    await connect(w, "telnyx", TELNYX_NUMBER)


async def two_callers(
    twilio: TwilioSimulator, telnyx_sim: TelnyxSimulator
) -> tuple[SimulatedCall, SimulatedCall]:
    """A Twilio caller to ``TWILIO_NUMBER`` speaking ``TWILIO_VOICE`` and a Telnyx caller to
    ``TELNYX_NUMBER`` speaking ``TELNYX_VOICE``, each tapped (``tests/e2e_checks.tap``)."""
    twilio_call = await twilio.place_inbound_call(
        "+15557770001", TWILIO_NUMBER, source=VoiceSource(TWILIO_VOICE)
    )
    tap(twilio_call)
    telnyx_call = await telnyx_sim.place_inbound_call(
        "+15557770002", TELNYX_NUMBER, source=VoiceSource(TELNYX_VOICE)
    )
    tap(telnyx_call)
    return twilio_call, telnyx_call


async def bridged_pair(w: World) -> tuple[SimulatedCall, SimulatedCall]:
    """Both callers in, answered and bridged by the application through the telnyx SDK."""
    sdk = telnyx.AsyncTelnyx(api_key=w.org.token, base_url=w.engine.base_url + "/v2")

    async def application(data: dict[str, Any]) -> None:
        payload = data["payload"]
        if data["event_type"] == "call.initiated":
            await sdk.calls.actions.answer(payload["call_control_id"])
        elif data["event_type"] == "call.answered":
            w.legs[payload["to"]] = payload["call_control_id"]
            if len(w.legs) == 2:
                await sdk.calls.actions.bridge(
                    w.legs[TWILIO_NUMBER], call_control_id_to_bridge_with=w.legs[TELNYX_NUMBER]
                )

    w.receiver.on_event = application
    twilio_call, telnyx_call = await two_callers(w.twilio, w.telnyx)
    await w.receiver.wait_until(
        lambda: (
            len(w.legs) == 2 and all(w.receiver.of("call.bridged", leg) for leg in w.legs.values())
        ),
        "both legs bridged",
    )
    w.receiver.on_event = None
    await sdk.close()
    return twilio_call, telnyx_call


async def until(check: Callable[[], Awaitable[bool]], what: str, within: float = 20.0) -> None:
    async with asyncio.timeout(within):
        # Another process's state (its API, its files): nothing here to await but its answers.
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert await check(), what


async def new_stream_start(call: SimulatedCall, streams: int, timeout_s: float = 5.0) -> int:
    """The tap frame at which the call's ``streams``-th stream was up."""
    await call.wait_until(
        lambda c: len(c.streams) >= streams and c.state is CallState.STREAMING, timeout_s
    )
    assert isinstance(call.playout, Tap)
    return len(call.playout.frames)


async def pending_deliveries(engine: Engine, token: str, event_type: str | None = None) -> int:
    """How many webhooks (of ``event_type``, or all) wait for delivery, as ``engine``'s API
    lists them."""
    params = {"page[size]": "100"} | ({"filter[event_type]": event_type} if event_type else {})
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{engine.base_url}/v2/webhook_deliveries",
            params=params,
            headers={"Authorization": f"Bearer {token}"},
        ) as reply,
    ):
        body = await reply.json()
        assert reply.status == 200, body
    return sum(1 for d in body["data"] if d["status"] is None)
