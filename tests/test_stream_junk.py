"""Junk on a media stream is dropped, counted and logged; only a flood closes the stream.

Unit tests drive ``FloodWindow`` and ``FrameDrops`` with a fake clock (no sleeps) and the app's
own Prometheus registry. The integration tests run the real app against the Telnyx simulator:
junk injected on a live bridged stream (helper A's ``inject_junk``) leaves the bridged audio
intact frame by frame and shows in ``GET /metrics``; a flood closes that one stream only; and a
raw websocket shows the close code and that junk before ``start`` is dropped, not fatal.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest
from structlog.testing import capture_logs

from adapters.simulators import CallState, TelnyxCall
from adapters.simulators.common import JUNK_KINDS
from adapters.simulators.streaming import StreamEnd
from adapters.stream_drops import FLOOD_FRAMES, LOG_INTERVAL_S, FloodWindow, FrameDrops
from adapters.streams import DROP_REASONS, StreamError, StreamProtocolError
from adapters.wiring import ADAPTERS
from benchmarks.loadtest.judge import Voice, VoiceSource, judge
from engine.api.keys import METRICS
from engine.metrics import Metrics
from tests.e2e_checks import Tap, hearing, tap, voices
from tests.telnyx_harness import Stack, caller, telnyx_stack

DROPPED = "callbridge_media_frames_dropped_total"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def dropped(metrics: Metrics, provider: str, reason: str) -> float:
    value = metrics.registry.get_sample_value(DROPPED, {"provider": provider, "reason": reason})
    return value or 0.0


def drops_for(metrics: Metrics, clock: FakeClock, provider: str = "twilio") -> FrameDrops:
    return FrameDrops(provider, metrics.media_frames_dropped, clock, {"remote": "203.0.113.9"})


# --- the flood window ------------------------------------------------------------------------

# Times are multiples of 1/64 s, exact in binary floating point, so the window edge is exact.
TICK = 1 / 64


def test_fifty_bad_frames_in_a_second_are_no_flood_the_fifty_first_is() -> None:
    window = FloodWindow()
    assert not any(window.hit(i * TICK) for i in range(FLOOD_FRAMES))
    assert window.hit(FLOOD_FRAMES * TICK)


def test_the_window_slides_it_does_not_count_forever() -> None:
    window = FloodWindow(limit=50, window_s=1.0)
    # 50 at t=0, then one at the window's far edge: 51 within one (closed) second.
    for _ in range(50):
        assert not window.hit(0.0)
    assert window.hit(1.0)
    window = FloodWindow(limit=50, window_s=1.0)
    for _ in range(50):
        window.hit(0.0)
    assert not window.hit(1.0 + TICK), "the first 50 have left the window"
    # A steady 40 bad frames a second for a minute is 2,400 of them, and never a flood.
    window = FloodWindow(limit=50, window_s=1.0)
    assert not any(window.hit(i / 40) for i in range(2400))


def test_a_flood_window_needs_a_limit_and_a_duration() -> None:
    with pytest.raises(ValueError, match="positive"):
        FloodWindow(limit=0)
    with pytest.raises(ValueError, match="positive"):
        FloodWindow(window_s=0.0)


# --- FrameDrops: count, log, close on a flood ---------------------------------------------------


def test_every_drop_is_counted_per_provider_and_reason() -> None:
    metrics, clock = Metrics(), FakeClock()
    twilio, telnyx = drops_for(metrics, clock, "twilio"), drops_for(metrics, clock, "telnyx")
    for reason in ("bad_json", "bad_json", "bad_base64", "missing_field"):
        twilio.drop(reason, "detail", "leg-1")
        clock.now += 0.5
    telnyx.drop("bad_json", "detail", "leg-2")
    telnyx.unknown("x-future-event", "leg-2")
    assert dropped(metrics, "twilio", "bad_json") == 2
    assert dropped(metrics, "twilio", "bad_base64") == 1
    assert dropped(metrics, "twilio", "missing_field") == 1
    assert dropped(metrics, "telnyx", "bad_json") == 1
    assert dropped(metrics, "telnyx", "unknown_event") == 1
    assert (twilio.total, telnyx.total) == (4, 1), "unknown events are not bad frames"
    exposed = metrics.render().decode()
    assert f'{DROPPED}{{provider="twilio",reason="bad_json"}} 2.0' in exposed
    # The label values are the fixed slugs only, never frame text.
    reasons = {
        sample.labels["reason"]
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == DROPPED
    }
    assert reasons <= set(DROP_REASONS)


def test_drops_are_logged_with_the_legs_context_at_most_once_per_interval() -> None:
    metrics, clock = Metrics(), FakeClock()
    drops = drops_for(metrics, clock)
    with capture_logs() as logs:
        for _ in range(30):
            drops.drop("bad_base64", "media payload is not valid base64", "leg-7")
            clock.now += 0.001
        clock.now += LOG_INTERVAL_S
        drops.drop("bad_json", "frame is not valid JSON", "leg-7")
        clock.now += LOG_INTERVAL_S
        drops.drop("bad_json", "frame is not valid JSON", "leg-7")
    warnings = [entry for entry in logs if entry["event"] == "media frame dropped"]
    assert len(warnings) == 3, "a burst writes one line, not one per frame"
    first, second, third = warnings
    assert first["log_level"] == "warning"
    assert first["leg_id"] == "leg-7"
    assert first["provider"] == "twilio"
    assert first["remote"] == "203.0.113.9"
    assert first["reason"] == "bad_base64"
    assert first["unlogged"] == 0
    assert (second["reason"], second["unlogged"]) == ("bad_json", 29)
    assert third["unlogged"] == 0
    assert drops.total == 32


def test_a_flood_raises_a_1007_refusal_and_says_so() -> None:
    metrics, clock = Metrics(), FakeClock()
    drops = drops_for(metrics, clock)
    with capture_logs() as logs:
        for _ in range(FLOOD_FRAMES):
            drops.drop("bad_json", "frame is not valid JSON", "leg-3")
            clock.now += 0.01
        with pytest.raises(StreamProtocolError) as caught:
            drops.drop("bad_json", "frame is not valid JSON", "leg-3")
    assert caught.value.close_code == 1007
    assert caught.value.reason == "flood: more than 50 unusable frames within 1 s"
    flood = [entry for entry in logs if "flooded" in entry["event"]]
    assert len(flood) == 1
    assert (flood[0]["leg_id"], flood[0]["dropped"]) == ("leg-3", FLOOD_FRAMES + 1)
    assert dropped(metrics, "twilio", "bad_json") == FLOOD_FRAMES + 1


def test_unknown_events_are_counted_logged_at_debug_and_never_a_flood() -> None:
    metrics, clock = Metrics(), FakeClock()
    drops = drops_for(metrics, clock, "telnyx")
    with capture_logs() as logs:
        for _ in range(500):
            drops.unknown("x-future-event", "leg-9")
        for _ in range(FLOOD_FRAMES):
            drops.drop("missing_field", "mark frame lacks the 'name' string", "leg-9")
    assert dropped(metrics, "telnyx", "unknown_event") == 500
    debug = [entry for entry in logs if entry["event"].startswith("media frame of an unknown")]
    assert len(debug) == 1
    assert debug[0]["log_level"] == "debug"
    assert debug[0]["frame_event"] == "x-future-event"
    assert not [
        entry for entry in logs if entry["log_level"] == "warning" and "unknown" in entry["event"]
    ]


def test_provider_error_frames_are_logged_but_rate_limited() -> None:
    metrics, clock = Metrics(), FakeClock()
    drops = drops_for(metrics, clock, "telnyx")
    error = StreamError("100005", "rate_limit_reached", "Too many requests")
    with capture_logs() as logs:
        for _ in range(100):
            drops.provider_error(error, "leg-4")
    lines = [entry for entry in logs if entry["event"] == "provider stream error"]
    assert len(lines) == 1
    assert (lines[0]["code"], lines[0]["leg_id"], lines[0]["provider"]) == (
        "100005",
        "leg-4",
        "telnyx",
    )
    assert drops.total == 0, "a provider's report is not a dropped frame"


# --- through the real app ------------------------------------------------------------------------

NUMBERS = ("+15550007171", "+15550007272")  # one live leg per number


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with telnyx_stack(tmp_path) as s:
        yield s


async def conference(stack: Stack) -> tuple[TelnyxCall, TelnyxCall, list[Voice]]:
    """Two tapped callers in one bridge's conference, each hearing the other cleanly."""
    said = voices(2)
    await stack.bridge(*NUMBERS)
    calls = []
    for number, voice in zip(NUMBERS, said, strict=True):
        calls.append(
            await stack.sim.place_inbound_call(caller(), number, source=VoiceSource(voice))
        )
        tap(calls[-1])
    a, b = calls
    await a.wait_for(CallState.STREAMING)
    await b.wait_for(CallState.STREAMING)
    await asyncio.gather(hearing(a, [said[1]], said[0]), hearing(b, [said[0]], said[1]))
    return a, b, said


