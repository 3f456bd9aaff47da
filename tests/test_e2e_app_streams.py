"""streaming_start / streaming_stop end to end: a Twilio caller (the simulator) speaks a tone, the
application drives callbridge through the official telnyx SDK, and the application's websocket
server (``StreamApp``, below) receives the leg's audio in Call Control's media-streaming format.

``StreamApp`` is the application: its reading of the messages is written from Telnyx's media
streaming reference ("Stream call media over WebSocket": ``connected``, then ``start`` with
``stream_id`` at the top level and ``start.media_format``, ``media`` with ``media.track``,
``chunk``, ``timestamp`` and base64 ``payload``, ``stop``; the application sends back
``{"event": "media", "media": {"payload"}}``, ``mark`` and ``clear``), with its own G.711 mu-law
codec (ITU-T G.711), and imports nothing of callbridge's. Audio is judged per 20 ms frame.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pytest
import telnyx
from aiohttp import WSMsgType, web
from aiohttp.test_utils import unused_port

from adapters.simulators import CallState, TwilioCall
from adapters.simulators.audio import ToneSource
from tests.twilio_env import AppHooks, Hook, TwilioEnv, record_after

CALLER, NUMBER = "+15557000440", "+15550009001"
CALLER_HZ, APP_HZ = 1000.0, 600.0  # both on exact bins of a 160-sample (20 ms) frame
FRAME = 160
WAIT_S = 5.0


# --- G.711 mu-law, as ITU-T G.711 defines it (the application's own) ---------------------------
def _ulaw_decode_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent, mantissa = (codes >> 4) & 7, codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(codes & 0x80, -magnitude, magnitude).astype(np.int16)


ULAW = _ulaw_decode_table()


def ulaw_encode(samples: np.ndarray) -> bytes:
    x = np.clip(samples.astype(np.int32), -32635, 32635)
    sign = np.where(x < 0, 0x80, 0)
    x = np.abs(x) + 0x84
    exponent = np.floor(np.log2(x >> 7)).astype(np.int32).clip(0, 7)
    mantissa = (x >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def tone(freq: float, seconds: float, level: float = 8000.0) -> np.ndarray:
    n = np.arange(int(seconds * 8000))
    return np.rint(level * np.sin(2 * np.pi * freq * n / 8000)).astype(np.int16)


def media_message(samples: np.ndarray) -> dict[str, Any]:
    """What an application sends back: raw mu-law in base64 (stream_bidirectional_mode rtp)."""
    return {"event": "media", "media": {"payload": base64.b64encode(ulaw_encode(samples)).decode()}}


def dominant_hz(frame: np.ndarray) -> float | None:
    """The frequency of the strongest bin of one 20 ms frame; None for (near) silence."""
    if np.sqrt(np.mean(frame.astype(np.float64) ** 2)) < 100:
        return None
    spectrum = np.abs(np.fft.rfft(frame.astype(np.float64)))
    return float(np.argmax(spectrum[1:]) + 1) * 8000 / len(frame)


# --- the application's websocket server ---------------------------------------------------------
class StreamApp:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.sockets: list[web.WebSocketResponse] = []
        self.closed = 0
        self._changed = asyncio.Condition()
        self.url = ""

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async with self._changed:
            self.headers.append(dict(request.headers))
            self.sockets.append(ws)
            self._changed.notify_all()
        async for message in ws:
            assert message.type is WSMsgType.TEXT, "Telnyx sends JSON text frames"
            async with self._changed:
                self.messages.append(orjson.loads(message.data))
                self._changed.notify_all()
        async with self._changed:
            self.closed += 1
            self._changed.notify_all()
        return ws

    async def wait(self, ready: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(ready)

    def of(self, event: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["event"] == event]

    def media(self, track: str) -> list[dict[str, Any]]:
        return [m for m in self.of("media") if m["media"]["track"] == track]

    @staticmethod
    def frames(media: list[dict[str, Any]]) -> list[np.ndarray]:
        return [ULAW[np.frombuffer(base64.b64decode(m["media"]["payload"]), np.uint8)]
                for m in media]  # fmt: skip

    async def send(self, message: dict[str, Any]) -> None:
        await self.sockets[-1].send_str(orjson.dumps(message).decode())


@pytest.fixture
async def stream_app(aiohttp_server: Any) -> StreamApp:
    app = StreamApp()
    web_app = web.Application()
    web_app.router.add_get("/stream", app.handle)
    server = await aiohttp_server(web_app)
    app.url = str(server.make_url("/stream")).replace("http://", "ws://")
    return app


@pytest.fixture
async def sdk(twilio_env: TwilioEnv) -> AsyncIterator[telnyx.AsyncTelnyx]:
    client = telnyx.AsyncTelnyx(
        api_key=twilio_env.org.token,
        base_url=str(twilio_env.client.make_url("/v2")),
        max_retries=0,
    )
    async with client:
        yield client


@dataclass
class Answered:
    hooks: AppHooks
    call: TwilioCall
    leg: str


@pytest.fixture
async def caller(twilio_env: TwilioEnv, aiohttp_server: Any) -> Answered:
    """A Twilio caller speaking CALLER_HZ, answered by the application (behind ``hooks``)."""
    hooks = await AppHooks.start(aiohttp_server)
    await twilio_env.bridge("Streams", (NUMBER,), webhook_url=hooks.url)
    call = await twilio_env.sim.place_inbound_call(CALLER, NUMBER, source=ToneSource(CALLER_HZ))
    leg = (await hooks.next("call.initiated")).leg
    await twilio_env.act(leg, "answer")
    await call.wait_for(CallState.STREAMING)
    await hooks.next("call.answered", leg)
    return Answered(hooks, call, leg)


async def app_stream_hook(hooks: AppHooks, event_type: str, leg: str) -> Hook:
    """The next ``event_type`` of an application stream: callbridge also reports its own media
    stream from the provider with streaming.started/stopped, without a stream_id."""
    while True:
        hook = await hooks.next(event_type, leg)
        if "stream_id" in hook.payload:
            return hook


def assert_tone_frames(frames: list[np.ndarray], hz: float, share: float = 0.9) -> None:
    """Every frame is one 20 ms frame, and nearly all of them carry ``hz`` and nothing stronger
    (a frame the caller's stream did not deliver in time is silence)."""
    assert frames and all(f.size == FRAME for f in frames)
    found = [dominant_hz(f) for f in frames]
    assert sum(f == hz for f in found) >= share * len(found), found
    assert all(f in (hz, None) for f in found), found


async def test_start_streaming_delivers_the_callers_audio_then_stop(
    twilio_env: TwilioEnv, caller: Answered, stream_app: StreamApp, sdk: telnyx.AsyncTelnyx
) -> None:
    hooks, call, leg = caller.hooks, caller.call, caller.leg
    await sdk.calls.actions.start_streaming(
        leg,
        stream_url=stream_app.url,
        stream_track="inbound_track",
        stream_codec="PCMU",
        stream_auth_token="app-secret",
        custom_parameters=[{"name": "customer", "value": "42"}],
        client_state=base64.b64encode(b"streaming").decode(),
    )
    started = await app_stream_hook(hooks, "streaming.started", leg)
    assert started.payload["stream_url"] == stream_app.url
    assert started.payload["client_state"] == base64.b64encode(b"streaming").decode()
    await stream_app.wait(lambda: len(stream_app.media("inbound")) >= 50)

    connected, start = stream_app.messages[:2]
    assert connected["event"] == "connected" and connected["version"] == "1.0.0"
    assert stream_app.headers[0]["x-telnyx-streaming-auth-token"] == "app-secret"
    assert start["event"] == "start" and start["sequence_number"] == "1"
    assert start["stream_id"] == started.payload["stream_id"]
    body = start["start"]
    assert body["call_control_id"] == leg and body["from"] == CALLER and body["to"] == NUMBER
    assert body["custom_parameters"] == {"customer": "42"}
    assert body["media_format"] == {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}
    media = stream_app.media("inbound")
    assert not stream_app.media("outbound"), "inbound_track only"
    numbers = [int(m["sequence_number"]) for m in media]
    assert numbers == list(range(2, 2 + len(media))), "in order, numbered after start"
    assert [int(m["media"]["chunk"]) for m in media] == list(range(1, len(media) + 1))
    assert [int(m["media"]["timestamp"]) for m in media] == [20 * i for i in range(len(media))]
    assert all(m["stream_id"] == start["stream_id"] for m in media)
    # The first frames may precede the caller's first frame in the mixer (its jitter cushion).
    assert_tone_frames(StreamApp.frames(media)[5:], CALLER_HZ)

    await sdk.calls.actions.stop_streaming(leg)
    stopped = await app_stream_hook(hooks, "streaming.stopped", leg)
    assert stopped.payload["stream_id"] == start["stream_id"]
    await stream_app.wait(lambda: stream_app.closed == 1)
    assert stream_app.messages[-1]["event"] == "stop"
    assert stream_app.messages[-1]["stop"]["call_control_id"] == leg
    assert twilio_env.state(leg) == "answered" and call.state is CallState.STREAMING


async def test_bidirectional_stream_plays_the_applications_audio_to_the_caller(
    twilio_env: TwilioEnv, caller: Answered, stream_app: StreamApp, sdk: telnyx.AsyncTelnyx
) -> None:
    hooks, call, leg = caller.hooks, caller.call, caller.leg
    await sdk.calls.actions.start_streaming(
        leg,
        stream_url=stream_app.url,
        stream_track="both_tracks",
        stream_bidirectional_mode="rtp",
        stream_bidirectional_codec="PCMU",
        stream_bidirectional_target_legs="self",
    )
    await app_stream_hook(hooks, "streaming.started", leg)
    await stream_app.wait(lambda: len(stream_app.of("start")) == 1)
    await stream_app.send(media_message(tone(APP_HZ, 2.0)))
    await stream_app.send({"event": "mark", "mark": {"name": "after-tone"}})
    heard = await record_after(call, 1.0)
    frames = [heard[i : i + FRAME] for i in range(0, heard.size - FRAME + 1, FRAME)]
    assert_tone_frames(frames[5:], APP_HZ, share=0.8)  # the caller hears the application
    await stream_app.wait(lambda: bool(stream_app.of("mark")), timeout_s=4.0)
    assert stream_app.of("mark")[0]["mark"]["name"] == "after-tone"
    # What the leg says and what it hears, each on its own track.
    inbound = StreamApp.frames(stream_app.media("inbound"))
    outbound = StreamApp.frames(stream_app.media("outbound"))
    assert_tone_frames(inbound[5:], CALLER_HZ)
    assert sum(dominant_hz(f) == APP_HZ for f in outbound) >= 40
    # clear: queued audio is dropped at once.
    await stream_app.send(media_message(tone(APP_HZ, 10.0)))
    await stream_app.send({"event": "clear"})
    await record_after(call, 0.2)
    quiet = await record_after(call, 0.4)
    assert all(dominant_hz(quiet[i : i + FRAME]) is None for i in range(0, quiet.size, FRAME))
    # A frame callbridge cannot take gets an error frame back; the stream goes on.
    await stream_app.send({"event": "dance"})
    await stream_app.wait(lambda: bool(stream_app.of("error")))
    assert stream_app.of("error")[0]["error"]["code"] == "100003"

    await call.hang_up()
    stopped = await app_stream_hook(hooks, "streaming.stopped", leg)
    hangup = await hooks.next("call.hangup", leg)
    assert hooks.hooks.index(stopped) < hooks.hooks.index(hangup)
    await stream_app.wait(lambda: stream_app.closed == 1)
    assert stream_app.messages[-1]["event"] == "stop"


async def test_an_unreachable_stream_url_fails_with_streaming_failed_and_the_call_goes_on(
    twilio_env: TwilioEnv, caller: Answered, sdk: telnyx.AsyncTelnyx
) -> None:
    hooks, call, leg = caller.hooks, caller.call, caller.leg
    url = f"ws://127.0.0.1:{unused_port()}/nobody"
    await sdk.calls.actions.start_streaming(leg, stream_url=url, stream_track="both_tracks")
    failed = await hooks.next("streaming.failed", leg)
    assert failed.payload["failure_reason"] == "connection_failed"
    assert failed.payload["stream_type"] == "websocket"
    assert failed.payload["stream_params"] == {"stream_url": url, "track": "both_tracks"}
    assert twilio_env.state(leg) == "answered" and call.state is CallState.STREAMING
    with pytest.raises(telnyx.UnprocessableEntityError):  # nothing left to stop
        await sdk.calls.actions.stop_streaming(leg)


async def test_the_application_closing_its_websocket_stops_the_stream(
    twilio_env: TwilioEnv, caller: Answered, stream_app: StreamApp, sdk: telnyx.AsyncTelnyx
) -> None:
    hooks, call, leg = caller.hooks, caller.call, caller.leg
    await sdk.calls.actions.start_streaming(leg, stream_url=stream_app.url)
    await app_stream_hook(hooks, "streaming.started", leg)
    await stream_app.wait(lambda: bool(stream_app.of("media")))
    await stream_app.sockets[0].close()
    stopped = await app_stream_hook(hooks, "streaming.stopped", leg)
    assert stopped.payload["stream_url"] == stream_app.url
    assert twilio_env.state(leg) == "answered" and call.state is CallState.STREAMING
    assert twilio_env.runtime.machine.leg(leg).app_streams == ()


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"stream_codec": "G722"}, "stream_codec"),
        ({"stream_codec": "L16"}, "stream_codec"),
        ({"stream_bidirectional_mode": "mp3"}, "stream_bidirectional_mode"),
        (
            {"stream_bidirectional_mode": "rtp", "stream_bidirectional_codec": "OPUS"},
            "stream_bidirectional_codec",
        ),
        (
            {"stream_bidirectional_mode": "rtp", "stream_bidirectional_sampling_rate": 16000},
            "stream_bidirectional_sampling_rate",
        ),
        ({"stream_bidirectional_target_legs": "self"}, "stream_bidirectional_target_legs"),
        ({"enable_dialogflow": True}, "enable_dialogflow"),
        ({"dialogflow_config": {"analyze_sentiment": True}}, "dialogflow_config"),
        ({"stream_track": "left_track"}, "stream_track"),
        ({"stream_url": "https://example.com/stream"}, "stream_url"),
        ({"stream_url": None}, "stream_url"),
        ({"custom_parameters": [{"name": "a", "value": 1}]}, "custom_parameters"),
        ({"stream_auth_token": "x" * 4001}, "stream_auth_token"),
        ({"sound": "loud"}, "sound"),
    ],
)
async def test_start_streaming_refuses_what_callbridge_does_not_carry_out(
    twilio_env: TwilioEnv,
    caller: Answered,
    stream_app: StreamApp,
    fields: dict[str, Any],
    named: str,
) -> None:
    leg = caller.leg
    body = {"stream_url": stream_app.url, **fields}
    status, reply = await twilio_env.api("POST", f"/v2/calls/{leg}/actions/streaming_start", body)
    assert status == 422, reply
    assert reply["errors"][0]["source"]["pointer"] == f"/{named}"
    assert not stream_app.sockets


