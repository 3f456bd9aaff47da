"""End to end with real audio: Twilio callers (the simulator) through the real callbridge app.

Every caller streams a tone over Twilio Media Streams; what each one hears is judged by its
spectrum: the tones it should hear at least 20 dB above its own tone and the noise floor.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.simulators import CallState, ToneSource, TwilioSimulator
from tests.twilio_env import AppHooks, TwilioEnv, assert_hears, record_after

CALLERS = {"+15557000440": 440.0, "+15557000700": 700.0, "+15557001000": 1000.0}


@pytest.fixture
async def sim() -> AsyncIterator[TwilioSimulator]:
    async with TwilioSimulator() as simulator:
        yield simulator


@pytest.fixture
async def env(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, sim: TwilioSimulator
) -> TwilioEnv:
    return await TwilioEnv.start(aiohttp_server, aiohttp_client, tmp_path, sim)


async def test_three_callers_to_a_bridge_without_webhook_url_hear_exactly_the_other_two(
    env: TwilioEnv,
) -> None:
    # One number per caller: each number carries one channel (channels_count 1).
    numbers = ("+15550001001", "+15550001002", "+15550001003")
    bridge = await env.bridge("Conference", numbers)
    calls = []
    for (caller, freq), number in zip(CALLERS.items(), numbers, strict=True):
        calls.append(await env.sim.place_inbound_call(caller, number, source=ToneSource(freq)))
    await asyncio.gather(*(call.wait_for(CallState.STREAMING) for call in calls))
    legs = [env.leg_of(call) for call in calls]
    room = env.runtime.machine.room(f"bridge-{bridge['id']}")
    assert room is not None and set(room.members) == set(legs)
    # Every leg's media must be in the mix before listening.
    await asyncio.gather(*(record_after(call, 0.2) for call in calls))

    heard = await asyncio.gather(*(record_after(call, 1.0) for call in calls))
    tones = list(CALLERS.values())
    for audio, own in zip(heard, tones, strict=True):
        assert_hears(audio, tuple(t for t in tones if t != own), own)


async def test_two_callers_answered_and_bridged_by_the_application_hear_each_other(
    env: TwilioEnv, aiohttp_server: Any
) -> None:
    hooks = await AppHooks.start(aiohttp_server)
    numbers = ("+15550002001", "+15550002002")
    await env.bridge("Support", numbers, webhook_url=hooks.url)
    a = await env.sim.place_inbound_call("+15557000440", numbers[0], source=ToneSource(440))
    leg_a = (await hooks.next("call.initiated")).leg
    b = await env.sim.place_inbound_call("+15557000700", numbers[1], source=ToneSource(700))
    leg_b = (await hooks.next("call.initiated")).leg
    assert a.state is CallState.RINGING and b.state is CallState.RINGING, "held until answered"

    await env.act(leg_a, "answer")
    await env.act(leg_b, "answer")
    await hooks.next("call.answered", leg_a)
    await hooks.next("call.answered", leg_b)
    await asyncio.gather(a.wait_for(CallState.STREAMING), b.wait_for(CallState.STREAMING))
    await env.act(leg_a, "bridge", {"call_control_id": leg_b})
    await hooks.next("call.bridged", leg_a)
    await hooks.next("call.bridged", leg_b)
    await asyncio.gather(record_after(a, 0.2), record_after(b, 0.2))

    heard_a, heard_b = await asyncio.gather(record_after(a, 1.0), record_after(b, 1.0))
    assert_hears(heard_a, (700.0,), 440.0)
    assert_hears(heard_b, (440.0,), 700.0)

    await a.hang_up()
    hangup = await hooks.next("call.hangup", leg_a)
    assert (hangup.payload["hangup_cause"], hangup.payload["hangup_source"]) == (
        "normal_clearing",
        "caller",
    )
    # B's bridge dissolved without park_after_unbridge: callbridge hangs it up through REST.
    await b.wait_for(CallState.ENDED)
    assert (await hooks.next("call.hangup", leg_b)).payload["hangup_cause"] == "normal_clearing"
    assert any(
        r.path.endswith(f"/Calls/{b.sid}.json") and r.form.get("Status") == ["completed"]
        for r in env.sim.requests
    )
