"""End to end: a Twilio phone caller bridged to a websocket voice bot hears the bot, and back.

Both speak marked tones; every frame each receives is judged by the load test's checker
(``tests/e2e_checks.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.simulators import CallState, TwilioSimulator
from benchmarks.loadtest.judge import VoiceSource
from tests.e2e_checks import bot_hearing, hearing, speak_to_bot, tap, voices
from tests.twilio_env import AppHooks, TwilioEnv
from tests.wsagent_bot import AgentBot


@pytest.fixture
async def sim(aiohttp_server: Any) -> AsyncIterator[TwilioSimulator]:
    # Set up after aiohttp_server, so torn down before it: the simulator's calls end their
    # streams before the app shuts down.
    async with TwilioSimulator() as simulator:
        yield simulator


async def test_phone_to_bot(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, sim: TwilioSimulator
) -> None:
    env = await TwilioEnv.start(aiohttp_server, aiohttp_client, tmp_path, sim)
    hooks = await AppHooks.start(aiohttp_server)
    bot = await AgentBot.start(aiohttp_server, tone_hz=None)
    caller_voice, bot_voice = voices(2)
    bridge = await env.bridge("Support", ("+15550002001",), webhook_url=hooks.url)
    call = await sim.place_inbound_call(
        "+15557000440", "+15550002001", source=VoiceSource(caller_voice)
    )
    tap(call)
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
    await session.wait_event("start")
    speaking = speak_to_bot(session, bot_voice)
    try:
        await asyncio.gather(
            hearing(call, [bot_voice], caller_voice),
            bot_hearing(session, [caller_voice], bot_voice),
        )
    finally:
        speaking.cancel()
        await asyncio.gather(speaking, return_exceptions=True)
    await call.hang_up()
    await session.wait_closed()
    assert session.events()[-1] == "stop"
    await hooks.next("call.hangup", agent)
