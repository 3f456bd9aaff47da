"""End to end with real audio: Twilio callers (the simulator) through the real callbridge app.

Every caller speaks a marked tone (``tests/e2e_checks.py``) over Twilio Media Streams; every
frame each one receives is judged by the load test's checker: exactly the voices it should hear,
each at its level, never its own, none missing once its room is established, none duplicated.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.simulators import CallState, TwilioSimulator
from benchmarks.loadtest.judge import VoiceSource
from tests.e2e_checks import hearing, tap, voices
from tests.twilio_env import AppHooks, TwilioEnv

CALLERS = ("+15557000440", "+15557000700", "+15557001000")


@pytest.fixture
async def sim(aiohttp_server: Any) -> AsyncIterator[TwilioSimulator]:
    # Set up after aiohttp_server, so torn down before it: the simulator's calls end their
    # streams before the app shuts down, which then has no stream left to wait for.
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
    said = voices(3)
    calls = []
    for caller, number, voice in zip(CALLERS, numbers, said, strict=True):
        calls.append(await env.sim.place_inbound_call(caller, number, source=VoiceSource(voice)))
        tap(calls[-1])
    await asyncio.gather(*(call.wait_for(CallState.STREAMING) for call in calls))
    legs = [env.leg_of(call) for call in calls]
    machine = env.runtime.machine
    room_id = machine.leg(legs[0]).room_id
    assert room_id is not None and room_id.startswith("conf:")  # the bridge's conference
    room = machine.room(room_id)
    assert room is not None and set(room.members) == set(legs) and room.bridge_id == bridge["id"]

    await asyncio.gather(
        *(
            hearing(call, [v for v in said if v is not own], own)
            for call, own in zip(calls, said, strict=True)
        )
    )


async def test_two_callers_answered_and_bridged_by_the_application_hear_each_other(
    env: TwilioEnv, aiohttp_server: Any
) -> None:
    hooks = await AppHooks.start(aiohttp_server)
    numbers = ("+15550002001", "+15550002002")
    await env.bridge("Support", numbers, webhook_url=hooks.url)
    voice_a, voice_b = voices(2)
    a = await env.sim.place_inbound_call(CALLERS[0], numbers[0], source=VoiceSource(voice_a))
    tap(a)
    leg_a = (await hooks.next("call.initiated")).leg
    b = await env.sim.place_inbound_call(CALLERS[1], numbers[1], source=VoiceSource(voice_b))
    tap(b)
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
    await asyncio.gather(hearing(a, [voice_b], voice_a), hearing(b, [voice_a], voice_b))

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
