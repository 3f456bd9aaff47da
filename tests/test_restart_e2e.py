"""kill -9 and restart during a live call, with real processes (issue 12, point 2).

``callbridge serve`` runs as its own process on a SQLite file; the Twilio and Telnyx simulators
and the application (official telnyx SDK behind a webhook receiver) run here. A Twilio caller
and a Telnyx caller are bridged and hear each other; the application's receiver goes down
(503) and the Twilio caller presses keys, so webhooks wait in the outbox; the process is killed
with SIGKILL and a new one started on the same database. The receiver comes back and must get
every webhook produced before the kill, each id once, in order; both callers must hear each
other again (judged per 20 ms frame from the moment their new streams are up) and the
application must get no ``call.hangup``. When the engine stays down longer than the providers
hold the calls, the legs end, and the restarted engine tells the application with
``call.hangup`` for each.
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
import pytest
import telnyx
from aiohttp.test_utils import unused_port

from adapters.simulators import CallState, SimulatedCall, TelnyxSimulator, TwilioSimulator
from benchmarks.loadtest.judge import VoiceSource
from tests.e2e_checks import Tap, hearing, hearing_since, tap, voices, watch
from tests.platform_client import BRIDGES, Org
from tests.telnyx_harness import AppServer

pytestmark = pytest.mark.slow_family  # processes killed and restarted: once per CI run

SECRET_KEY = "restart-e2e-secret-" + "x" * 32
TWILIO_NUMBER, TELNYX_NUMBER = "+15550101010", "+15550202020"
SECOND_TWILIO_NUMBER = "+15550101011"
TWILIO_VOICE, TELNYX_VOICE = voices(2)
START_S = 30.0  # the longest a serve process may take to answer /healthz on a loaded machine


@dataclass
class Engine:
    """``callbridge serve`` as a process on one database."""

    tmp_path: Path
    port: int = field(default_factory=unused_port)
    process: asyncio.subprocess.Process | None = None
    runs: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)
    extra_args: tuple[str, ...] = ()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database(self) -> str:
        return f"sqlite:///{self.tmp_path / 'callbridge.db'}"

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
    engine: Engine
    twilio: TwilioSimulator
    telnyx: TelnyxSimulator
    receiver: AppServer
    session: aiohttp.ClientSession
    org: Org
    legs: dict[str, str] = field(default_factory=dict)  # "to" number -> leg
    bridge_slug: str = ""
    config_ids: dict[str, int] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def world(tmp_path: Path, *args: str, **env: str) -> AsyncIterator[World]:
    engine = Engine(tmp_path, extra_env=env, extra_args=args)
    twilio_sim, telnyx_sim = TwilioSimulator(), TelnyxSimulator()
    watch(twilio_sim, telnyx_sim)
    receiver = AppServer()
    org_id, token = await engine.create_org()
    session = aiohttp.ClientSession(base_url=engine.base_url)
    try:
        await twilio_sim.start()
        await telnyx_sim.start()
        await receiver.start()
        await engine.start()
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
    for config, number in ((twilio_cfg, TWILIO_NUMBER), (telnyx_cfg, TELNYX_NUMBER)):
        reply = await w.org.call(
            "POST",
            f"{BRIDGES}{bridge['slug']}/connect-provider/",
            {"provider_config_id": config["id"], "phone_number": number},
        )
        assert reply.status == 200, reply.text


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
    twilio_call = await w.twilio.place_inbound_call(
        "+15557770001", TWILIO_NUMBER, source=VoiceSource(TWILIO_VOICE)
    )
    tap(twilio_call)
    telnyx_call = await w.telnyx.place_inbound_call(
        "+15557770002", TELNYX_NUMBER, source=VoiceSource(TELNYX_VOICE)
    )
    tap(telnyx_call)
    await w.receiver.wait_until(
        lambda: (
            len(w.legs) == 2 and all(w.receiver.of("call.bridged", leg) for leg in w.legs.values())
        ),
        "both legs bridged",
    )
    w.receiver.on_event = None
    await sdk.close()
    return twilio_call, telnyx_call


async def pending_deliveries(w: World, event_type: str) -> int:
    reply = await w.session.get(
        "/v2/webhook_deliveries",
        params={"filter[event_type]": event_type, "page[size]": "100"},
        headers={"Authorization": f"Bearer {w.org.token}"},
    )
    body = await reply.json()
    assert reply.status == 200, body
    return sum(1 for d in body["data"] if d["status"] is None)


async def until(check: Callable[[], Awaitable[bool]], what: str, within: float = 20.0) -> None:
    async with asyncio.timeout(within):
        # Another process's state (its API, its files): nothing here to await but its answers.
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert await check(), what


async def new_stream_start(call: SimulatedCall, streams: int) -> int:
    """The tap frame at which the call's ``streams``-th stream was up."""
    await call.wait_until(lambda c: len(c.streams) >= streams and c.state is CallState.STREAMING)
    assert isinstance(call.playout, Tap)
    return len(call.playout.frames)


