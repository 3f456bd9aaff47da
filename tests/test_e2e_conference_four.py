"""A conference of four legs from three kinds of media (issue 14's required test): a Twilio
caller and two Telnyx callers (the simulators) and a websocket agent (a bot callbridge dials),
put in one conference with the official SDK's ``client.conferences``: each hears exactly the
other three, judged per 20 ms frame (``tests/e2e_checks.py``); ``end_conference`` hangs all up."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.e2e_checks import bot_hearing, hearing, speak_to_bot, voices
from tests.test_e2e_conferences import conference_events, sdk_for, three_answered
from tests.test_e2e_cross_provider import World, world
from tests.wsagent_bot import AgentBot

A_VOICE, B_VOICE, C_VOICE, BOT_VOICE = voices(4, room_size=4)


async def test_a_conference_of_twilio_telnyx_and_a_websocket_agent(
    tmp_path: Path, aiohttp_server: Any
) -> None:
    bot = await AgentBot.start(aiohttp_server, tone_hz=None)
    async with world(tmp_path) as w:
        sdk = sdk_for(w, w.org.token)
        try:
            await _four(w, sdk, bot)
        finally:
            await sdk.close()


async def _four(w: World, sdk: Any, bot: AgentBot) -> None:
    legs = await three_answered(w, sdk, (A_VOICE, B_VOICE, C_VOICE))
    (a_call, a), (b_call, b), (c_call, c) = legs["A"], legs["B"], legs["C"]

    async def quiet(data: dict[str, Any]) -> None:
        return None  # the agent leg is dialled: nothing to answer

    w.app_server.on_event = quiet
    created = await sdk.conferences.create(call_control_id=a, name="four")
    conf = created.data.id
    for leg in (b, c):
        await sdk.conferences.actions.join(conf, call_control_id=leg)
    dialled = await sdk.calls.dial(
        connection_id=w.runtime.machine.leg(a).connection_id, from_="+15557770004", to=bot.url
    )
    agent = dialled.data.call_control_id
    await w.app_server.wait_for("call.answered", agent)
    await sdk.conferences.actions.join(conf, call_control_id=agent)
    session = await bot.session()
    await session.wait_event("start")
    speaking = speak_to_bot(session, BOT_VOICE)
    try:
        await asyncio.gather(
            hearing(a_call, [B_VOICE, C_VOICE, BOT_VOICE], A_VOICE),
            hearing(b_call, [A_VOICE, C_VOICE, BOT_VOICE], B_VOICE),
            hearing(c_call, [A_VOICE, B_VOICE, BOT_VOICE], C_VOICE),
            bot_hearing(session, [A_VOICE, B_VOICE, C_VOICE], BOT_VOICE),
        )
    finally:
        speaking.cancel()
        await asyncio.gather(speaking, return_exceptions=True)
    listed = [p.call_control_id async for p in sdk.conferences.list_participants(conf)]
    assert listed == [a, b, c, agent]

    await sdk.conferences.actions.end_conference(conf)
    for leg in (a, b, c, agent):
        await w.app_server.wait_for("call.hangup", leg)
    joined = [leg for kind, leg in conference_events(w, conf) if kind.endswith("joined")]
    assert joined == [a, b, c, agent]
    await session.wait_closed()
