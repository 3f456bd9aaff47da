"""A conference of four legs from three kinds of media (issue 14's required test): a Twilio
caller and two Telnyx callers (the simulators) and a websocket agent (a bot callbridge dials),
put in one conference with the official SDK's ``client.conferences``: each hears exactly the
other three, judged per 20 ms frame (``tests/e2e_checks.py``). Then, on the same four: a muted
participant is heard by nobody, a held one hears its hold audio and nobody hears it, unmute and
unhold bring both back, one leaves, ``end_conference`` hangs the rest up, and the conference's
webhooks come in that order."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.e2e_checks import bot_hearing, hearing, hearing_since, speak_to_bot, voices
from tests.test_e2e_conference_media import voice_wav
from tests.test_e2e_conferences import conference_events, sdk_for, since_now, three_answered
from tests.test_e2e_cross_provider import World, world
from tests.wsagent_bot import AgentBot

A_VOICE, B_VOICE, C_VOICE, BOT_VOICE, HOLD_VOICE = voices(5, room_size=4)


async def test_a_conference_of_twilio_telnyx_and_a_websocket_agent(
    tmp_path: Path, aiohttp_server: Any
) -> None:
    bot = await AgentBot.start(aiohttp_server, tone_hz=None)
    hold_url = voice_wav(tmp_path / "media" / "hold.wav", HOLD_VOICE)
    async with world(tmp_path, media_dir=tmp_path / "media") as w:
        sdk = sdk_for(w, w.org.token)
        try:
            await _four(w, sdk, bot, hold_url)
        finally:
            await sdk.close()


async def _four(w: World, sdk: Any, bot: AgentBot, hold_url: str) -> None:
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
        listed = [p.call_control_id async for p in sdk.conferences.list_participants(conf)]
        assert listed == [a, b, c, agent]
        calls = {"A": a_call, "B": b_call, "C": c_call}

        async def heard(expected: dict[str, tuple[list[Any], Any]]) -> None:
            starts = {name: since_now(calls[name]) for name in expected}
            await asyncio.gather(*(
                hearing_since(calls[name], starts[name], hears, own)
                for name, (hears, own) in expected.items()
            ))  # fmt: skip

        # B muted: nobody hears B, B hears the rest.
        await sdk.conferences.actions.mute(conf, call_control_ids=[b])
        await heard({
            "A": ([C_VOICE, BOT_VOICE], A_VOICE), "B": ([A_VOICE, C_VOICE, BOT_VOICE], B_VOICE),
            "C": ([A_VOICE, BOT_VOICE], C_VOICE),
        })  # fmt: skip
        # C on hold: it hears its hold audio alone, and nobody hears it.
        await sdk.conferences.actions.hold(conf, call_control_ids=[c], audio_url=hold_url)
        await heard({
            "A": ([BOT_VOICE], A_VOICE), "B": ([A_VOICE, BOT_VOICE], B_VOICE),
            "C": ([HOLD_VOICE], C_VOICE),
        })  # fmt: skip
        # Unmute (every participant) and unhold C: all four again.
        await sdk.conferences.actions.unmute(conf)
        await sdk.conferences.actions.unhold(conf, call_control_ids=[c])
        await heard({
            "A": ([B_VOICE, C_VOICE, BOT_VOICE], A_VOICE),
            "B": ([A_VOICE, C_VOICE, BOT_VOICE], B_VOICE),
            "C": ([A_VOICE, B_VOICE, BOT_VOICE], C_VOICE),
        })  # fmt: skip
        # C leaves (parked): the others go on without it.
        await sdk.conferences.actions.leave(conf, call_control_id=c)
        await heard({
            "A": ([B_VOICE, BOT_VOICE], A_VOICE), "B": ([A_VOICE, BOT_VOICE], B_VOICE),
        })  # fmt: skip
    finally:
        speaking.cancel()
        await asyncio.gather(speaking, return_exceptions=True)

    await sdk.conferences.actions.end_conference(conf)
    for leg in (a, b, agent):
        await w.app_server.wait_for("call.hangup", leg)
    await w.app_server.wait_until(lambda: len(conference_events(w, conf)) == 10, "all events")
    assert conference_events(w, conf) == [
        ("conference.created", a),
        *(("conference.participant.joined", leg) for leg in (a, b, c, agent)),
        ("conference.participant.left", c),
        *(("conference.participant.left", leg) for leg in (a, b, agent)),
        ("conference.ended", a),
    ]
    assert w.runtime.machine.leg(c).is_alive, "C left parked: end_conference hangs up members"
    await session.wait_closed()
