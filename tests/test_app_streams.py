"""Application streams (streaming_start / streaming_stop): the command's fields, the machine's
effects and webhooks, the media-streaming messages and the playout of what comes back.
End to end with real audio: tests/test_e2e_app_streams.py."""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest

from engine.errors import InvalidState
from engine.machine import commands as cmd
from engine.machine import effects as fx
from engine.machine import events as ev
from engine.machine.app_streams import MAX_STREAMS_PER_LEG
from engine.machine.command_body import ParameterError
from engine.machine.model import TargetLegs
from engine.media_plane.app_stream_wire import (
    AppClear,
    AppMark,
    AppMedia,
    StreamWire,
    WireError,
    parse_app_message,
)
from engine.media_plane.app_streams import LiveStream, Playout
from media.codecs import PCMU_8K, encode
from tests.test_machine_harness import Harness, hook, hooks, of_type

URL = "wss://app.example/stream"


def start(leg: str = "a", **fields: object) -> cmd.Command:
    return cmd.parse_command("streaming_start", {"stream_url": URL, **fields})


# --- the command --------------------------------------------------------------------------------
def test_streaming_start_defaults_are_call_controls() -> None:
    command = start()
    assert isinstance(command, cmd.StreamingStart)
    spec = command.spec
    assert (spec.track, spec.codec, spec.bidirectional) == ("inbound_track", "default", False)
    assert spec.target_legs is TargetLegs.OPPOSITE  # Call Control's default


@pytest.mark.parametrize(
    "url", ["ws://127.0.0.1:9000/s", "wss://localhost/s", "ws://10.0.0.8/s", "wss://[::1]/s"]
)
def test_a_stream_url_to_a_private_address_is_refused(url: str) -> None:
    with pytest.raises(ParameterError) as refused:
        cmd.parse_command("streaming_start", {"stream_url": url})
    assert refused.value.field == "stream_url"
    # Allowed where the deployment allows private URLs (serve --dev, the tests' simulators).
    allowed = cmd.parse_command("streaming_start", {"stream_url": url}, allow_private_urls=True)
    assert isinstance(allowed, cmd.StreamingStart)


def test_streaming_stop_takes_a_stream_id_and_nothing_else() -> None:
    stop = cmd.parse_command("streaming_stop", {"stream_id": "s-1"})
    assert isinstance(stop, cmd.StreamingStop) and stop.stream_id == "s-1"
    with pytest.raises(ParameterError) as refused:
        cmd.parse_command("streaming_stop", {"stream_track": "both_tracks"})
    assert refused.value.field == "stream_track"


# --- the machine --------------------------------------------------------------------------------
def test_a_stream_is_reported_started_when_the_application_took_it() -> None:
    h = Harness()
    h.incoming("a")
    out = h.command("a", start(stream_track="both_tracks", client_state="c3RhdGU="))
    (effect,) = of_type(out, fx.StartAppStream)
    assert effect.spec.url == URL and effect.listeners == ()  # one way: nobody hears the app
    assert effect.start["call_control_id"] == "a" and effect.start["client_state"] == "c3RhdGU="
    assert "streaming.started" not in hooks(out, "a")
    started = h.event(ev.AppStreamChanged("a", effect.stream_id, "started"))
    payload = hook(started, "a", "streaming.started")
    assert (payload["stream_url"], payload["stream_id"]) == (URL, effect.stream_id)
    assert payload["client_state"] == "c3RhdGU="
    assert h.event(ev.AppStreamChanged("a", effect.stream_id, "started")) == []  # once


@pytest.mark.parametrize(
    ("target", "listeners"),
    [("self", ("a",)), ("opposite", ("b",)), ("both", ("a", "b"))],
)
def test_what_the_application_sends_back_plays_to_the_target_legs(
    target: str, listeners: tuple[str, ...]
) -> None:
    h = Harness()
    h.bridged_pair()
    body = {"stream_bidirectional_mode": "rtp", "stream_bidirectional_target_legs": target}
    (effect,) = of_type(h.command("a", start(**body)), fx.StartAppStream)
    assert effect.listeners == listeners and effect.spec.bidirectional


def test_a_failed_stream_is_reported_and_forgotten_and_the_call_goes_on() -> None:
    h = Harness()
    h.incoming("a")
    (effect,) = of_type(h.command("a", start()), fx.StartAppStream)
    out = h.event(ev.AppStreamChanged("a", effect.stream_id, "failed", "connection_failed"))
    failed = hook(out, "a", "streaming.failed")
    assert failed["failure_reason"] == "connection_failed" and failed["stream_type"] == "websocket"
    assert failed["stream_params"] == {"stream_url": URL, "track": "inbound_track"}
    assert h.m.leg("a").app_streams == () and h.m.is_alive("a")
    with pytest.raises(InvalidState):
        h.command("a", cmd.parse_command("streaming_stop", {}))


def test_streaming_stop_and_hangup_close_the_streams_before_call_hangup() -> None:
    h = Harness()
    h.incoming("a")
    ids = [of_type(h.command("a", start()), fx.StartAppStream)[0].stream_id for _ in range(3)]
    out = h.command("a", cmd.parse_command("streaming_stop", {"stream_id": ids[0]}))
    assert of_type(out, fx.StopAppStream) == [fx.StopAppStream("a", ids[0])]
    assert hook(out, "a", "streaming.stopped")["stream_id"] == ids[0]
    with pytest.raises(InvalidState):  # stopped already
        h.command("a", cmd.parse_command("streaming_stop", {"stream_id": ids[0]}))
    out = h.command("a", cmd.Hangup())
    assert of_type(out, fx.StopAppStream) == [fx.StopAppStream("a", i) for i in ids[1:]]
    assert hooks(out, "a")[-3:] == ["streaming.stopped", "streaming.stopped", "call.hangup"]