async def test_kill_9_and_a_restart_resume_a_bridged_call_and_deliver_every_webhook(
    tmp_path: Path,
) -> None:
    async with world(tmp_path) as w:
        twilio_call, telnyx_call = await bridged_pair(w)
        await asyncio.gather(
            hearing(twilio_call, [TELNYX_VOICE], TWILIO_VOICE),
            hearing(telnyx_call, [TWILIO_VOICE], TELNYX_VOICE),
        )
        twilio_leg, telnyx_leg = w.legs[TWILIO_NUMBER], w.legs[TELNYX_NUMBER]
        w.receiver.down = True
        for digit in "123":
            await twilio_call.send_dtmf(digit)

        async def three_waiting() -> bool:
            return await pending_deliveries(w, "call.dtmf.received") >= 3

        await until(three_waiting, "three key presses stored for delivery")
        await w.engine.kill()
        await w.engine.start()
        w.receiver.down = False

        # Every webhook from before the kill arrives, each id once, in order.
        await w.receiver.wait_until(
            lambda: len(w.receiver.of("call.dtmf.received", twilio_leg)) >= 3, "key presses"
        )
        digits = [e["payload"]["digit"] for e in w.receiver.of("call.dtmf.received", twilio_leg)]
        assert digits == ["1", "2", "3"]
        ids = [e["id"] for e in w.receiver.events]
        assert len(ids) == len(set(ids)), "a webhook arrived twice"
        # Both callers hear each other again on new streams, judged frame by frame from then.
        starts = await asyncio.gather(
            new_stream_start(twilio_call, 2), new_stream_start(telnyx_call, 2)
        )
        await asyncio.gather(
            hearing_since(twilio_call, starts[0], [TELNYX_VOICE], TWILIO_VOICE),
            hearing_since(telnyx_call, starts[1], [TWILIO_VOICE], TELNYX_VOICE),
        )
        assert twilio_call.state is not CallState.ENDED and telnyx_call.state is not CallState.ENDED
        for leg in (twilio_leg, telnyx_leg):
            assert not w.receiver.of("call.hangup", leg), w.engine.logs()


