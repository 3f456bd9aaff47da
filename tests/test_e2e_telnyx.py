"""End to end with real audio: Telnyx callers (the simulator) through callbridge's Telnyx adapter.

- Two callers to a bridge with a ``webhook_url``: the application, using the official ``telnyx``
  SDK against callbridge's Call Control API, answers both and bridges them; each hears the other.
- Three callers to a bridge without ``webhook_url`` land in its conference; each hears exactly
  the other two.

Callers speak marked tones and every frame they receive is judged by the load test's checker
(``tests/e2e_checks.py``): the expected voices at their levels, never the own, nothing missing
once the room is established, nothing duplicated.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import telnyx

from adapters.simulators import CallState
from benchmarks.loadtest.judge import VoiceSource
from tests.e2e_checks import hearing, tap, voices
from tests.telnyx_harness import Stack, caller, telnyx_stack

NUMBERS = ("+15550002222", "+15550003333", "+15550004444")


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with telnyx_stack(tmp_path) as s:
        yield s


async def test_two_callers_bridged_by_the_application_hear_each_other(stack: Stack) -> None:
    await stack.bridge(NUMBERS[0], NUMBERS[1], webhook_url=stack.app_server.url)
    sdk = telnyx.AsyncTelnyx(
        api_key=stack.org.token, base_url=stack.base_url + "/v2", max_retries=0
    )
    answered: list[str] = []
    both_answered = asyncio.Event()

    async def application(data: dict[str, Any]) -> None:
        leg = data["payload"]["call_control_id"]
        if data["event_type"] == "call.initiated":
            await sdk.calls.actions.answer(leg)
        elif data["event_type"] == "call.answered":
            answered.append(leg)
            if len(answered) == 2:
                both_answered.set()
                await sdk.calls.actions.bridge(
                    answered[0], call_control_id_to_bridge_with=answered[1]
                )

    stack.app_server.on_event = application
    voice_a, voice_b = voices(2)
    try:
        a = await stack.sim.place_inbound_call(caller(), NUMBERS[0], source=VoiceSource(voice_a))
        tap(a)
        b = await stack.sim.place_inbound_call(caller(), NUMBERS[1], source=VoiceSource(voice_b))
        tap(b)
        async with asyncio.timeout(5):
            await both_answered.wait()
        for leg in answered:
            await stack.app_server.wait_for("call.bridged", leg)
        await a.wait_for(CallState.STREAMING)
        await b.wait_for(CallState.STREAMING)
        await asyncio.gather(hearing(a, [voice_b], voice_a), hearing(b, [voice_a], voice_b))
    finally:
        await sdk.close()

    # Telnyx was asked to answer each call once, with a bidirectional PCMU stream to callbridge.
    answers = [r for r in stack.sim.requests if r.path.endswith("/actions/answer")]
    assert len(answers) == 2
    for request in answers:
        assert request.json["stream_bidirectional_mode"] == "rtp"
        assert request.json["stream_bidirectional_codec"] == "PCMU"
        assert request.json["stream_url"].startswith(
            stack.base_url.replace("http", "ws") + "/media/telnyx?token="
        )


async def test_three_callers_in_a_bridge_conference_each_hear_the_other_two(
    stack: Stack,
) -> None:
    await stack.bridge(*NUMBERS)
    said = voices(3)
    calls = []
    for number, voice in zip(NUMBERS, said, strict=True):
        call = await stack.sim.place_inbound_call(caller(), number, source=VoiceSource(voice))
        tap(call)
        calls.append(call)
    for call in calls:
        await call.wait_for(CallState.STREAMING)
        # The stream may start before callbridge has taken the answer that joins the room.
        await stack.taken(call, "call.answered")
    legs = [(await stack.leg_of(call)).leg_id for call in calls]
    rooms = {stack.runtime.machine.leg(leg).room_id for leg in legs}
    assert len(rooms) == 1 and None not in rooms
    await asyncio.gather(
        *(
            hearing(call, [v for v in said if v is not own], own)
            for call, own in zip(calls, said, strict=True)
        )
    )
