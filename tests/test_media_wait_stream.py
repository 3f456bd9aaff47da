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

import orjson

from adapters.telnyx.stream import TelnyxStreamCodec
from adapters.wiring import ADAPTERS
from engine.config import Settings
from engine.machine.model import TimerKey, TimerKind
from tests.call_fakes import Harness
from tests.test_media_stats import CollectingStreamOutput

PCMU = {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}


async def busy_engine_binding(
    h: Harness, leg: str, *, stream_first: bool
) -> tuple[Any, list[tuple[int, str]]]:
    """While the engine's lock is held: the leg's media wait runs out and a stream's start
    arrives, in the order given; then the engine gets to both."""
    closed: list[tuple[int, str]] = []

    async def close(code: int, reason: str) -> None:
        closed.append((code, reason))

    sessions = h.client.app[ADAPTERS].require_sessions()  # type: ignore[index]
    session = sessions.session(
        TelnyxStreamCodec(),
        lambda start, connected_token: leg,
        make_output=lambda codec, stream_id, stats: CollectingStreamOutput(),
        close=close,
        context={"provider": "telnyx"},
    )
    start = {"event": "start", "stream_id": "s1",
             "start": {"call_control_id": "v3:x", "media_format": PCMU}}  # fmt: skip
    async with h.runtime._lock:
        if stream_first:
            session.feed(orjson.dumps(start))
        h.runtime._timer_fired(TimerKey(leg, TimerKind.MEDIA_WAIT))  # the wait runs out
        if not stream_first:
            session.feed(orjson.dumps(start))
    await h.runtime.settle()
    assert session._step is not None
    await asyncio.wait_for(session._step, 5)
    await h.runtime.settle()
    return session, closed


async def test_a_stream_that_came_before_the_wait_was_judged_keeps_its_leg(
    aiohttp_server: Any, aiohttp_client: Any, settings: Settings
) -> None:
    h = await Harness.start(aiohttp_client, aiohttp_server, settings)
    h.runtime.machine.media_wait_s = 60.0  # only the firing below runs the wait out
    leg = await h.up(media=None)
    session, closed = await busy_engine_binding(h, leg, stream_first=False)
    state = h.runtime.machine.leg(leg)
    assert state.media_started, "the stream that came is the leg's media"
    assert state.media_restarted_at is None, "no new stream asked for while one was here"
    assert closed == [] and not session.over
    assert h.runtime.plane.is_attached(leg)
    await session.finish()


async def test_without_a_stream_the_wait_still_asks_for_a_new_one(
    aiohttp_server: Any, aiohttp_client: Any, settings: Settings
) -> None:
    h = await Harness.start(aiohttp_client, aiohttp_server, settings)
    h.runtime.machine.media_wait_s = 60.0
    leg = await h.up(media=None)
    async with h.runtime._lock:
        h.runtime._timer_fired(TimerKey(leg, TimerKind.MEDIA_WAIT))
    await h.runtime.settle()
    state = h.runtime.machine.leg(leg)
    assert not state.media_started
    assert state.media_restarted_at is not None, "the wait ran out with no stream: restarted"


async def test_a_stream_taken_before_the_wait_cancels_it(
    aiohttp_server: Any, aiohttp_client: Any, settings: Settings
) -> None:
    h = await Harness.start(aiohttp_client, aiohttp_server, settings)
    h.runtime.machine.media_wait_s = 60.0
    leg = await h.up(media=None)
    session, closed = await busy_engine_binding(h, leg, stream_first=True)
    state = h.runtime.machine.leg(leg)
    assert state.media_started and state.media_restarted_at is None
    assert closed == []
    await session.finish()
