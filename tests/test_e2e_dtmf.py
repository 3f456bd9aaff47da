"""Key presses end to end: a Twilio caller (the simulator) bridged to a websocket agent (the
test bot), through the real app on 127.0.0.1.

A real phone behind Twilio can report one press twice: as a Media Streams ``dtmf`` message and
as the key's tones in the audio, which callbridge's in-band detector also hears. The application
must get one ``call.dtmf.received`` per press, and a bot bridged to the caller must get the press
as Twilio would give it to the bot directly: one ``dtmf`` message, the only place bot frameworks
(pipecat's ``TwilioFrameSerializer``) read key presses from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters.simulators import CallState, ToneSource, TwilioCall, TwilioSimulator
from tests.twilio_env import AppHooks, TwilioEnv, record_after
from tests.wsagent_bot import AgentBot, BotSession

NUMBER = "+15550001111"
CALLER = "+15557654321"


@pytest.fixture
async def sim() -> Any:
    async with TwilioSimulator() as simulator:
        yield simulator


@pytest.fixture
async def env(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, sim: TwilioSimulator
) -> TwilioEnv:
    return await TwilioEnv.start(aiohttp_server, aiohttp_client, tmp_path, sim)


@pytest.fixture
async def hooks(aiohttp_server: Any) -> AppHooks:
    return await AppHooks.start(aiohttp_server)


async def caller_bridged_to_bot(
    env: TwilioEnv, hooks: AppHooks, bot: AgentBot
) -> tuple[TwilioCall, str, BotSession]:
    """A Twilio caller answered by the application and bridged to a dialled bot."""
    bridge = await env.bridge("Support", (NUMBER,), webhook_url=hooks.url)
    caller = await env.sim.place_inbound_call(CALLER, NUMBER, source=ToneSource(440))
    leg = (await hooks.next("call.initiated")).leg
    await env.act(leg, "answer")
    await caller.wait_for(CallState.STREAMING)
    status, reply = await env.api(
        "POST",
        "/v2/calls",
        {"connection_id": bridge["slug"], "from": NUMBER, "to": bot.url, "link_to": leg},
    )
    assert status == 200, reply
    agent = reply["data"]["call_control_id"]
    session = await bot.session()
    await session.wait_event("start")
    await hooks.next("call.answered", agent)
    await env.act(leg, "bridge", {"call_control_id": agent})
    await hooks.next("call.bridged", leg)
    await session.listen(0, frames=5)  # the bot hears the caller: the bridge is live
    return caller, leg, session


async def test_a_twilio_callers_key_press_reaches_a_bridged_bot_and_the_app_once(
    env: TwilioEnv, hooks: AppHooks, aiohttp_server: Any
) -> None:
    bot = await AgentBot.start(aiohttp_server, tone_hz=None)
    caller, leg, session = await caller_bridged_to_bot(env, hooks, bot)

    # One press, reported both ways: the dtmf message and 120 ms of the key's tones.
    await caller.send_dtmf("5", tones_ms=120)
    first = await session.wait_event("dtmf")
    assert first == {
        "event": "dtmf",
        "streamSid": session.stream_sid,
        "sequenceNumber": first["sequenceNumber"],
        "dtmf": {"track": "inbound_track", "digit": "5"},
    }
    # Let the tones play out and be detected (the caller's paced media is the clock), then a
    # second press, message only: webhooks of one leg arrive in order, so once "7" is in, a
    # second "5" would have been too.
    await record_after(caller, 0.4)
    await caller.send_dtmf("7")
    await session.wait_event("dtmf", 2)
    assert (await hooks.next("call.dtmf.received", leg)).payload["digit"] == "5"
    assert (await hooks.next("call.dtmf.received", leg)).payload["digit"] == "7"
    digits = [h.payload["digit"] for h in hooks.hooks if h.event_type == "call.dtmf.received"]
    assert digits == ["5", "7"], "one webhook per key press"
    assert [m["dtmf"]["digit"] for m in session.of("dtmf")] == ["5", "7"]
    sequence = [int(m["sequenceNumber"]) for m in session.messages[1:]]
    assert sequence == list(range(1, len(sequence) + 1)), "dtmf is in the stream's sequence"
    assert caller.protocol_errors == []


async def test_two_quick_presses_of_one_key_are_two_key_presses(
    env: TwilioEnv, hooks: AppHooks, aiohttp_server: Any
) -> None:
    bot = await AgentBot.start(aiohttp_server, tone_hz=None)
    caller, leg, session = await caller_bridged_to_bot(env, hooks, bot)
    await caller.send_dtmf("3")
    await caller.send_dtmf("3")
    await session.wait_event("dtmf", 2)
    assert (await hooks.next("call.dtmf.received", leg)).payload["digit"] == "3"
    assert (await hooks.next("call.dtmf.received", leg)).payload["digit"] == "3"
    assert [m["dtmf"]["digit"] for m in session.of("dtmf")] == ["3", "3"]
    assert caller.protocol_errors == []