async def test_streaming_stop_names_one_stream_of_several(
    twilio_env: TwilioEnv, caller: Answered, stream_app: StreamApp, sdk: telnyx.AsyncTelnyx
) -> None:
    hooks, leg = caller.hooks, caller.leg
    for _ in range(2):
        await sdk.calls.actions.start_streaming(leg, stream_url=stream_app.url)
    first = (await app_stream_hook(hooks, "streaming.started", leg)).payload["stream_id"]
    second = (await app_stream_hook(hooks, "streaming.started", leg)).payload["stream_id"]
    with pytest.raises(telnyx.UnprocessableEntityError):
        await sdk.calls.actions.stop_streaming(leg, stream_id="not-a-stream")
    await sdk.calls.actions.stop_streaming(leg, stream_id=first)
    assert (await app_stream_hook(hooks, "streaming.stopped", leg)).payload["stream_id"] == first
    await stream_app.wait(lambda: stream_app.closed == 1)
    assert [s.stream_id for s in twilio_env.runtime.machine.leg(leg).app_streams] == [second]


async def test_a_key_the_caller_presses_reaches_the_stream_as_a_dtmf_frame(
    twilio_env: TwilioEnv, caller: Answered, stream_app: StreamApp, sdk: telnyx.AsyncTelnyx
) -> None:
    """Telnyx sends the application a ``dtmf`` frame when it detects DTMF on the call; the
    digit is read where pipecat's Telnyx serializer reads it (``dtmf.digit``)."""
    hooks, call, leg = caller.hooks, caller.call, caller.leg
    await sdk.calls.actions.start_streaming(leg, stream_url=stream_app.url)
    await app_stream_hook(hooks, "streaming.started", leg)
    await stream_app.wait(lambda: bool(stream_app.media("inbound")))
    for digit in "5#":
        await call.send_dtmf(digit)
        await hooks.next("call.dtmf.received", leg)
    await stream_app.wait(lambda: len(stream_app.of("dtmf")) == 2)
    frames = stream_app.of("dtmf")
    assert [f["dtmf"]["digit"] for f in frames] == ["5", "#"]
    start = stream_app.of("start")[0]
    assert all(f["stream_id"] == start["stream_id"] for f in frames)
    numbers = [int(m["sequence_number"]) for m in stream_app.messages[1:]]
    assert numbers == sorted(numbers), "dtmf frames are numbered with the media, in order"
