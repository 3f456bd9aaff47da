"""Listening to a room from the console (issue 15 point 2): the room's members' audio summed,
streamed to the page as server-sent ``audio`` events; only the organization's own rooms."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from adapters.simulators import CallState, ToneSource
from engine.api.keys import RUNTIME
from engine.console.room_mix import MIX_RATE, room_mix
from tests.call_fakes import share
from tests.console_client import WAIT_S, ConsoleClient
from tests.platform_client import make_org
from tests.twilio_env import AppHooks, TwilioEnv

NUMBERS = ("+15550016101", "+15550016102")
CALLERS = ("+15557016101", "+15557016102")
TONES = (440.0, 1000.0)


async def bridged_pair(env: TwilioEnv, aiohttp_server: Any) -> str:
    """Two callers, one saying 440 Hz and one 1 kHz, bridged: their room's id."""
    hooks = await AppHooks.start(aiohttp_server)
    await env.bridge("Support", NUMBERS, webhook_url=hooks.url)
    legs = []
    for caller, number, tone in zip(CALLERS, NUMBERS, TONES, strict=True):
        call = await env.sim.place_inbound_call(caller, number, source=ToneSource(tone))
        leg = (await hooks.next("call.initiated")).leg
        await env.act(leg, "answer")
        await call.wait_for(CallState.STREAMING)
        legs.append(leg)
    await env.act(legs[0], "bridge", {"call_control_id": legs[1]})
    await hooks.next("call.bridged")
    room = env.client.app[RUNTIME].machine.leg(legs[0]).room_id
    assert room is not None
    return room


async def heard(console: ConsoleClient, room: str, chunks: int) -> NDArray[np.int16]:
    """``chunks`` audio events of the room's stream, their PCM joined."""
    response = await console.session.get(f"{console.base_url}/console/api/rooms/{room}/audio")
    assert response.status == 200
    pcm: list[NDArray[np.int16]] = []
    try:
        async with asyncio.timeout(WAIT_S):
            while len(pcm) < chunks:
                line = (await response.content.readline()).decode()
                if line.startswith("data: "):
                    message = orjson.loads(line.removeprefix("data: "))
                    assert message["rate"] == MIX_RATE
                    raw = base64.b64decode(message["pcm"])
                    pcm.append(np.frombuffer(raw, dtype="<i2").astype(np.int16))
    finally:
        response.close()
    return np.concatenate(pcm)


async def test_a_listener_hears_the_rooms_members_summed(
    twilio_env: TwilioEnv, aiohttp_server: Any
) -> None:
    env = twilio_env
    room = await bridged_pair(env, aiohttp_server)
    console = ConsoleClient(env.public_url)
    try:
        await console.sign_in(env.org.token)
        samples = await heard(console, room, chunks=20)  # about two seconds
    finally:
        await console.close()
    tail = samples[len(samples) // 4 :]  # past the first chunks, both members sound
    assert len(tail) >= MIX_RATE // 2
    shares = [share(tail, hz) for hz in TONES]
    assert all(s > 0.3 for s in shares) and sum(shares) > 0.9, shares


async def test_another_organizations_or_an_unknown_room_cannot_be_listened_to(
    twilio_env: TwilioEnv, aiohttp_server: Any
) -> None:
    env = twilio_env
    room = await bridged_pair(env, aiohttp_server)
    other_org = await make_org(env.client, "globex", "Globex")
    other = ConsoleClient(env.public_url)
    try:
        await other.sign_in(other_org.token)
        for room_id in (room, "room:nope"):
            response = await other.session.get(
                f"{env.public_url}/console/api/rooms/{room_id}/audio"
            )
            assert response.status == 404
            body = await response.json()  # the console's envelope, as for its other errors
            assert (body["status_code"], body["message"]) == (404, "Room not found.")
        anonymous = await other.session.get(
            f"{env.public_url}/console/api/rooms/{room}/audio", cookies={"callbridge_console": "x"}
        )
        assert anonymous.status in (401, 404)
    finally:
        await other.close()


def test_the_mix_sums_members_at_8_khz_and_clips() -> None:
    loud = np.full(160, 30000, dtype=np.int16)
    wide = np.full(320, 10000, dtype=np.int16)  # 16 kHz: resampled to 160 samples
    mix = room_mix([(loud, 8000), (loud[:80], 8000), (wide, 16000)])
    assert mix.dtype == np.int16 and len(mix) == 160
    assert mix[10] == 32767 and mix[-10] == 32767  # 30000 + 30000 (+ 10000) clipped
    assert room_mix([]).size == 0
