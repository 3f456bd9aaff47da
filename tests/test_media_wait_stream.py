"""A media wait that runs out while the leg's stream is already here, its start waiting for an
engine busy with a burst of calls, does not ask the provider for a new stream.

Found by the load test (250 legs, two generator processes): with the engine's inputs seconds
behind, the wait of many answered legs ran out before their streams' starts were taken; each
restart's new stream was then refused ("the leg already has a media stream") while the old one
held the leg, and the pair never heard each other.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from engine.config import Settings
from engine.machine.model import TimerKey, TimerKind
from tests.call_fakes import Harness
from tests.stream_sessions import START, telnyx_session


@pytest.fixture
async def answered(
    aiohttp_server: Any, aiohttp_client: Any, settings: Settings
) -> tuple[Harness, str]:
    """An answered leg without media; its wait runs out only when a test fires it."""
    h = await Harness.start(aiohttp_client, aiohttp_server, settings)
    h.runtime.machine.media_wait_s = 60.0
    return h, await h.up(media=None)


async def wait_and_stream_while_busy(h: Harness, leg: str, *, stream_first: bool) -> None:
    """While the engine's lock is held the leg's media wait runs out and its stream's start
    arrives, in the order given; then the engine gets to both. The stream stays open."""
    session, closed = telnyx_session(h, leg)
    async with h.runtime._lock:
        if stream_first:
            session.feed(START)
        h.runtime._timer_fired(TimerKey(leg, TimerKind.MEDIA_WAIT))
        if not stream_first:
            session.feed(START)
    await h.runtime.settle()
    assert session._step is not None
    await asyncio.wait_for(session._step, 5)
    await h.runtime.settle()
    assert closed == [] and not session.over, "the stream that came is kept"


@pytest.mark.parametrize("stream_first", [False, True], ids=["wait-first", "stream-first"])
async def test_a_stream_here_when_the_wait_is_judged_keeps_its_leg(
    answered: tuple[Harness, str], stream_first: bool
) -> None:
    h, leg = answered
    await wait_and_stream_while_busy(h, leg, stream_first=stream_first)
    state = h.runtime.machine.leg(leg)
    assert state.media_started, "the stream that came is the leg's media"
    assert state.media_restarted_at is None, "no new stream asked for while one was here"
    assert h.runtime.plane.is_attached(leg)


async def test_without_a_stream_the_wait_still_asks_for_a_new_one(
    answered: tuple[Harness, str],
) -> None:
    h, leg = answered
    async with h.runtime._lock:
        h.runtime._timer_fired(TimerKey(leg, TimerKind.MEDIA_WAIT))
    await h.runtime.settle()
    state = h.runtime.machine.leg(leg)
    assert not state.media_started
    assert state.media_restarted_at is not None, "the wait ran out with no stream: restarted"