def listened(call: TelnyxCall, hears: Voice, own: Voice) -> int:
    """Frames ``call`` has received since its room was established."""
    assert isinstance(call.playout, Tap)
    established = judge(np.stack(call.playout.frames), [hears], own).established_at
    assert established is not None
    return len(call.playout.frames) - established


async def metric(stack: Stack, reason: str, provider: str = "telnyx") -> float:
    response = await stack.client.get("/metrics")
    assert response.status == 200
    text = await response.text()
    prefix = f'{DROPPED}{{provider="{provider}",reason="{reason}"}} '
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(lines[0].removeprefix(prefix)) if lines else 0.0


async def test_junk_on_a_live_bridged_stream_leaves_the_audio_intact(stack: Stack) -> None:
    a, b, (voice_a, voice_b) = await conference(stack)
    kinds = (*JUNK_KINDS, "binary")
    # 7 of each kind over 0.84 s: 50 a second, below the flood threshold of 50 within 1 s.
    sent = await a.inject_junk(kinds, count=7 * len(kinds), within_s=0.84)
    await b.inject_junk(JUNK_KINDS)
    # Every frame each caller received, from its room's start to a second after the junk,
    # judged per frame: the other's voice at its level, never its own, no gap, loss or repeat.
    await asyncio.gather(
        hearing(a, [voice_b], voice_a, listen=listened(a, voice_b, voice_a) + 50),
        hearing(b, [voice_a], voice_b, listen=listened(b, voice_a, voice_b) + 50),
    )
    assert a.stream is not None and b.stream is not None, "no stream was closed"
    assert a.stream.end is None and b.stream.end is None
    # Binary junk is not JSON either; the Telnyx error frame is read, not dropped.
    assert sent == 42
    assert await metric(stack, "bad_json") == 7 + 7 + 1
    assert await metric(stack, "bad_base64") == 7 + 1
    assert await metric(stack, "missing_field") == 7 + 1  # marks without a name
    assert await metric(stack, "unknown_event") == 7 + 1


