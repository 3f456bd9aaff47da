"""End to end: a Twilio phone caller bridged to a websocket voice bot hears the bot, and back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.simulators import CallState, ToneSource, TwilioSimulator
from tests.twilio_env import AppHooks, TwilioEnv, assert_hears, record_after
from tests.wsagent_bot import AgentBot


@pytest.fixture
async def sim() -> AsyncIterator[TwilioSimulator]:
    async with TwilioSimulator() as simulator:
        yield simulator


async def test_phone_to_bot(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, sim: TwilioSimulator
) -> None:
    env = await TwilioEnv.start(aiohttp_server, aiohttp_client, tmp_path, sim)
    hooks = await AppHooks.start(aiohttp_server)
    bot = await AgentBot.start(aiohttp_server, tone_hz=1000)
    bridge = await env.bridge("Support", ("+15550002001",), webhook_url=hooks.url)
    call = await sim.place_inbound_call("+15557000440", "+15550002001", source=ToneSource(440))
    leg = (await hooks.next("call.initiated")).leg
    await env.act(leg, "answer")
    await call.wait_for(CallState.STREAMING)
    status, reply = await env.api(
        "POST",
        "/v2/calls",
        {
            "connection_id": bridge["slug"],
            "from": "+15557000440",
            "to": bot.url,
            "link_to": leg,
            "bridge_on_answer": True,
            "bridge_intent": True,
        },
    )
    assert status == 200, reply
    agent = reply["data"]["call_control_id"]
    await hooks.next("call.bridged", leg)
    session = await bot.session()
    await record_after(call, 0.2)
    heard = await record_after(call, 1.0)
    assert_hears(heard, (1000.0,), 440.0)
    n = len(session.media()) + 5
    await session.wait_media(n + 50)
    assert_hears(session.heard(from_frame=n, frames=50), (440.0,), 1000.0)
    await call.hang_up()
    await session.wait_closed()
    assert session.events()[-1] == "stop"
    await hooks.next("call.hangup", agent)
