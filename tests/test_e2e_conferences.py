"""Conferences through the official telnyx SDK, on real audio: a Twilio caller and two Telnyx
callers (the simulators), answered by an application, put in one conference with
``client.conferences``: each hears exactly the other two (judged per 20 ms frame by
``tests/e2e_checks.py``); a muted one is heard by nobody while it still hears both; a leaving
one is parked; ``end_conference`` hangs up the rest. The conference.* webhooks arrive signed
through the outbox, in order, with the SDK's payload fields; another organization sees and
touches nothing of it; bad input gets 422/404 in Telnyx's error envelope.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import telnyx

from adapters.simulators import CallState, SimulatedCall
from benchmarks.loadtest.judge import Voice, VoiceSource
from tests.e2e_checks import hearing, hearing_since, tap, voices
from tests.platform_client import make_org
from tests.test_e2e_cross_provider import TELNYX_NUMBER, TWILIO_NUMBER, World, world

A_VOICE, B_VOICE, C_VOICE = voices(3, room_size=3)
SETTLE = 10  # frames on their way when a change was made
CONFERENCE_EVENTS = (
    "conference.created",
    "conference.participant.joined",
    "conference.participant.left",
    "conference.ended",
)


def sdk_for(w: World, token: str) -> telnyx.AsyncTelnyx:
    return telnyx.AsyncTelnyx(api_key=token, base_url=w.base_url + "/v2", max_retries=0)


async def three_answered(
    w: World, sdk: telnyx.AsyncTelnyx, spoken: tuple[Voice, Voice, Voice] | None = None
) -> dict[str, tuple[Any, str]]:
    """A (Twilio), B and C (Telnyx) called in, speaking ``spoken`` (A_VOICE, B_VOICE and C_VOICE
    unless given); the application answered each."""
    a_voice, b_voice, c_voice = spoken or (A_VOICE, B_VOICE, C_VOICE)
    legs: dict[str, str] = {}  # caller number -> leg
    answered = asyncio.Event()

    async def application(data: dict[str, Any]) -> None:
        payload = data["payload"]
        if data["event_type"] == "call.initiated":
            await sdk.calls.actions.answer(payload["call_control_id"])
        elif data["event_type"] == "call.answered":
            legs[payload["from"]] = payload["call_control_id"]
            if len(legs) == 3:
                answered.set()

    w.app_server.on_event = application
    calls: dict[str, SimulatedCall] = {}
    for name, number, voice in (("A", "+15557770001", a_voice),):
        calls[name] = await w.twilio.place_inbound_call(
            number, TWILIO_NUMBER, source=VoiceSource(voice)
        )
    for name, number, voice in (("B", "+15557770002", b_voice), ("C", "+15557770003", c_voice)):
        calls[name] = await w.telnyx.place_inbound_call(
            number, TELNYX_NUMBER, source=VoiceSource(voice)
        )
    for call in calls.values():
        tap(call)
    async with asyncio.timeout(10):
        await answered.wait()
    for call in calls.values():
        await call.wait_for(CallState.STREAMING)
    numbers = {"A": "+15557770001", "B": "+15557770002", "C": "+15557770003"}
    return {name: (calls[name], legs[number]) for name, number in numbers.items()}


def conference_events(w: World, conference_id: str) -> list[tuple[str, str]]:
    return [
        (e["event_type"], e["payload"]["call_control_id"])
        for e in w.app_server.events
        if e["event_type"] in CONFERENCE_EVENTS and e["payload"]["conference_id"] == conference_id
    ]


def since_now(call: SimulatedCall) -> int:
    assert call.playout is not None
    return len(call.playout.frames) + SETTLE  # type: ignore[attr-defined]


async def test_a_conference_of_three_built_with_the_sdk(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        sdk = sdk_for(w, w.org.token)
        try:
            await _conference_of_three(w, sdk)
        finally:
            await sdk.close()


async def _conference_of_three(w: World, sdk: telnyx.AsyncTelnyx) -> None:
    legs = await three_answered(w, sdk)
    (a_call, a), (b_call, b), (c_call, c) = legs["A"], legs["B"], legs["C"]
    created = await sdk.conferences.create(call_control_id=a, name="standup")
    assert created.data is not None and created.data.status == "in_progress"
    conf = created.data.id
    await sdk.conferences.actions.join(conf, call_control_id=b)
    await sdk.conferences.actions.join(conf, call_control_id=c)
    await w.app_server.wait_until(
        lambda: len(conference_events(w, conf)) >= 4, "created and three joins"
    )
    listed = [p async for p in sdk.conferences.list_participants(conf)]
    assert [p.call_control_id for p in listed] == [a, b, c]
    assert not any(p.muted for p in listed) and {p.conference.id for p in listed} == {conf}
    found = await sdk.conferences.retrieve_participant(b, id=conf)
    assert found.data is not None and found.data.call_control_id == b
    # Everyone hears exactly the other two.
    await asyncio.gather(
        hearing(a_call, [B_VOICE, C_VOICE], A_VOICE),
        hearing(b_call, [A_VOICE, C_VOICE], B_VOICE),
        hearing(c_call, [A_VOICE, B_VOICE], C_VOICE),
    )

    # B muted: nobody hears B, B still hears both.
    await sdk.conferences.actions.mute(conf, call_control_ids=[b])
    muted = [p.call_control_id async for p in sdk.conferences.list_participants(conf) if p.muted]
    assert muted == [b]
    starts = [since_now(call) for call in (a_call, b_call, c_call)]
    await asyncio.gather(
        hearing_since(a_call, starts[0], [C_VOICE], A_VOICE),
        hearing_since(b_call, starts[1], [A_VOICE, C_VOICE], B_VOICE),
        hearing_since(c_call, starts[2], [A_VOICE], C_VOICE),
    )
    # Unmute with no ids: every participant is heard again.
    await sdk.conferences.actions.unmute(conf)
    start = since_now(a_call)
    await hearing_since(a_call, start, [B_VOICE, C_VOICE], A_VOICE)

    # C leaves, parked; A and B go on hearing each other alone.
    await sdk.conferences.actions.leave(conf, call_control_id=c)
    assert w.runtime.machine.leg(c).state.value == "parked"
    start = since_now(a_call)
    await hearing_since(a_call, start, [B_VOICE], A_VOICE)

    # End: the rest are hung up, the conference is completed.
    await sdk.conferences.actions.end_conference(conf)
    for leg in (a, b):
        await w.app_server.wait_for("call.hangup", leg)
    got = await sdk.conferences.retrieve(conf)
    assert got.data is not None
    assert (got.data.status, got.data.end_reason) == ("completed", "ended_via_api")
    await w.app_server.wait_until(lambda: len(conference_events(w, conf)) == 8, "all events")
    assert conference_events(w, conf) == [
        ("conference.created", a),
        ("conference.participant.joined", a),
        ("conference.participant.joined", b),
        ("conference.participant.joined", c),
        ("conference.participant.left", c),
        ("conference.participant.left", a),
        ("conference.participant.left", b),
        ("conference.ended", a),
    ]
    ended = w.app_server.of("conference.ended")[0]
    assert ended["payload"]["reason"] == "ended_via_api"
    assert set(ended["payload"]) >= {"call_control_id", "conference_id", "occurred_at"}
    names = [c.name async for c in sdk.conferences.list(filter={"status": "completed"})]
    assert names == ["standup"]
    assert w.runtime.machine.leg(c).is_alive  # C was parked, not hung up


@pytest.mark.parametrize("kind", ["other-org", "bad-input"])
async def test_conferences_refuse_strangers_and_bad_input(tmp_path: Path, kind: str) -> None:
    async with world(tmp_path) as w:
        sdk = sdk_for(w, w.org.token)
        try:
            legs = await three_answered(w, sdk)
            a, b = legs["A"][1], legs["B"][1]
            created = await sdk.conferences.create(call_control_id=a, name="private")
            assert created.data is not None
            conf = created.data.id
            if kind == "other-org":
                await _stranger(w, conf, b)
            else:
                await _bad_input(sdk, conf, b)
        finally:
            await sdk.close()


async def _stranger(w: World, conf: str, b: str) -> None:
    other = await make_org(w.client, "other", "Other")
    stranger = sdk_for(w, other.token)
    try:
        assert [c async for c in stranger.conferences.list()] == []
        with pytest.raises(telnyx.NotFoundError) as caught:
            await stranger.conferences.retrieve(conf)
        assert caught.value.body["errors"][0]["code"]  # type: ignore[index]
        with pytest.raises(telnyx.NotFoundError):
            await stranger.conferences.list_participants(conf)
        for act in (
            stranger.conferences.actions.mute(conf),
            stranger.conferences.actions.end_conference(conf),
            stranger.conferences.actions.join(conf, call_control_id=b),
        ):
            with pytest.raises(telnyx.NotFoundError):
                await act
        # Its own leg? It has none: creating from ours is 404 too.
        with pytest.raises(telnyx.NotFoundError):
            await stranger.conferences.create(call_control_id=b, name="x")
    finally:
        await stranger.close()
    assert w.runtime.machine.conference(conf, w.org.org_id).status == "in_progress"


async def _bad_input(sdk: telnyx.AsyncTelnyx, conf: str, b: str) -> None:
    cases: list[tuple[Any, str]] = [
        (
            sdk.conferences.create(call_control_id=b, name="x", beep_enabled="always"),
            "beep_enabled",
        ),
        (sdk.conferences.create(call_control_id=b, name="x", region="US"), "region"),
        (sdk.conferences.create(call_control_id=b, name=""), "name"),
        (sdk.conferences.actions.join(conf, call_control_id=b, hold=True), "hold"),
        (sdk.conferences.actions.mute(conf, call_control_ids=[b]), "call_control_ids"),
        (sdk.conferences.actions.leave(conf, call_control_id=b), "call_control_id"),
    ]
    for request, field in cases:
        with pytest.raises(telnyx.UnprocessableEntityError) as caught:
            await request
        error = caught.value.body["errors"][0]  # type: ignore[index]
        assert error["source"]["pointer"] == "/" + field, error
    with pytest.raises(telnyx.NotFoundError):
        await sdk.conferences.actions.join(conf, call_control_id="v3:nobody")
    with pytest.raises(telnyx.NotFoundError):
        await sdk.conferences.retrieve("00000000-0000-0000-0000-000000000000")
    with pytest.raises(telnyx.NotFoundError):
        await sdk.conferences.retrieve_participant("nobody", id=conf)
