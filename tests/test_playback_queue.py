"""Playback as Call Control defines it (issue 14 point 4), through the app with real audio: a
built-in tone plays ``loop`` passes and ends; consecutive playbacks queue, each ending with
``call.playback.ended`` before the next one's ``call.playback.started``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engine.config import Settings
from engine.media_plane.audio_sources import TONE_PASS_S, builtin_samples
from media.tones import ringback_cycle, ringtone_spec
from tests.call_fakes import Harness, share

RATE = 8000
FRAME = RATE // 50
PASS_FRAMES = round(TONE_PASS_S * 50)


@pytest.fixture
async def h(aiohttp_server: Any, aiohttp_client: Any, settings: Settings) -> Harness:
    return await Harness.start(aiohttp_client, aiohttp_server, settings)


def tone_frames(h: Harness, leg: str, frames: list[bytes], hz: float) -> list[int]:
    samples = h.outputs[leg].samples(frames)
    return [i for i in range(len(frames)) if share(samples[i * FRAME : (i + 1) * FRAME], hz) > 0.5]


async def test_a_tone_plays_its_loops_and_ends_and_the_next_playback_follows(h: Harness) -> None:
    leg = await h.up()
    output = h.outputs[leg]
    start = len(output.frames)
    await h.ok(leg, "playback_start", media_name="tone-440", loop=2)
    await h.ok(leg, "playback_start", media_name="tone-1000", loop=1)  # queued behind it
    await h.receiver.next("call.playback.ended", leg)
    await h.receiver.next("call.playback.ended", leg)
    await output.collect(10)  # then silence
    heard = output.frames[start:]
    low, high = tone_frames(h, leg, heard, 440), tone_frames(h, leg, heard, 1000)
    # Two passes of 440 Hz (a second each), then one of 1 kHz, back to back, nothing after.
    assert 2 * PASS_FRAMES - 2 <= len(low) <= 2 * PASS_FRAMES + 1, len(low)
    assert PASS_FRAMES - 2 <= len(high) <= PASS_FRAMES + 1, len(high)
    assert max(low) < min(high) and max(high) < len(heard) - 5
    events = [
        (hook.event_type, hook.payload["media_name"], hook.payload.get("status"))
        for hook in h.receiver.of(leg)
        if hook.event_type.startswith("call.playback")
    ]
    assert events == [
        ("call.playback.started", "tone-440", None),
        ("call.playback.ended", "tone-440", "completed"),
        ("call.playback.started", "tone-1000", None),
        ("call.playback.ended", "tone-1000", "completed"),
    ]


async def test_an_overlay_needs_a_playback_and_stop_current_moves_the_queue_on(
    h: Harness,
) -> None:
    leg = await h.up()
    reply = await h.act(leg, "playback_start", media_name="tone-440", overlay=True)
    assert reply.status == 422 and reply.body["errors"][0]["source"] == {"pointer": "/overlay"}
    await h.ok(leg, "playback_start", media_name="tone-440", loop="infinity")
    await h.ok(leg, "playback_start", media_name="tone-1000", loop=1)
    await h.ok(leg, "playback_stop", stop="current")
    ended = await h.receiver.next("call.playback.ended", leg)
    assert (ended.payload["media_name"], ended.payload["status"]) == ("tone-440", "cancelled")
    await h.barrier(leg)  # every webhook of the leg so far has arrived
    started = [
        hook.payload["media_name"]
        for hook in h.receiver.of(leg)
        if hook.event_type == "call.playback.started"
    ]
    assert started == ["tone-440", "tone-1000"]


def test_a_pass_of_a_builtin_media_name() -> None:
    tone = builtin_samples("tone-440", RATE)
    assert len(tone) == round(TONE_PASS_S * RATE)
    cycle = builtin_samples("ringback-uk", RATE)
    assert len(cycle) == round(sum(ringtone_spec("uk").cadence_ms) * RATE / 1000)
    np.testing.assert_array_equal(cycle, ringback_cycle("uk", RATE))


async def conference(h: Harness, first: str, *others: str) -> str:
    reply = await h.request("POST", "/v2/conferences", {"call_control_id": first, "name": "room"})
    assert reply.status == 200, reply
    conference_id = str(reply.body["data"]["id"])
    for leg in others:
        await join(h, conference_id, leg)
    return conference_id


async def join(h: Harness, conference_id: str, leg: str) -> None:
    path = f"/v2/conferences/{conference_id}/actions/join"
    reply = await h.request("POST", path, {"call_control_id": leg})
    assert reply.status == 200, reply


async def hears(h: Harness, leg: str, hz: float, frames: int = 15) -> bool:
    """Whether most of ``leg``'s next ``frames`` frames are the tone (a few at each end may
    straddle the change)."""
    heard = await h.outputs[leg].collect(frames)
    return len(tone_frames(h, leg, heard, hz)) > frames // 2


async def test_a_playback_to_the_room_follows_it_as_members_come_and_go(h: Harness) -> None:
    """``target_legs: opposite`` plays to the leg's room as it is now: a member who joins
    hears it, one who leaves stops hearing it; left with nobody to play to, it ends ``failed``
    and the leg's queue moves on."""
    a, b, c = await h.up(), await h.up(), await h.up()
    for leg in (a, b, c):
        h.speak(leg, 0)  # each far end streams its silence, as providers do all call long
    room = await conference(h, a, b)
    await h.ok(a, "playback_start", media_name="tone-440", loop="infinity", target_legs="opposite")
    await h.receiver.next("call.playback.started", a)
    assert await hears(h, b, 440) and not await hears(h, a, 440)
    await join(h, room, c)
    assert await hears(h, c, 440), "a member who joins hears the playback"
    await h.ok(b, "hangup")
    assert await hears(h, c, 440), "the one left hears it on"
    await h.ok(a, "playback_start", media_name="tone-1000", loop=1, target_legs="self")  # queued
    await h.ok(c, "hangup")
    ended = await h.receiver.next("call.playback.ended", a)
    assert (ended.payload["media_name"], ended.payload["status"]) == ("tone-440", "failed")
    assert ended.payload["status_detail"] == "target_legs names no leg: the leg's room changed"
    started = await h.receiver.next("call.playback.started", a)  # the queue moved on
    assert started.payload["media_name"] == "tone-1000"
    assert await hears(h, a, 1000)


