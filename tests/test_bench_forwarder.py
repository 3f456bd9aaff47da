"""The engine/forwarder benchmark's machinery (benchmarks/bench_forwarder.py): its frames are the
Telnyx simulator's, its forwarder forwards, and a short run through both servers carries every
leg's audio to its peer. No performance is asserted here: the figures are the benchmark's.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import orjson
import pybase64
import pytest
from aiohttp import WSMsgType

from adapters.simulators.telnyx_calls import TelnyxCall
from adapters.simulators.telnyx_stream import StreamConfig, TelnyxStream
from adapters.telnyx.gateway import MEDIA_PATH
from benchmarks.bench_forwarder import BenchConfig, report_lines, run, write_json
from benchmarks.forwarder.frames import MediaTemplate, carries_payload, leg_payload, start_frame
from benchmarks.forwarder.server import forwarder_app
from benchmarks.loadtest.frames import tone_frame
from benchmarks.loadtest.plan import make_plan


class _Call:
    """What ``TelnyxStream`` reads of its call to render frames (no simulator running)."""

    codec = "PCMU"
    call_control_id = "v3:test"
    call_session_id = "session"
    from_ = "+16660000000"
    to = "+15550000000"
    client_state = None


def _stream() -> TelnyxStream:
    return TelnyxStream(cast(TelnyxCall, _Call()), StreamConfig(url="ws://127.0.0.1/x"), "big")


def test_media_frames_are_byte_for_byte_the_simulators() -> None:
    leg = make_plan(2, 2, "telnyx").legs[1]
    stream = _stream()
    stream.next_seq()  # the start frame's sequence number
    template = MediaTemplate(stream.stream_id, leg_payload(leg))
    samples = tone_frame(leg.bin, leg.amplitude)
    for n in range(3):
        assert template.render(n).encode() == orjson.dumps(stream.media_message(n, samples))


def _shape(value: object) -> object:
    """Keys all the way down, leaves replaced by their type."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    return type(value).__name__


def test_the_forwarders_start_frame_has_the_simulators_shape() -> None:
    stream = _stream()
    simulated = stream.start_message()
    simulated[stream.seq_key] = stream.next_seq()
    ours = orjson.loads(start_frame(make_plan(2, 2, "telnyx").legs[0], stream.stream_id))
    assert _shape(ours) == _shape(simulated)
    assert ours["start"]["media_format"] == simulated["start"]["media_format"]


def test_a_payload_is_recognised_through_a_g711_round_trip() -> None:
    plan = make_plan(4, 2, "telnyx")
    said = leg_payload(plan.legs[0])
    raw = bytearray(pybase64.b64decode(said))
    # The tone starts at a zero sample: mu-law's positive zero, which a server that decodes and
    # re-encodes may send as the negative one. The same sound in another byte.
    assert raw[0] == 0xFF
    raw[0] = 0x7F
    resent = pybase64.b64encode_as_string(bytes(raw))
    frame = orjson.dumps({"event": "media", "media": {"payload": resent}}).decode()
    assert resent != said
    assert carries_payload(frame, said)
    assert not carries_payload(frame, leg_payload(plan.legs[2]))


async def test_the_forwarder_sends_each_media_payload_to_the_paired_stream(
    aiohttp_client,  # type: ignore[no-untyped-def]
) -> None:
    client = await aiohttp_client(forwarder_app())
    plan = make_plan(2, 2, "telnyx")
    a = await client.ws_connect(f"{MEDIA_PATH}?token=room-0", autoping=False)
    b = await client.ws_connect(f"{MEDIA_PATH}?token=room-0", autoping=False)
    for ws, leg in ((a, plan.legs[0]), (b, plan.legs[1])):
        await ws.send_str(start_frame(leg, f"stream-{leg.index}"))
        # The server answers a ping in its read loop, after the start: once the pong is
        # back, the start has been handled (and the second one paired the two).
        await ws.ping()
        assert (await ws.receive(timeout=5)).type is WSMsgType.PONG
    said = leg_payload(plan.legs[0])
    await a.send_str(MediaTemplate("stream-0", said).render(0))
    message = await b.receive(timeout=5)
    assert message.type is WSMsgType.TEXT
    assert orjson.loads(message.data) == {"event": "media", "media": {"payload": said}}
    await a.close()
    await b.close()


@pytest.mark.slow_family  # spawns callbridge serve and the forwarder, real time
async def test_both_servers_carry_every_legs_audio_to_its_peer(tmp_path: Path) -> None:
    config = BenchConfig(leg_counts=(4,), warmup_s=0.2, window_s=2.0,
                         server_core=None, generator_core=None)  # fmt: skip
    result = await run(config)
    assert [(step.server, step.legs) for step in result.steps] == [
        ("engine", 4), ("forwarder", 4),
    ]  # fmt: skip
    for step in result.steps:
        assert step.legs_hearing_peer == 4, step
        assert step.close_codes == {}, step
        assert step.frames_sent > 0 and step.frames_received > 0, step
    assert set(result.ratios()) == {4}
    assert any(line.startswith("ratio engine/forwarder at 4 legs") for line in report_lines(result))
    written = orjson.loads(write_json(result, tmp_path).read_bytes())
    assert [step["server"] for step in written["steps"]] == ["engine", "forwarder"]
