"""Supervision through the official telnyx SDK, on real audio (judged per 20 ms frame per leg by
``tests/e2e_checks.py``, each leg a distinct voice): a Twilio caller A bridged with a Telnyx
caller B; a websocket agent S dialled with ``supervise_call_control_id`` A joins their bridge on
answer. ``whisper``: A hears B and S, B hears A only; ``monitor``: A and B hear each other only;
``barge``: everyone hears the other two; S hears A and B throughout. ``switch_supervisor_role``
changes it live. In a conference, a participant updated to ``whisper`` with
``whisper_call_control_ids`` is heard by those only and still hears everyone.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import telnyx

from adapters.simulators import SimulatedCall
from tests.e2e_checks import bot_hearing, hearing, hearing_since, speak_to_bot, voices
from tests.test_e2e_conferences import sdk_for, since_now, three_answered
from tests.test_e2e_cross_provider import World, world
from tests.wsagent_bot import AgentBot

# three_answered's callers speak voices(3, room_size=3); S speaks a fourth voice.
A_VOICE, B_VOICE, C_VOICE, S_VOICE = voices(4, room_size=3)


async def quiet(_data: dict[str, Any]) -> None:
    """The application once its callers are answered: it does nothing more on its own."""


async def heard_from_now(
    checks: list[tuple[SimulatedCall, list[Any], Any]],
) -> None:
    starts = [since_now(call) for call, _, _ in checks]
    await asyncio.gather(
        *(
            hearing_since(call, start, hears, own)
            for (call, hears, own), start in zip(checks, starts, strict=True)
        )
    )


async def test_a_supervisor_whispers_monitors_and_barges_on_a_bridge(
    tmp_path: Path, aiohttp_server: Any
) -> None:
    async with world(tmp_path) as w:
        sdk = sdk_for(w, w.org.token)
        try:
            await _supervised_bridge(w, sdk, await AgentBot.start(aiohttp_server, tone_hz=None))
        finally:
            await sdk.close()


async def _supervised_bridge(w: World, sdk: telnyx.AsyncTelnyx, bot: AgentBot) -> None:
    legs = await three_answered(w, sdk)
    w.app_server.on_event = quiet
    (a_call, a), (b_call, b) = legs["A"], legs["B"]
    await sdk.calls.actions.bridge(a, call_control_id_to_bridge_with=b)
    await w.app_server.wait_for("call.bridged", b)
    await asyncio.gather(hearing(a_call, [B_VOICE], A_VOICE), hearing(b_call, [A_VOICE], B_VOICE))
    bridge = await w.org.create_bridge("Supervisors", webhook_url=w.app_server.url)
    dialed = await sdk.calls.dial(
        connection_id=bridge["slug"],
        from_="+15557770009",
        to=bot.url,
        supervise_call_control_id=a,
        supervisor_role="whisper",
    )
    assert dialed.data is not None
    s = dialed.data.call_control_id
    session = await bot.session()
    await session.wait_event("start")
    await w.app_server.wait_for("call.answered", s)
    speaking = speak_to_bot(session, S_VOICE)
    try:
        # Whisper: only A, the supervised leg, hears S; S hears both.
        await asyncio.gather(
            bot_hearing(session, [A_VOICE, B_VOICE], S_VOICE),
            heard_from_now([(a_call, [B_VOICE, S_VOICE], A_VOICE), (b_call, [A_VOICE], B_VOICE)]),
        )
        room = w.runtime.machine.leg(a).room_id
        assert room is not None and w.runtime.machine.leg(s).room_id == room
        # Monitor: nobody hears S.
        switched = await sdk.calls.actions.switch_supervisor_role(s, role="monitor")
        assert switched.data is not None and switched.data.result == "ok"
        await heard_from_now([(a_call, [B_VOICE], A_VOICE), (b_call, [A_VOICE], B_VOICE)])
        # Barge: everyone hears S.
        await sdk.calls.actions.switch_supervisor_role(s, role="barge")
        await heard_from_now(
            [(a_call, [B_VOICE, S_VOICE], A_VOICE), (b_call, [A_VOICE, S_VOICE], B_VOICE)]
        )
        # S hangs up: the bridge goes on, A and B hear each other alone.
        await sdk.calls.actions.hangup(s)
        await w.app_server.wait_for("call.hangup", s)
        await heard_from_now([(a_call, [B_VOICE], A_VOICE), (b_call, [A_VOICE], B_VOICE)])
        assert w.runtime.machine.leg(a).state.value == "bridged"
    finally:
        speaking.cancel()
    # Telnyx's dial webhooks for the supervisor; no bridge of its own.
    events = [e["event_type"] for e in w.app_server.events if e["payload"]["call_control_id"] == s]
    assert [e for e in events if e.startswith("call.")] == [
        "call.initiated",
        "call.answered",
        "call.hangup",
    ]


async def test_bad_supervision_is_refused_naming_the_field(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        sdk = sdk_for(w, w.org.token)
        try:
            legs = await three_answered(w, sdk)
            w.app_server.on_event = quiet
            a = legs["A"][1]
            bridge = await w.org.create_bridge("Supervisors", webhook_url=w.app_server.url)
            dial = {"connection_id": bridge["slug"], "from_": "+15557770009", "to": "wss://x.test"}
            with pytest.raises(telnyx.UnprocessableEntityError) as caught:
                # A is answered but in no room: nothing to supervise.
                await sdk.calls.dial(**dial, supervise_call_control_id=a, supervisor_role="barge")
            assert _field(caught.value) == "supervise_call_control_id"
            with pytest.raises(telnyx.UnprocessableEntityError) as caught:
                await sdk.calls.actions.switch_supervisor_role(a, role="monitor")
            with pytest.raises(telnyx.UnprocessableEntityError) as caught:
                await sdk.calls.actions.switch_supervisor_role(a, role="boss")  # type: ignore[arg-type]
            assert _field(caught.value) == "role"
        finally:
            await sdk.close()


def _field(error: telnyx.APIStatusError) -> str:
    return str(error.body["errors"][0]["source"]["pointer"]).rsplit("/", 1)[-1]  # type: ignore[index]


async def test_a_conference_participant_updated_to_whisper(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        sdk = sdk_for(w, w.org.token)
        try:
            await _conference_whisper(w, sdk)
        finally:
            await sdk.close()


async def _conference_whisper(w: World, sdk: telnyx.AsyncTelnyx) -> None:
    legs = await three_answered(w, sdk)
    (a_call, a), (b_call, b), (c_call, c) = legs["A"], legs["B"], legs["C"]
    created = await sdk.conferences.create(call_control_id=a, name="coaching")
    assert created.data is not None
    conf = created.data.id
    await sdk.conferences.actions.join(conf, call_control_id=b)
    await sdk.conferences.actions.join(conf, call_control_id=c, supervisor_role="monitor")
    # Monitor: C hears both, nobody hears C.
    await asyncio.gather(
        hearing(a_call, [B_VOICE], A_VOICE),
        hearing(b_call, [A_VOICE], B_VOICE),
        hearing(c_call, [A_VOICE, B_VOICE], C_VOICE),
    )
    # Whisper to A: A alone hears C.
    updated = await sdk.conferences.actions.update(
        conf, call_control_id=c, supervisor_role="whisper", whisper_call_control_ids=[a]
    )
    assert updated.data is not None and updated.data.result == "ok"
    await heard_from_now(
        [
            (a_call, [B_VOICE, C_VOICE], A_VOICE),
            (b_call, [A_VOICE], B_VOICE),
            (c_call, [A_VOICE, B_VOICE], C_VOICE),
        ]
    )
    whispering = [
        (p.call_control_id, p.whisper_call_control_ids)
        async for p in sdk.conferences.list_participants(conf, filter={"whispering": True})
    ]
    assert whispering == [(c, [a])]
    # Muted, a whisperer is heard by nobody.
    await sdk.conferences.actions.mute(conf, call_control_ids=[c])
    await heard_from_now([(a_call, [B_VOICE], A_VOICE), (b_call, [A_VOICE], B_VOICE)])
    # Unmuted and back to none: everyone hears everyone.
    await sdk.conferences.actions.unmute(conf, call_control_ids=[c])
    await sdk.conferences.actions.update(conf, call_control_id=c, supervisor_role="none")
    await heard_from_now(
        [(a_call, [B_VOICE, C_VOICE], A_VOICE), (b_call, [A_VOICE, C_VOICE], B_VOICE)]
    )
