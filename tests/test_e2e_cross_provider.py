"""End to end across providers: a Twilio caller and a Telnyx caller bridged on real audio.

One callbridge app serves both simulators: a Twilio account and a Telnyx account whose numbers
sit on a bridge with a ``webhook_url``, each caller speaking a marked tone. The application behind
it uses the official ``telnyx`` SDK against callbridge's Call Control API to answer both legs and
bridge them; every frame each caller receives is judged by the load test's checker
(``tests/e2e_checks.py``). Then the Telnyx caller hangs up: the Twilio leg is parked when it was
bridged with ``park_after_unbridge: "self"`` (and hears nothing of the gone leg), otherwise the
Twilio simulator receives the REST hangup for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import telnyx
from aiohttp.test_utils import TestClient, TestServer, unused_port

from adapters.picows_media import MediaStreamListener
from adapters.simulators import CallState, SimulatedCall, TelnyxSimulator, TwilioSimulator
from adapters.transport import AiohttpMediaSocket
from adapters.wiring import ADAPTERS
from benchmarks.loadtest.frames import FRAME_SAMPLES
from benchmarks.loadtest.judge import judge
from engine.api.keys import RUNTIME
from engine.app import create_app
from engine.config import Settings
from engine.runtime.runtime import CallRuntime
from tests.e2e_checks import LISTEN_FRAMES, hearing, watch
from tests.engine_process import (
    TELNYX_NUMBER,
    TELNYX_VOICE,
    TWILIO_NUMBER,
    TWILIO_VOICE,
    two_callers,
)
from tests.platform_client import BRIDGES, Org, make_org
from tests.telnyx_harness import AppServer, telnyx_config

SECRET_KEY = "cross-provider-secret-" + "x" * 32
SETTLE = 10  # frames already on their way when the peer hung up


@dataclass
class World:
    twilio: TwilioSimulator
    telnyx: TelnyxSimulator
    client: TestClient  # type: ignore[type-arg]
    org: Org
    app_server: AppServer
    base_url: str

    @property
    def runtime(self) -> CallRuntime:
        assert self.client.app is not None
        return self.client.app[RUNTIME]

    async def connect(self, slug: str, config_id: int, number: str) -> None:
        reply = await self.org.call(
            "POST",
            f"{BRIDGES}{slug}/connect-provider/",
            {"provider_config_id": config_id, "phone_number": number},
        )
        assert reply.status == 200, reply.text


@contextlib.asynccontextmanager
async def world(
    tmp_path: Path, *, media_port: int | None = None, media_dir: Path | None = None
) -> AsyncIterator[World]:
    port = unused_port()
    base_url = f"http://127.0.0.1:{port}"
    settings = Settings(
        media_port=media_port,
        database_url=f"sqlite:///{tmp_path / 'callbridge.db'}",
        secret_key=SECRET_KEY,
        public_url=base_url,
        recordings_dir=str(tmp_path / "recordings"),
        media_dir=str(media_dir) if media_dir is not None else None,
        # Simulators, bots and webhook receivers all listen on 127.0.0.1.
        allow_private_urls=True,
    )
    client = TestClient(TestServer(create_app(settings), host="127.0.0.1", port=port))
    app_server = AppServer()
    twilio_sim, telnyx_sim = TwilioSimulator(), TelnyxSimulator()
    watch(twilio_sim, telnyx_sim)
    try:
        await twilio_sim.start()
        await telnyx_sim.start()
        await client.start_server()
        await app_server.start()
        org = await make_org(client, "acme", "Acme")
        twilio_cfg = await org.create_config(
            "twilio",
            account_sid=twilio_sim.account_sid,
            auth_token=twilio_sim.auth_token,
            api_base_url=twilio_sim.base_url,
        )
        telnyx_cfg_id, connection = await telnyx_config(org, telnyx_sim)
        w = World(twilio_sim, telnyx_sim, client, org, app_server, base_url)
        bridge = await org.create_bridge("Cross", webhook_url=app_server.url)
        twilio_sim.add_number(TWILIO_NUMBER)
        telnyx_sim.add_number(TELNYX_NUMBER, connection)
        await w.connect(bridge["slug"], twilio_cfg["id"], TWILIO_NUMBER)
        await w.connect(bridge["slug"], telnyx_cfg_id, TELNYX_NUMBER)
        yield w
    finally:
        # The simulators first: their calls close their media streams, so the app has none left
        # to wait out when it shuts down (the other order idled ~50 s per test).
        await telnyx_sim.close()
        await twilio_sim.close()
        await app_server.close()
        await client.close()


def played_past(tick: int) -> Callable[[SimulatedCall], bool]:
    return lambda call: call.playout_tick >= tick


async def bridged_pair(w: World, bridge_body: dict[str, Any]) -> tuple[Any, Any, str, str]:
    """Both callers in, answered and bridged by the application through the telnyx SDK."""
    sdk = telnyx.AsyncTelnyx(api_key=w.org.token, base_url=w.base_url + "/v2", max_retries=0)
    legs: dict[str, str] = {}  # "to" number -> leg
    both = asyncio.Event()

    async def application(data: dict[str, Any]) -> None:
        payload = data["payload"]
        if data["event_type"] == "call.initiated":
            await sdk.calls.actions.answer(payload["call_control_id"])
        elif data["event_type"] == "call.answered":
            legs[payload["to"]] = payload["call_control_id"]
            if len(legs) == 2:
                await sdk.calls.actions.bridge(
                    legs[TWILIO_NUMBER],
                    call_control_id_to_bridge_with=legs[TELNYX_NUMBER],
                    **bridge_body,
                )
                both.set()

    w.app_server.on_event = application
    try:
        twilio_call, telnyx_call = await two_callers(w.twilio, w.telnyx)
        async with asyncio.timeout(8):
            await both.wait()
        for leg in legs.values():
            await w.app_server.wait_for("call.bridged", leg)
        await twilio_call.wait_for(CallState.STREAMING)
        await telnyx_call.wait_for(CallState.STREAMING)
    finally:
        await sdk.close()
    return twilio_call, telnyx_call, legs[TWILIO_NUMBER], legs[TELNYX_NUMBER]


@pytest.mark.parametrize("media_port", [False, True], ids=["api-port", "media-port"])
async def test_twilio_and_telnyx_callers_bridged_by_the_sdk_hear_each_other(
    tmp_path: Path, media_port: bool
) -> None:
    port = unused_port() if media_port else None
    async with world(tmp_path, media_port=port) as w:
        twilio_call, telnyx_call, twilio_leg, telnyx_leg = await bridged_pair(w, {})
        assert (
            w.runtime.machine.leg(twilio_leg).room_id == w.runtime.machine.leg(telnyx_leg).room_id
        )
        sockets = w.client.app[ADAPTERS].require_sessions().sockets  # type: ignore[index]
        # Both streams (Twilio's signed over the media URL) came to the port they were given.
        kind = MediaStreamListener if media_port else AiohttpMediaSocket
        assert len(sockets) == 2 and all(isinstance(s, kind) for s in sockets), sockets
        await asyncio.gather(
            hearing(twilio_call, [TELNYX_VOICE], TWILIO_VOICE),
            hearing(telnyx_call, [TWILIO_VOICE], TELNYX_VOICE),
        )


async def test_a_parked_leg_hears_nothing_of_its_gone_peer_even_from_a_backlog(
    tmp_path: Path,
) -> None:
    """A provider side that stopped reading for a while holds a backlog of the room's audio
    (callbridge's queue, the sockets' buffers): when its leg leaves the room, callbridge drops
    its own queue and sends the provider ``clear``, so none of it plays once that is read."""
    async with world(tmp_path) as w:
        body = {"park_after_unbridge": "self"}
        twilio_call, telnyx_call, twilio_leg, telnyx_leg = await bridged_pair(w, body)
        await hearing(twilio_call, [TELNYX_VOICE], TWILIO_VOICE)
        stats = w.runtime.plane.stats.of(twilio_leg)
        twilio_call.stall_reading()
        # The socket buffers are full and callbridge holds frames: a second of audio waits.
        await twilio_call.wait_until(
            lambda _call: stats.output_queue is not None and stats.output_queue() >= 10
        )
        await telnyx_call.hang_up()
        await w.app_server.wait_for("call.hangup", telnyx_leg)
        assert w.runtime.machine.leg(twilio_leg).state.value == "parked"
        twilio_call.stall_reading(False)
        await twilio_call.wait_until(
            lambda call: any(m["event"] == "clear" for m in call.received_messages)
        )
        start = twilio_call.playout_tick + 1  # the tick playing when the clear was read
        await twilio_call.wait_until(played_past(start + LISTEN_FRAMES))
        after = twilio_call.received_audio()[start * FRAME_SAMPLES :]
        assert judge(after[: LISTEN_FRAMES * FRAME_SAMPLES], [], TWILIO_VOICE).problems() == []


@pytest.mark.parametrize("park", [True, False])
async def test_telnyx_hangup_parks_or_hangs_up_the_twilio_leg(tmp_path: Path, park: bool) -> None:
    body = {"park_after_unbridge": "self"} if park else {}
    async with world(tmp_path) as w:
        twilio_call, telnyx_call, twilio_leg, telnyx_leg = await bridged_pair(w, body)
        await telnyx_call.hang_up()
        await w.app_server.wait_for("call.hangup", telnyx_leg)
        if park:
            # The machine parks the survivor in the same step that emits the peer's call.hangup.
            assert w.runtime.machine.leg(twilio_leg).state.value == "parked"
            assert w.runtime.machine.leg(twilio_leg).is_alive
            # Nothing of the gone Telnyx caller (nor anything else) reaches the parked Twilio
            # leg: every frame it plays once those in flight have played is judged silent.
            start = twilio_call.playout_tick + SETTLE
            await twilio_call.wait_until(played_past(start + LISTEN_FRAMES))
            after = twilio_call.received_audio()[start * FRAME_SAMPLES :]
            assert judge(after[: LISTEN_FRAMES * FRAME_SAMPLES], [], TWILIO_VOICE).problems() == []
            assert not [r for r in w.twilio.requests if r.form.get("Status") == ["completed"]]
        else:
            await w.app_server.wait_for("call.hangup", twilio_leg)
            request = await w.twilio.wait_for_request(
                lambda r: r.method == "POST" and r.form.get("Status") == ["completed"]
            )
            assert twilio_call.sid in request.path