async def test_engine_down_longer_than_the_providers_hold_the_calls_ends_them_with_call_hangup(
    tmp_path: Path,
) -> None:
    # Twilio holds the caller 2 s after the stream closes (the <Pause> after </Connect>); the
    # Telnyx caller gives up and hangs up while nobody answers.
    async with world(tmp_path, CALLBRIDGE_STREAM_HOLD_S="2") as w:
        twilio_call, telnyx_call = await bridged_pair(w)
        twilio_leg, telnyx_leg = w.legs[TWILIO_NUMBER], w.legs[TELNYX_NUMBER]
        await w.engine.kill()
        await telnyx_call.hang_up()
        await twilio_call.wait_for(CallState.ENDED, timeout_s=15)
        await w.engine.start()
        await w.receiver.wait_until(
            lambda: (
                bool(w.receiver.of("call.hangup", twilio_leg))
                and bool(w.receiver.of("call.hangup", telnyx_leg))
            ),
            "call.hangup for both legs",
            # A webhook the killed process was sending (call.bridged, say) holds its leg's
            # later ones until its claim lapses: 20 s after it was claimed (the POST's 10 s
            # timeout and 10 s more, engine/webhooks/outbox.py), on a machine that may be busy.
            within=35.0,
        )
        # Each leg ends once, whichever news comes first: asking its provider (Twilio's call
        # ended in the pause; Telnyx's caller hung up), Telnyx's own call.hangup webhook retried
        # until the engine is back, or the peer's hangup ending the bridge.
        for leg in (twilio_leg, telnyx_leg):
            assert len(w.receiver.of("call.hangup", leg)) == 1, w.receiver.of("call.hangup", leg)


async def get_status(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        return reply.status


async def test_sigterm_stops_admitting_at_once_and_hands_the_call_to_the_next_process(
    tmp_path: Path,
) -> None:
    async with world(tmp_path, CALLBRIDGE_SHUTDOWN_GRACE_S="3") as w:
        w.twilio.add_number(SECOND_TWILIO_NUMBER)
        await connect(w, "twilio", SECOND_TWILIO_NUMBER)
        twilio_call, telnyx_call = await bridged_pair(w)
        twilio_leg, telnyx_leg = w.legs[TWILIO_NUMBER], w.legs[TELNYX_NUMBER]
        base = w.engine.base_url
        assert await get_status(f"{base}/readyz") == 200
        await w.engine.terminate()

        async def not_ready() -> bool:
            return await get_status(f"{base}/readyz") == 503

        await until(not_ready, "/readyz 503 once SIGTERM arrived", within=2.0)
        assert await get_status(f"{base}/healthz") == 200
        # A new call on a number with a free channel is turned away busy while it stops.
        late = await w.twilio.place_inbound_call("+15557770009", SECOND_TWILIO_NUMBER)
        await late.wait_for(CallState.ENDED)
        assert late.end_reason == "busy"
        assert await w.engine.exited() == 0
        assert "shutting down" in w.engine.logs()

        await w.engine.start()
        starts = await asyncio.gather(
            new_stream_start(twilio_call, 2), new_stream_start(telnyx_call, 2)
        )
        await asyncio.gather(
            hearing_since(twilio_call, starts[0], [TELNYX_VOICE], TWILIO_VOICE),
            hearing_since(telnyx_call, starts[1], [TWILIO_VOICE], TELNYX_VOICE),
        )
        for leg in (twilio_leg, telnyx_leg):
            assert not w.receiver.of("call.hangup", leg)


async def test_sigterm_with_drain_ends_the_calls_with_their_webhooks_and_recordings(
    tmp_path: Path,
) -> None:
    async with world(tmp_path, "--drain", "--drain-timeout", "1") as w:
        twilio_call, telnyx_call = await bridged_pair(w)
        twilio_leg, telnyx_leg = w.legs[TWILIO_NUMBER], w.legs[TELNYX_NUMBER]
        sdk = telnyx.AsyncTelnyx(api_key=w.org.token, base_url=w.engine.base_url + "/v2")
        try:
            await sdk.calls.actions.start_recording(twilio_leg, format="mp3", channels="single")
        finally:
            await sdk.close()
        await w.engine.terminate()
        assert await w.engine.exited() == 0
        for leg in (twilio_leg, telnyx_leg):
            assert len(w.receiver.of("call.hangup", leg)) == 1, w.engine.logs()
        (saved,) = w.receiver.of("call.recording.saved", twilio_leg)
        assert saved["payload"]["recording_urls"]["mp3"]
        await twilio_call.wait_for(CallState.ENDED)
        await telnyx_call.wait_for(CallState.ENDED)