def test_a_leg_has_at_most_a_few_streams() -> None:
    h = Harness()
    h.incoming("a")
    for _ in range(MAX_STREAMS_PER_LEG):
        h.command("a", start())
    with pytest.raises(InvalidState):
        h.command("a", start())


def test_an_adopted_legs_streams_end_with_streaming_stopped() -> None:
    h = Harness()
    h.incoming("a")
    (effect,) = of_type(h.command("a", start()), fx.StartAppStream)
    out = h.event(ev.LegAdopted("a"))
    assert hook(out, "a", "streaming.stopped")["stream_id"] == effect.stream_id
    assert h.m.leg("a").app_streams == ()


def test_streaming_needs_a_live_answered_leg() -> None:
    h = Harness()
    h.incoming("a", answer=False, media=False)
    with pytest.raises(InvalidState):
        h.command("a", start())


# --- the messages -------------------------------------------------------------------------------
def test_messages_are_numbered_in_the_order_they_are_made() -> None:
    wire = StreamWire("s-1", PCMU_8K, "a", auth_token="tok")
    connected = orjson.loads(wire.connected())
    assert connected == {
        "event": "connected",
        "version": "1.0.0",
        "connected": {"x-telnyx-streaming-auth-token": "tok"},
    }
    first = orjson.loads(wire.start({"call_control_id": "a"}, {"k": "v"}))
    assert first["sequence_number"] == "1" and first["stream_id"] == "s-1"
    assert first["start"]["media_format"] == {
        "encoding": "PCMU",
        "sample_rate": 8000,
        "channels": 1,
    }
    silence = np.zeros(160, dtype=np.int16)
    inbound = [orjson.loads(wire.media("inbound", silence)) for _ in range(2)]
    outbound = orjson.loads(wire.media("outbound", silence))
    assert [m["sequence_number"] for m in [*inbound, outbound]] == ["2", "3", "4"]
    assert [m["media"]["chunk"] for m in [*inbound, outbound]] == ["1", "2", "1"]
    assert [m["media"]["timestamp"] for m in [*inbound, outbound]] == ["0", "20", "0"]
    assert base64.b64decode(outbound["media"]["payload"]) == encode(PCMU_8K, silence)
    assert orjson.loads(wire.stop()) == {
        "event": "stop",
        "sequence_number": "5",
        "stream_id": "s-1",
        "stop": {"call_control_id": "a"},
    }


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b'{"event": "clear"}', "100003"),  # binary frames are refused
        ("{not json", "100003"),
        ('{"event": "dance"}', "100003"),
        ('{"event": "mark", "mark": {}}', "100003"),
        ('{"event": "media", "media": {}}', "100003"),
        ('{"event": "media", "media": {"payload": "!!"}}', "100004"),
        ('{"event": "media", "media": {"payload": ""}}', "100004"),
    ],
)
def test_messages_from_the_application_that_cannot_be_taken(data: str | bytes, code: str) -> None:
    with pytest.raises(WireError) as refused:
        parse_app_message(data, PCMU_8K)
    assert refused.value.code == code


def test_media_sent_to_a_one_way_stream_is_refused() -> None:
    payload = base64.b64encode(bytes(160)).decode()
    message = orjson.dumps({"event": "media", "media": {"payload": payload}}).decode()
    with pytest.raises(WireError) as refused:
        parse_app_message(message, None)
    assert refused.value.code == "100004"
    assert isinstance(parse_app_message(message, PCMU_8K), AppMedia)
    assert parse_app_message('{"event": "mark", "mark": {"name": "m"}}', None) == AppMark("m")
    assert isinstance(parse_app_message('{"event": "clear"}', None), AppClear)


# --- the playout --------------------------------------------------------------------------------
def test_playout_plays_in_order_and_returns_each_mark_after_its_audio() -> None:
    marks: list[str] = []
    playout = Playout(limit=1000, on_mark=marks.append)
    playout.push(np.full(30, 1, dtype=np.int16))
    playout.mark("one")
    playout.push(np.full(30, 2, dtype=np.int16))
    playout.mark("two")
    first = playout(20)
    assert list(first) == [1] * 20 and marks == []
    second = playout(20)
    assert list(second) == [1] * 10 + [2] * 10 and marks == ["one"]
    third = playout(40)
    assert list(third) == [2] * 20 + [0] * 20 and marks == ["one", "two"]
    playout.mark("now")  # nothing queued: returned at once
    assert marks[-1] == "now"


def test_clear_drops_the_queued_audio_and_returns_its_marks() -> None:
    marks: list[str] = []
    playout = Playout(limit=100, on_mark=marks.append)
    playout.push(np.full(50, 7, dtype=np.int16))
    playout.mark("m")
    playout.push(np.full(60, 7, dtype=np.int16))  # over the limit: dropped
    assert playout.dropped == 60
    playout.clear()
    assert marks == ["m"] and playout.queued == 0 and not playout(10).any()


def test_a_live_stream_feeds_its_tracks_and_echoes_marks_with_no_listener() -> None:
    sent: list[dict[str, object]] = []
    wire = StreamWire("s", PCMU_8K, "a")
    stream = LiveStream("a", wire, "both_tracks", lambda m: sent.append(orjson.loads(m)), rate=8000)
    stream.feed(np.zeros(160, dtype=np.int16), np.ones(160, dtype=np.int16))
    assert [m["media"]["track"] for m in sent] == ["inbound", "outbound"]  # type: ignore[index]
    stream.receive(AppMark("x"))
    assert sent[-1]["event"] == "mark"
