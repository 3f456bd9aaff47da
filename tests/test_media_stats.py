"""Per-leg media statistics (issue 13, point 5): in ``GET /v2/calls/{id}`` as a ``media`` object,
in one log line when the leg hangs up, counted against what the Telnyx simulator really sent
(its impairments drop and reorder frames on purpose, and count what they did).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from adapters.simulators import TelnyxCall, ToneSource
from adapters.simulators.pacing import Impairments
from adapters.stream_session import MAX_BACKLOG
from engine.api.keys import METRICS
from engine.config import Settings
from engine.media_plane.stats import LegMediaStats
from tests.call_fakes import Harness
from tests.stream_sessions import START, telnyx_session
from tests.telnyx_harness import Stack, caller, telnyx_stack

NUMBER, OTHER = "+15550002222", "+15550003333"
# Inbound media statistics are taken on the stream as it arrives, before the mixer.


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with telnyx_stack(tmp_path) as s:
        yield s


async def media_of(stack: Stack, leg_id: str) -> dict[str, Any]:
    reply = await stack.client.get(
        f"/v2/calls/{leg_id}", headers={"Authorization": f"Bearer {stack.org.token}"}
    )
    assert reply.status == 200, await reply.text()
    media: dict[str, Any] = (await reply.json())["data"]["media"]
    return media


async def sent(call: TelnyxCall, frames: int) -> None:
    await call.wait_until(lambda c: c.media_frames_sent >= frames, timeout_s=15)


async def test_a_clean_stream_counts_every_frame_and_loses_none(stack: Stack) -> None:
    await stack.bridge(NUMBER, OTHER)
    a = await stack.sim.place_inbound_call(caller(), NUMBER, source=ToneSource(440))
    b = await stack.sim.place_inbound_call(caller(), OTHER, source=ToneSource(1000))
    leg_a = (await stack.leg_of(a)).leg_id
    await sent(a, 60)
    await b.wait_until(lambda c: c.media_frames_received >= 50, timeout_s=15)
    media = await media_of(stack, leg_a)
    assert media["streams"] == 1
    assert media["frames_in"] >= 50 and media["frames_out"] >= 1
    assert (media["lost"], media["late"], media["reordered"], media["output_dropped"]) == (
        0,
        0,
        0,
        0,
    )
    assert 0 <= media["jitter_ms"] < 20, "paced at 20 ms on one machine"
    assert media["output_queue"] >= 0
    # Prometheus has the sums over legs, no per-leg series.
    text = stack.client.app[METRICS].render().decode()
    (received,) = [
        float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("callbridge_media_frames_received_total ")
    ]
    assert received >= media["frames_in"]
    assert "callbridge_media_frames_concealed_total" in text
    assert leg_a not in text


async def test_loss_and_reordering_are_counted_as_the_provider_caused_them(stack: Stack) -> None:
    await stack.bridge(NUMBER, OTHER)
    impaired = Impairments(loss=0.05, reorder=0.1, jitter_ms=8, seed=5)
    a = await stack.sim.place_inbound_call(
        caller(), NUMBER, source=ToneSource(440), impairments=impaired
    )
    await stack.sim.place_inbound_call(caller(), OTHER, source=ToneSource(1000))
    leg_a = (await stack.leg_of(a)).leg_id
    await sent(a, 150)
    assert a.stream is not None and a.stream.sender is not None
    told = a.stream.sender.stats
    media = await media_of(stack, leg_a)
    assert told.lost >= 3 and told.reordered >= 5, told  # the seed makes both happen
    # The simulator loses frames before it numbers them, as a network ahead of the provider
    # would: no gap in the chunks for those. A frame it sends behind the next one is put back
    # in order (``reordered``) or, once the window has moved past it, too late (``late``), a
    # gap never filled: ``lost`` (the newest gap may still be open).
    assert media["reordered"] >= 1
    assert media["lost"] - media["late"] in (0, 1)
    # Everything sent is in, late, or still on its way (a frame or two).
    assert told.sent - (media["frames_in"] + media["late"]) in range(4)
    assert media["jitter_ms"] > 1, "frames delayed by up to 8 ms at random"


async def test_a_leg_without_media_has_none_and_the_summary_is_logged_at_hangup(
    stack: Stack,
) -> None:
    await stack.bridge(NUMBER, OTHER)
    a = await stack.sim.place_inbound_call(caller(), NUMBER, source=ToneSource(440))
    leg_a = (await stack.leg_of(a)).leg_id
    await sent(a, 20)
    with capture_logs() as logs:
        await a.hang_up()
        await stack.taken(a, "call.hangup")
    (summary,) = [e for e in logs if e["event"] == "leg media summary"]
    assert summary["leg_id"] == leg_a and summary["frames_in"] >= 10
    assert set(LegMediaStats().view()) <= set(summary)


def test_jitter_follows_rfc_3550() -> None:
    stats = LegMediaStats()
    stats.arrived(10.000, 0.020)
    stats.arrived(10.020, 0.020)  # on time: D = 0
    assert stats.jitter_s == pytest.approx(0, abs=1e-12)
    stats.arrived(10.056, 0.020)  # 16 ms late: J += (16 - 0) / 16
    assert stats.jitter_s == pytest.approx(0.001)
    stats.stream_started(None)  # a new stream starts a new timeline
    stats.arrived(99.0, 0.020)
    assert stats.jitter_s == pytest.approx(0.001)


async def test_frames_lost_before_the_provider_are_concealed_in_a_mixed_room(
    stack: Stack,
) -> None:
    third = "+15550004444"
    await stack.bridge(NUMBER, OTHER, third)  # one conference room of three: mixed
    lossy = Impairments(loss=0.1, seed=3)
    a = await stack.sim.place_inbound_call(
        caller(), NUMBER, source=ToneSource(440), impairments=lossy
    )
    await stack.sim.place_inbound_call(caller(), OTHER, source=ToneSource(1000))
    await stack.sim.place_inbound_call(caller(), third, source=ToneSource(1500))
    leg_a = (await stack.leg_of(a)).leg_id
    await sent(a, 150)
    assert a.stream is not None and a.stream.sender is not None
    told = a.stream.sender.stats
    assert told.lost >= 5, told
    media = await media_of(stack, leg_a)
    # No gap in the numbers (the frames were lost before the provider numbered them), but the
    # mixer played silence where they were missing: the first loss the one-frame cushion absorbs.
    assert media["lost"] == 0
    assert media["concealed"] >= 1, media


async def test_media_waiting_behind_a_slow_start_is_kept_not_a_flood(
    aiohttp_server: Any, aiohttp_client: Any, settings: Settings
) -> None:
    """A provider streams right after ``start``; an engine busy with a burst of calls may take
    seconds to bind it. The media meanwhile waits (up to MAX_BACKLOG), the overflow is
    counted, and the stream is not closed as a flood."""
    h = await Harness.start(aiohttp_client, aiohttp_server, settings)
    leg = await h.up(media=None)
    session, closed = telnyx_session(h, leg)
    async with h.runtime._lock:  # the engine busy: the start cannot be bound yet
        session.feed(START)
        for n in range(MAX_BACKLOG + 20):
            media = {"event": "media", "media": {"chunk": str(n + 1), "timestamp": str(20 * n),
                                                 "payload": "/" * 216}}  # fmt: skip
            session.feed(orjson.dumps(media))
    await h.runtime.settle()
    assert session._step is not None  # the start, then everything that waited behind it
    await asyncio.wait_for(session._step, 5)
    stats = h.runtime.plane.stats.of(leg)
    assert closed == [] and not session.over, "a slow bind is not the provider's flood"
    assert stats.frames_in == MAX_BACKLOG  # the oldest 20 dropped, the rest played
    text = h.client.app[METRICS].render().decode()
    assert (
        'callbridge_media_frames_dropped_total{provider="telnyx",reason="backlog_full"} 20.0'
        in text
    )
    await session.finish()
