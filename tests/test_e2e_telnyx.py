"""End to end with real audio: Telnyx callers (the simulator) through callbridge's Telnyx adapter.

- Two callers to a bridge with a ``webhook_url``: the application, using the official ``telnyx``
  SDK against callbridge's Call Control API, answers both and bridges them; each hears the
  other's tone at least 20 dB above its own and above the noise.
- Three callers to a bridge without ``webhook_url`` land in its conference; each hears exactly
  the other two.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import telnyx

from adapters.simulators import CallState, TelnyxCall, ToneSource
from tests.telnyx_harness import Stack, caller, heard_since, telnyx_stack, tone_margins, wait_ticks

NUMBERS = ("+15550002222", "+15550003333", "+15550004444")
TONES = (440.0, 1000.0, 1700.0)
SETTLE_FRAMES = 10  # after the last join, before listening
LISTEN_FRAMES = 40  # 0.8 s: 1.25 Hz resolution, far finer than the tones' spacing


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with telnyx_stack(tmp_path) as s:
        yield s


async def listen(calls: list[TelnyxCall]) -> list[Any]:
    """What each call heard over the same LISTEN_FRAMES, starting SETTLE_FRAMES from now."""
    starts = [call.playout_tick + SETTLE_FRAMES for call in calls]
    await asyncio.gather(
        *(wait_ticks(c, s + LISTEN_FRAMES, 5) for c, s in zip(calls, starts, strict=True))
    )
    return [heard_since(c, s, LISTEN_FRAMES) for c, s in zip(calls, starts, strict=True)]


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
    try:
        a = await stack.sim.place_inbound_call(caller(), NUMBERS[0], source=ToneSource(TONES[0]))
        b = await stack.sim.place_inbound_call(caller(), NUMBERS[1], source=ToneSource(TONES[1]))
        async with asyncio.timeout(5):
            await both_answered.wait()
        for leg in answered:
            await stack.app_server.wait_for("call.bridged", leg)
        await a.wait_for(CallState.STREAMING)
        await b.wait_for(CallState.STREAMING)
        heard_a, heard_b = await listen([a, b])
    finally:
        await sdk.close()

    assert min(tone_margins(heard_a, [TONES[1]], [TONES[0]])) >= 20
    assert min(tone_margins(heard_b, [TONES[0]], [TONES[1]])) >= 20
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
    calls = [
        await stack.sim.place_inbound_call(caller(), number, source=ToneSource(tone))
        for number, tone in zip(NUMBERS, TONES, strict=True)
    ]
    for call in calls:
        await call.wait_for(CallState.STREAMING)
    heard = await listen(calls)
    legs = [(await stack.leg_of(call)).leg_id for call in calls]
    rooms = {stack.runtime.machine.leg(leg).room_id for leg in legs}
    assert len(rooms) == 1 and None not in rooms
    for index, audio in enumerate(heard):
        others = [tone for i, tone in enumerate(TONES) if i != index]
        assert min(tone_margins(audio, others, [TONES[index]])) >= 20, (index, others)