async def test_a_flood_closes_that_stream_only(stack: Stack) -> None:
    a, b, _ = await conference(stack)
    leg_a = (await stack.leg_of(a)).leg_id
    leg_b = (await stack.leg_of(b)).leg_id
    flooded, kept = a.stream, b.stream
    assert flooded is not None and kept is not None

    def logged(logs: list[MutableMapping[str, Any]], event: str) -> bool:
        return any(e["event"] == event and e.get("leg_id") == leg_a for e in logs)

    with capture_logs() as logs:
        await a.inject_junk(("bad_json",), count=100, within_s=1.0)
        await a.wait_until(lambda call: flooded.end is not None)
        # Closed as a stream that dropped without ``stop``, never as a clean stop: the leg's
        # reconnect / retry / hang-up rules apply (media_session._ended(..., stopped=False)).
        await b.wait_until(lambda call: logged(logs, "media stream dropped without stop"))
    assert flooded.end is StreamEnd.SERVER_CLOSED
    assert logged(logs, "media stream flooded with unusable frames; closing it")
    # The 51st bad frame within a second closed it; frames after that were never read.
    assert await metric(stack, "bad_json") == FLOOD_FRAMES + 1

    # The other leg's stream is untouched: the same stream, still open, still receiving.
    assert stack.app[ADAPTERS].require_sessions().has_stream(leg_b)
    assert b.streams == [kept] and kept.end is None
    received = b.media_frames_received
    await b.wait_until(lambda call: call.media_frames_received >= received + 25)
    assert b.state is CallState.STREAMING


async def test_the_close_code_and_junk_before_start_on_a_raw_socket(stack: Stack) -> None:
    url = stack.base_url.replace("http://", "ws://") + "/media/telnyx"
    metrics = stack.app[METRICS]
    async with aiohttp.ClientSession() as session:
        # Junk before start is dropped: the stream lives on until its start is refused (no
        # token: 1008 policy), not closed for the junk (1007).
        async with session.ws_connect(url) as ws:
            await ws.send_str("{not json")
            await ws.send_bytes(b"\x00\x01")
            await ws.send_str('{"event": "media", "media": {"payload": "AAAA"}}')
            await ws.send_str('{"event": "x-future-event"}')
            start = {"event": "start", "stream_id": "s1",
                     "start": {"call_control_id": "v3:nobody",
                               "media_format": {"encoding": "PCMU", "sample_rate": 8000,
                                                "channels": 1}}}  # fmt: skip
            await ws.send_str(orjson.dumps(start).decode())
            closed = await ws.receive(timeout=5)
            assert closed.type is aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 1008
        assert dropped(metrics, "telnyx", "bad_json") == 2
        assert dropped(metrics, "telnyx", "before_start") == 1
        assert dropped(metrics, "telnyx", "unknown_event") == 1

        # A start that cannot be bound stays fatal: 1007, with the reason.
        async with session.ws_connect(url) as ws:
            await ws.send_str('{"event": "start", "start": {}}')
            closed = await ws.receive(timeout=5)
            assert (ws.close_code, closed.extra) == (
                1007,
                "start frame lacks the 'stream_id' string",
            )

        # A flood closes with 1007 and says why.
        async with session.ws_connect(url) as ws:
            for _ in range(2 * FLOOD_FRAMES):
                await ws.send_str('{"event": "mark", "mark": {}}')
            closed = await ws.receive(timeout=5)
            assert closed.type is aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 1007
            assert closed.extra == "flood: more than 50 unusable frames within 1 s"
        assert dropped(metrics, "telnyx", "missing_field") == FLOOD_FRAMES + 1