async def test_a_playback_to_both_moves_with_its_leg_to_another_room(h: Harness) -> None:
    a, b, c, d, e, f, g = [await h.up() for _ in range(7)]
    for leg in (a, b, c, d, e, f, g):
        h.speak(leg, 0)  # each far end streams its silence: every member hears every tick
    await conference(h, a, b, e, g)
    other = await conference(h, c, d, f)
    await h.ok(a, "playback_start", media_name="tone-440", loop="infinity", target_legs="both")
    await h.receiver.next("call.playback.started", a)
    assert await hears(h, a, 440) and await hears(h, b, 440)
    assert not await hears(h, c, 440)
    await join(h, other, a)  # a leaves its room for the other one
    assert await hears(h, c, 440) and await hears(h, d, 440), "the new room hears it"
    assert await hears(h, a, 440), "its own leg still hears it"
    assert not await hears(h, b, 440), "the room it left does not"


async def test_an_overlay_mixes_over_the_playback_and_stop_all_replaces_it(h: Harness) -> None:
    leg = await h.up()
    await h.ok(leg, "playback_start", media_name="tone-440", loop="infinity")
    await h.ok(leg, "playback_start", media_name="tone-1000", loop="infinity", overlay=True)
    for _ in range(2):
        await h.receiver.next("call.playback.started", leg)
    both = h.outputs[leg].samples(await h.outputs[leg].collect(10))
    frames = [both[i * FRAME : (i + 1) * FRAME] for i in range(10)]
    assert all(share(f, 440) > 0.3 and share(f, 1000) > 0.3 for f in frames[2:]), "mixed"
    # A new playback with stop "all" replaces the playing one (the overlay stays on top).
    await h.ok(leg, "playback_start", media_name="tone-600", loop="infinity", stop="all")
    ended = await h.receiver.next("call.playback.ended", leg)
    assert (ended.payload["media_name"], ended.payload["status"]) == ("tone-440", "cancelled")
    after = h.outputs[leg].samples(await h.outputs[leg].collect(10))
    frames = [after[i * FRAME : (i + 1) * FRAME] for i in range(10)]
    assert all(share(f, 440) < 0.05 for f in frames[2:]), "the old one is gone"
    assert all(share(f, 600) > 0.3 and share(f, 1000) > 0.3 for f in frames[2:])
