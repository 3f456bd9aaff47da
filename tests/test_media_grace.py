"""No answered leg without media (issue 10, point 3), through the app and the Telnyx simulator.

A stream that drops gets ``media_wait_s`` to come back; then callbridge asks Telnyx for a new
stream (``streaming_stop`` + ``streaming_start``) and waits once more; then it hangs the leg up
at Telnyx with ``call.hangup`` to the application. A stream that reconnects in time keeps its leg.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import orjson
import pybase64
import pytest

from adapters.simulators import CallState, Impairments, TelnyxCall, ToneSource
from tests.telnyx_harness import Stack, caller, telnyx_stack

NUMBER = "+15550003131"
WAIT_S = 0.3


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with telnyx_stack(tmp_path) as s:
        s.runtime.machine.media_wait_s = WAIT_S
        yield s


async def dropped_call(stack: Stack) -> tuple[TelnyxCall, str]:
    """A conference caller whose media streams the simulator drops after 0.3 s."""
    await stack.bridge(NUMBER)
    call = await stack.sim.place_inbound_call(
        caller(), NUMBER, source=ToneSource(500), impairments=Impairments(disconnect_after_ms=300)
    )
    await call.wait_for(CallState.STREAMING)
    leg = (await stack.leg_of(call)).leg_id
    await call.wait_until(lambda c: any(e.kind == "streaming.failed" for e in c.events), 5)
    return call, leg


async def test_a_stream_that_does_not_come_back_is_restarted_once_then_the_leg_ends(
    stack: Stack,
) -> None:
    call, leg = await dropped_call(stack)
    request = await stack.sim.wait_for_request(lambda r: r.path.endswith("/actions/hangup"))
    assert call.call_control_id in request.path
    assert not stack.runtime.machine.leg(leg).is_alive
    paths = [r.path.rsplit("/", 1)[-1] for r in stack.sim.requests if "/actions/" in r.path]
    # One new stream was asked for before giving up, asking for PCMU both ways again.
    assert paths.count("streaming_start") == 1, paths
    assert paths.index("streaming_start") < paths.index("hangup")
    start = next(r for r in stack.sim.requests if r.path.endswith("/actions/streaming_start"))
    assert start.json["stream_codec"] == "PCMU"
    assert start.json["stream_bidirectional_codec"] == "PCMU"
    assert start.json["stream_bidirectional_target_legs"] == "self"


async def test_a_stream_that_reconnects_in_time_keeps_the_leg(stack: Stack) -> None:
    stack.runtime.machine.media_wait_s = 5.0  # the reconnect below must not race a restart
    call, leg = await dropped_call(stack)
    answer = next(r for r in stack.sim.requests if r.path.endswith("/actions/answer"))
    stream_url = answer.json["stream_url"]
    assert parse_qs(urlsplit(stream_url).query)["token"], "the leg token rides in the URL"
    frame = pybase64.b64encode(b"\xff" * 160).decode()
    async with aiohttp.ClientSession() as session, session.ws_connect(stream_url) as ws:
        await ws.send_str(orjson.dumps({"event": "connected", "version": "1.0.0"}).decode())
        start = {
            "event": "start",
            "sequence_number": "1",
            "stream_id": "reconnected-stream",
            "start": {
                "call_control_id": call.call_control_id,
                "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
            },
        }
        await ws.send_str(orjson.dumps(start).decode())
        # 0.6 s of media, echoed back tick by tick: the leg lives on with its new stream.
        for n in range(2, 32):
            media = {"event": "media", "sequence_number": str(n), "stream_id": "reconnected-stream",
                     "media": {"track": "inbound", "chunk": str(n), "timestamp": str(n * 20),
                               "payload": frame}}  # fmt: skip
            await ws.send_str(orjson.dumps(media).decode())
            received = await ws.receive(timeout=1.0)
            assert received.type == aiohttp.WSMsgType.TEXT, "the engine streams back every tick"
        assert stack.runtime.machine.leg(leg).is_alive
    assert not [r for r in stack.sim.requests if r.path.endswith("/actions/hangup")]
