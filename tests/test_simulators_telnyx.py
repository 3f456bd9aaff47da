"""The Telnyx simulator against a small in-test server playing callbridge's part.

The stand-in verifies every webhook with the Telnyx adapter's own Ed25519 check, sends the Call
Control commands an application would, and accepts the media websocket.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import G722
import numpy as np
import orjson
import pybase64
import pytest
from aiohttp import web

from adapters.simulators.audio import ToneSource, noise_floor_db, tone_level_db
from adapters.simulators.common import JUNK_KINDS, Callee, CallState
from adapters.simulators.pacing import Impairments
from adapters.simulators.telnyx_calls import TelnyxCall, WebhookFaults
from adapters.simulators.telnyx_rest import TelnyxSimulator
from adapters.telnyx.signature import SignatureError, verify_webhook
from adapters.telnyx.webhooks import parse_event
from media.codecs import L16_8K, PCMA_8K, PCMU_8K, decode, encode

NUMBER = "+15550002222"
CALLER = "+15557654321"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class Peer:
    ws: web.WebSocketResponse
    headers: dict[str, str]
    log: list[dict[str, Any]] = field(default_factory=list)
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    junk_text: list[str] = field(default_factory=list)  # text frames that are not JSON

    async def next(self, event: str) -> dict[str, Any]:
        async with asyncio.timeout(5):
            while True:
                message = await self.queue.get()
                if message["event"] == event:
                    return message

    async def send(self, message: dict[str, Any] | str) -> None:
        text = message if isinstance(message, str) else orjson.dumps(message).decode()
        await self.ws.send_str(text)

    async def send_audio(self, samples: np.ndarray, fmt: Any = PCMU_8K) -> None:
        payload = pybase64.b64encode_as_string(encode(fmt, samples))
        await self.send({"event": "media", "media": {"payload": payload}})


@dataclass
class Delivery:
    body: dict[str, Any]
    verified: str  # "ok" or the verification failure


class App:
    """callbridge's part: the webhook endpoint and the media socket."""

    def __init__(self, public_key: str) -> None:
        self.public_key = public_key
        self.base_url = ""
        self.deliveries: list[Delivery] = []
        self.peers: asyncio.Queue[Peer] = asyncio.Queue()
        self._changed = asyncio.Event()

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/media"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/telnyx", self._webhook)
        app.router.add_get("/media", self._media)
        return app

    async def _webhook(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify_webhook(
                self.public_key, body, request.headers.get("telnyx-signature-ed25519"),
                request.headers.get("telnyx-timestamp"), now=time.time(),
            )  # fmt: skip
            verified = "ok"
        except SignatureError as exc:
            verified = exc.reason
        self.deliveries.append(Delivery(orjson.loads(body), verified))
        self._changed.set()
        return web.Response()

    async def _media(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        peer = Peer(ws, dict(request.headers))
        self.peers.put_nowait(peer)
        try:
            async for message in ws:
                if message.type is aiohttp.WSMsgType.TEXT:
                    try:
                        frame = orjson.loads(message.data)
                    except orjson.JSONDecodeError:
                        peer.junk_text.append(message.data)
                        continue
                    peer.log.append(frame)
                    peer.queue.put_nowait(frame)
        finally:
            peer.closed.set()
        return ws

    def events(self, call: TelnyxCall | None = None) -> list[str]:
        return [
            d.body["data"]["event_type"]
            for d in self.deliveries
            if call is None or d.body["data"]["payload"]["call_control_id"] == call.id
        ]

    async def webhook(self, event_type: str, index: int = 0) -> Delivery:
        async with asyncio.timeout(5):
            while True:
                found = [d for d in self.deliveries if d.body["data"]["event_type"] == event_type]
                if len(found) > index:
                    return found[index]
                self._changed.clear()
                await self._changed.wait()

    async def next_peer(self) -> Peer:
        async with asyncio.timeout(5):
            return await self.peers.get()


Env = tuple[TelnyxSimulator, App]


@pytest.fixture
async def env(aiohttp_server: Any) -> AsyncIterator[Env]:
    sim = TelnyxSimulator()
    await sim.start()
    app = App(sim.public_key)
    server = await aiohttp_server(app.app())
    app.base_url = str(server.make_url("")).rstrip("/")
    sim.add_number(NUMBER, sim.add_connection(f"{app.base_url}/telnyx"))
    try:
        yield sim, app
    finally:
        await sim.close()


async def api(
    sim: TelnyxSimulator, method: str, path: str, body: Any = None, key: str | None = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key or sim.api_key}"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, sim.base_url + path, json=body, headers=headers) as response,
    ):
        return response.status, await response.json()


def rtp(app: App, **extra: Any) -> dict[str, Any]:
    return {
        "stream_url": app.ws_url,
        "stream_track": "inbound_track",
        "stream_bidirectional_mode": "rtp",
        "stream_bidirectional_codec": "PCMU",
        "stream_bidirectional_target_legs": "self",
        **extra,
    }


async def answered_call(env: Env, **kwargs: Any) -> tuple[TelnyxCall, Peer]:
    sim, app = env
    call = await sim.place_inbound_call(CALLER, NUMBER, **kwargs)
    await app.webhook("call.initiated")
    status, _ = await api(sim, "POST", f"/v2/calls/{call.id}/actions/answer", rtp(app))
    assert status == 200
    peer = await app.next_peer()
    await peer.next("start")
    await call.wait_for(CallState.STREAMING)
    return call, peer


def tone(freq: float, seconds: float, level: float = -12) -> np.ndarray:
    source = ToneSource(freq, level)
    return np.concatenate([source.next_frame() for _ in range(round(seconds * 50))])


# --- webhooks ------------------------------------------------------------------------------------


async def test_inbound_call_sends_a_signed_call_initiated(env: Env) -> None:
    sim, app = env
    call = await sim.place_inbound_call(CALLER, NUMBER)
    delivery = await app.webhook("call.initiated")
    assert delivery.verified == "ok"
    data, meta = delivery.body["data"], delivery.body["meta"]
    assert data["record_type"] == "event"
    assert UUID.fullmatch(data["id"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", data["occurred_at"])
    assert meta == {"attempt": 1, "delivered_to": f"{app.base_url}/telnyx"}
    event = parse_event(orjson.dumps(delivery.body))
    assert (event.direction, event.state) == ("incoming", "parked")
    assert (event.from_, event.to) == (CALLER, NUMBER)
    assert event.call_control_id == call.id
    assert call.id.startswith("v3:")
    assert event.connection_id == sim.numbers[NUMBER].connection_id
    assert UUID.fullmatch(event.call_leg_id or "")


async def test_webhook_faults_duplicate_delay_and_stale(env: Env) -> None:
    _, app = env
    faults = WebhookFaults(
        duplicate=frozenset({"call.initiated"}),
        delay_ms={"call.answered": 300},
        stale=frozenset({"streaming.started"}),
    )
    call, _ = await answered_call(env, faults=faults)
    first, second = await app.webhook("call.initiated"), await app.webhook("call.initiated", 1)
    assert first.body["data"]["id"] == second.body["data"]["id"]
    assert (first.body["meta"]["attempt"], second.body["meta"]["attempt"]) == (1, 2)
    stale = await app.webhook("streaming.started")
    assert "old" in stale.verified
    await app.webhook("call.answered")
    # call.answered was held back, so streaming.started overtook it.
    assert app.events(call) == [
        "call.initiated", "call.initiated", "streaming.started", "call.answered",
    ]  # fmt: skip


async def test_replayed_and_forged_webhooks_fail_verification(env: Env) -> None:
    sim, app = env
    call = await sim.place_inbound_call(CALLER, NUMBER)
    await call.wait_until(lambda c: bool(c.events))
    original = call.events[0]
    replay = await call.replay_webhook(original, age_s=600)
    forged = await call.replay_webhook(original, age_s=0, corrupt_signature=True)
    assert replay.body == original.body
    assert "old" in app.deliveries[1].verified
    assert "does not match" in app.deliveries[2].verified
    assert (replay.kind, forged.status) == ("replay:call.initiated", 200)


# --- answer and media ----------------------------------------------------------------------------


async def test_answer_opens_the_stream_with_connected_and_start(env: Env) -> None:
    sim, app = env
    call = await sim.place_inbound_call(CALLER, NUMBER, source=ToneSource(1000))
    await app.webhook("call.initiated")
    await api(sim, "POST", f"/v2/calls/{call.id}/actions/answer", rtp(app, client_state="aGk="))
    peer = await app.next_peer()
    start = await peer.next("start")
    assert peer.log[0] == {"event": "connected", "version": "1.0.0"}
    assert UUID.fullmatch(start["stream_id"])
    assert start["sequence_number"] == "1"
    details = start["start"]
    assert details["call_control_id"] == call.id
    assert details["client_state"] == "aGk="
    assert details["media_format"] == {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}
    media = [await peer.next("media") for _ in range(10)]
    assert [m["sequence_number"] for m in media] == [str(n) for n in range(2, 12)]
    assert [m["media"]["chunk"] for m in media] == [str(n) for n in range(1, 11)]
    assert {m["stream_id"] for m in media} == {start["stream_id"]}
    audio = np.concatenate(
        [decode(PCMU_8K, pybase64.b64decode(m["media"]["payload"])) for m in media]
    )
    assert tone_level_db(audio, 1000) == pytest.approx(-12, abs=0.5)
    answered = await app.webhook("call.answered")
    assert answered.body["data"]["payload"]["client_state"] == "aGk="
    assert (await app.webhook("streaming.started")).body["data"]["payload"][
        "stream_url"
    ] == app.ws_url


async def test_received_media_is_played_and_marks_follow_it(env: Env) -> None:
    call, peer = await answered_call(env, source=ToneSource(1000))
    sent_at = time.monotonic()
    await peer.send_audio(tone(440, 1.0))
    await peer.send({"event": "mark", "mark": {"name": "done"}})
    mark = await peer.next("mark")
    assert time.monotonic() - sent_at > 0.95
    assert mark["mark"] == {"name": "done"}
    heard = call.received_audio()
    assert tone_level_db(heard, 440) - tone_level_db(heard, 1000) > 40
    assert tone_level_db(heard, 440) - noise_floor_db(heard, exclude_hz=[440]) > 20


async def test_clear_flushes_and_returns_marks(env: Env) -> None:
    call, peer = await answered_call(env)
    await peer.send_audio(tone(440, 5.0))
    await peer.send({"event": "mark", "mark": {"name": "queued"}})
    await peer.send({"event": "clear"})
    assert (await peer.next("mark"))["mark"]["name"] == "queued"
    assert call.playout.queued_samples == 0


async def test_l16_media_is_played(env: Env) -> None:
    sim, app = env
    call = await sim.place_inbound_call(CALLER, NUMBER)
    await api(sim, "POST", f"/v2/calls/{call.id}/actions/answer",
              rtp(app, stream_bidirectional_codec="L16"))  # fmt: skip
    peer = await app.next_peer()
    await peer.next("start")
    await peer.send_audio(tone(440, 0.2), L16_8K)
    await peer.send({"event": "mark", "mark": {"name": "done"}})
    await peer.next("mark")
    assert tone_level_db(call.received_audio(), 440) > -14


async def test_malformed_frames_get_error_frames_and_are_not_played(env: Env) -> None:
    call, peer = await answered_call(env)
    await peer.ws.send_bytes(b"\xff" * 160)
    await peer.send("{not json")
    await peer.send({"event": "play"})
    await peer.send({"event": "media", "media": {}})
    await peer.send({"event": "media", "media": {"payload": "%%%"}})
    await peer.send_audio(tone(440, 0.02)[:80])  # 10 ms: below rtp mode's 20 ms minimum
    errors = [await peer.next("error") for _ in range(6)]
    codes = [e["error"]["code"] for e in errors]
    assert codes == ["100003"] * 4 + ["100004"] * 2
    assert errors[0]["error"]["title"] == "malformed_frame"
    assert errors[0]["stream_id"] == peer.log[1]["stream_id"]
    assert [e.code for e in call.protocol_errors] == codes
    await call.wait_until(lambda c: len(c.received_audio()) >= 10 * 160)
    assert not call.received_audio().any()


async def test_reordered_frames_keep_their_sequence_numbers(env: Env) -> None:
    _, peer = await answered_call(env, impairments=Impairments(reorder=0.3, seed=2))
    media = [await peer.next("media") for _ in range(20)]
    numbers = [int(m["sequence_number"]) for m in media]
    assert len(set(numbers)) == 20
    swaps = [i for i in range(19) if numbers[i] > numbers[i + 1]]
    assert swaps  # some frames overtook their predecessor...
    assert all(numbers[i] == numbers[i + 1] + 1 for i in swaps)  # ...but only by one


async def test_dtmf_goes_on_the_stream_and_as_a_webhook(env: Env) -> None:
    _, app = env
    call, peer = await answered_call(env)
    await call.send_dtmf("5")
    assert (await peer.next("dtmf"))["dtmf"] == {"digit": "5"}
    assert (await app.webhook("call.dtmf.received")).body["data"]["payload"]["digit"] == "5"


# --- streaming_start / stop, hangup, reject ------------------------------------------------------


async def test_streaming_start_sends_the_auth_token_and_parameters(env: Env) -> None:
    sim, app = env
    call = await sim.place_inbound_call(CALLER, NUMBER)
    await api(sim, "POST", f"/v2/calls/{call.id}/actions/answer", {})
    body = rtp(app, stream_auth_token="secret-1", custom_parameters=[{"name": "leg", "value": "7"}])
    status, _ = await api(sim, "POST", f"/v2/calls/{call.id}/actions/streaming_start", body)
    assert status == 200
    peer = await app.next_peer()
    start = await peer.next("start")
    assert peer.headers["x-telnyx-streaming-auth-token"] == "secret-1"
    assert peer.log[0]["connected"] == {"x-telnyx-streaming-auth-token": "secret-1"}
    assert start["start"]["custom_parameters"] == {"leg": "7"}
    await api(sim, "POST", f"/v2/calls/{call.id}/actions/streaming_stop", {})
    await peer.next("stop")
    await app.webhook("streaming.stopped")
    assert call.state is CallState.STREAMING  # the leg itself stays up


async def test_api_hangup_stops_the_stream_then_later_actions_get_90018(env: Env) -> None:
    sim, app = env
    call, peer = await answered_call(env)
    status, body = await api(sim, "POST", f"/v2/calls/{call.id}/actions/hangup", {})
    assert (status, body) == (200, {"data": {"result": "ok"}})
    stop = await peer.next("stop")
    assert stop["stop"]["call_control_id"] == call.id
    hangup = (await app.webhook("call.hangup")).body["data"]["payload"]
    assert (hangup["hangup_cause"], hangup["hangup_source"]) == ("normal_clearing", "callee")
    assert app.events(call)[-2:] == ["streaming.stopped", "call.hangup"]
    status, body = await api(sim, "POST", f"/v2/calls/{call.id}/actions/hangup", {})
    assert status == 422
    assert body["errors"][0]["code"] == "90018"
    assert body["errors"][0]["title"] == "Call has already ended"
    status, body = await api(sim, "POST", "/v2/calls/v3:nope/actions/hangup", {})
    assert (status, body["errors"][0]["code"]) == (404, "10005")


async def test_caller_hang_up_is_reported_from_the_caller(env: Env) -> None:
    _, app = env
    call, peer = await answered_call(env)
    await call.hang_up()
    await peer.next("stop")
    hangup = (await app.webhook("call.hangup")).body["data"]["payload"]
    assert (hangup["hangup_cause"], hangup["hangup_source"]) == ("normal_clearing", "caller")
    assert hangup["call_quality_stats"]["inbound"]["packet_count"] == str(call.media_frames_sent)


async def test_reject_ends_the_call(env: Env) -> None:
    sim, app = env
    call = await sim.place_inbound_call(CALLER, NUMBER)
    status, _ = await api(
        sim, "POST", f"/v2/calls/{call.id}/actions/reject", {"cause": "USER_BUSY"}
    )
    assert status == 200
    hangup = (await app.webhook("call.hangup")).body["data"]["payload"]
    assert (hangup["hangup_cause"], hangup["sip_hangup_cause"]) == ("user_busy", "486")
    status, body = await api(sim, "POST", f"/v2/calls/{call.id}/actions/answer", rtp(app))
    assert (status, body["errors"][0]["code"]) == (422, "90018")


async def test_command_id_repeats_are_ignored(env: Env) -> None:
    sim, app = env
    call = await sim.place_inbound_call(CALLER, NUMBER)
    path = f"/v2/calls/{call.id}/actions/answer"
    assert (await api(sim, "POST", path, {"command_id": "c1"}))[0] == 200
    assert (await api(sim, "POST", path, {"command_id": "c1"}))[0] == 200
    status, body = await api(sim, "POST", path, {"command_id": "c2"})
    assert (status, body["errors"][0]["detail"]) == (422, "Call has already been answered")
    await app.webhook("call.answered")
    assert app.events(call).count("call.answered") == 1


# --- REST ----------------------------------------------------------------------------------------


async def test_rest_refuses_a_bad_key_and_records_it(env: Env) -> None:
    sim, _ = env
    status, body = await api(sim, "GET", "/v2/phone_numbers", key="wrong")
    assert status == 401
    assert body["errors"][0]["code"] == "10009"
    assert set(body["errors"][0]) == {"code", "title", "detail"}
    assert (sim.requests[-1].auth, sim.requests[-1].status) == (("bearer", "wrong"), 401)


async def test_dial_rings_answers_and_streams(env: Env) -> None:
    sim, app = env
    sim.set_callee("+15559990000", Callee(ring_ms=30, source=lambda: ToneSource(600)))
    connection = sim.numbers[NUMBER].connection_id
    body = {"connection_id": connection, "from": NUMBER, "to": "+15559990000",
            "webhook_url": f"{app.base_url}/telnyx", **rtp(app)}  # fmt: skip
    status, reply = await api(sim, "POST", "/v2/calls", body)
    assert status == 200
    data = reply["data"]
    assert (data["is_alive"], data["record_type"]) == (False, "call")
    assert UUID.fullmatch(data["call_session_id"])
    initiated = (await app.webhook("call.initiated")).body["data"]["payload"]
    assert (initiated["direction"], initiated["state"]) == ("outgoing", "bridging")
    await app.webhook("call.answered")
    peer = await app.next_peer()
    media = await peer.next("media")
    assert tone_level_db(decode(PCMU_8K, pybase64.b64decode(media["media"]["payload"])), 600) > -15
    assert sim.requests[-1].json["to"] == "+15559990000"


async def test_dial_to_a_busy_number_and_validation(env: Env) -> None:
    sim, app = env
    sim.set_callee("+15559990001", Callee("busy", ring_ms=10))
    connection = sim.numbers[NUMBER].connection_id
    body = {"connection_id": connection, "from": NUMBER, "to": "+15559990001"}
    status, _ = await api(sim, "POST", "/v2/calls", body)
    assert status == 200
    hangup = (await app.webhook("call.hangup")).body["data"]["payload"]
    assert (hangup["hangup_cause"], hangup["hangup_source"]) == ("user_busy", "callee")
    for bad, code in [
        ({"from": NUMBER, "to": "+1555"}, "10004"),
        ({**body, "connection_id": "404"}, "10017"),
        ({**body, "client_state": "not base64!"}, "10015"),
        ({**body, **rtp(app), "stream_bidirectional_codec": "OPUS"}, "10015"),
    ]:
        status, reply = await api(sim, "POST", "/v2/calls", bad)
        assert (status, reply["errors"][0]["code"]) == (422, code)


async def test_phone_numbers_lookup_and_connection_update(env: Env) -> None:
    sim, _ = env
    status, body = await api(sim, "GET", "/v2/phone_numbers?filter[phone_number]=15550002222")
    assert status == 200
    (record,) = body["data"]
    assert (record["phone_number"], record["record_type"]) == (NUMBER, "phone_number")
    status, body = await api(sim, "GET", "/v2/phone_numbers?filter[phone_number]=19999999999")
    assert body["data"] == []
    other = sim.add_connection()
    status, body = await api(sim, "PATCH", f"/v2/phone_numbers/{record['id']}",
                             {"connection_id": other})  # fmt: skip
    assert (status, body["data"]["connection_id"]) == (200, other)
    status, body = await api(sim, "PATCH", f"/v2/phone_numbers/{record['id']}",
                             {"connection_id": "404"})  # fmt: skip
    assert (status, body["errors"][0]["code"]) == (422, "10017")


async def test_dial_unanswered_ends_with_no_answer(env: Env) -> None:
    sim, app = env
    sim.set_callee("+15559990002", Callee("no-answer", ring_ms=20))
    connection = sim.numbers[NUMBER].connection_id
    body = {"connection_id": connection, "from": NUMBER, "to": "+15559990002"}
    status, reply = await api(sim, "POST", "/v2/calls", body)
    assert status == 200
    hangup = (await app.webhook("call.hangup")).body["data"]["payload"]
    assert (hangup["hangup_cause"], hangup["sip_hangup_cause"]) == ("no_answer", "480")
    call = sim.calls[reply["data"]["call_control_id"]]
    assert CallState.ANSWERED not in call.history


# --- the Call Control application ----------------------------------------------------------------


async def test_application_update_needs_name_and_webhook_url(env: Env) -> None:
    sim, _ = env
    connection = sim.add_connection(application_name="my app")
    path = f"/v2/call_control_applications/{connection}"
    status, body = await api(sim, "GET", path)
    assert (status, body["data"]["application_name"]) == (200, "my app")
    for bad, pointer in [
        ({"webhook_event_url": "https://cb.test/hooks"}, "/application_name"),
        ({"application_name": "my app"}, "/webhook_event_url"),
        (
            {"application_name": "my app", "webhook_event_url": "cb.test/hooks"},
            "/webhook_event_url",
        ),
    ]:
        status, body = await api(sim, "PATCH", path, bad)
        (error,) = body["errors"]
        assert (status, error["source"]["pointer"]) == (422, pointer)
        assert set(error) == {"code", "title", "detail", "source"}
    assert sim.connections[connection].webhook_event_url is None
    status, body = await api(
        sim,
        "PATCH",
        path,
        {"application_name": "renamed", "webhook_event_url": "https://cb.test/hooks"},
    )
    assert status == 200
    assert body["data"]["application_name"] == "renamed"
    assert body["data"]["webhook_event_url"] == "https://cb.test/hooks"


# --- junk on a live stream ----------------------------------------------------------------------


async def test_junk_frames_between_media(env: Env) -> None:
    call, peer = await answered_call(env)
    await peer.next("media")
    assert await call.inject_junk() == len(JUNK_KINDS)
    await peer.next("error")
    await peer.next("media")
    await call.hang_up()
    await peer.closed.wait()
    assert len(peer.junk_text) == 1
    bad = [m for m in peer.log if m["event"] == "media" and "%" in m["media"]["payload"]]
    assert len(bad) == 1 and bad[0]["stream_id"] == call.streams[0].stream_id
    assert next(m for m in peer.log if m["event"] == "mark")["mark"] == {}
    assert any(m["event"] == "x-future-event" for m in peer.log)


# --- codecs: negotiated, streamed, decoded -------------------------------------------------------


async def start_of(env: Env, call: TelnyxCall, **fields: Any) -> tuple[Peer, dict[str, Any]]:
    sim, app = env
    await app.webhook("call.initiated")
    status, reply = await api(sim, "POST", f"/v2/calls/{call.id}/actions/answer",
                              rtp(app, **fields))  # fmt: skip
    assert status == 200, reply
    peer = await app.next_peer()
    return peer, (await peer.next("start"))["start"]


def payloads(frames: list[dict[str, Any]]) -> list[bytes]:
    return [pybase64.b64decode(frame["media"]["payload"]) for frame in frames]


@pytest.mark.parametrize(
    ("call_codec", "asked", "streamed"),
    [
        ("PCMU", None, "PCMU"),
        ("PCMA", None, "PCMA"),
        ("PCMA", "PCMU", "PCMU"),  # Telnyx transcodes between the G.711 laws
        ("PCMU", "PCMA", "PCMA"),
        ("PCMA", "default", "PCMA"),
        ("PCMA", "L16", "L16"),
        ("G722", "PCMU", "G722"),  # no transcoding from G.722: the call's codec streams
        ("OPUS", "PCMA", "OPUS"),
    ],
)
async def test_stream_codec_follows_the_call_and_transcodes_only_g711(
    env: Env, call_codec: str, asked: str | None, streamed: str
) -> None:
    sim, _ = env
    call = await sim.place_inbound_call(CALLER, NUMBER, codec=call_codec, source=ToneSource(440))
    peer, start = await start_of(env, call, **({"stream_codec": asked} if asked else {}))
    rate = {"G722": 16000, "OPUS": 48000}.get(streamed, 8000)
    assert start["media_format"] == {"encoding": streamed, "sample_rate": rate, "channels": 1}
    raw = payloads([await peer.next("media") for _ in range(25)])
    if streamed == "OPUS":
        assert raw[0].startswith(b"SIMULATED-NOT-ENCODED")  # opaque: Opus is not encoded
        return
    if streamed == "G722":
        codec = G722.G722(16000, 64000)  # one decoder for the whole stream: G.722 is stateful
        audio = np.concatenate([np.asarray(codec.decode(chunk), dtype=np.int16) for chunk in raw])
        assert {len(chunk) for chunk in raw} == {160}  # 20 ms at 64 kbit/s
        assert tone_level_db(audio[1600:], 440, 16000) == pytest.approx(-12, abs=1.0)
        return
    fmt = {"PCMU": PCMU_8K, "PCMA": PCMA_8K, "L16": L16_8K}[streamed]
    audio = np.concatenate([decode(fmt, chunk) for chunk in raw])
    assert tone_level_db(audio, 440) == pytest.approx(-12, abs=0.5)


async def test_what_comes_back_is_decoded_as_the_declared_codec(env: Env) -> None:
    sim, _ = env
    # A PCMA call: the stream carries A-law, but callbridge declared (by default) PCMU.
    call = await sim.place_inbound_call(CALLER, NUMBER, codec="PCMA")
    peer, start = await start_of(env, call)
    assert start["media_format"]["encoding"] == "PCMA"
    await peer.send_audio(tone(440, 1.0), PCMA_8K)  # wrong: A-law back, as the start frame said
    await peer.send({"event": "mark", "mark": {"name": "alaw"}})
    await peer.next("mark")
    garbled = call.received_audio()[-8000:]
    await peer.send_audio(tone(440, 1.0), PCMU_8K)  # right: the declared codec
    await peer.send({"event": "mark", "mark": {"name": "ulaw"}})
    await peer.next("mark")
    clean = call.received_audio()[-8000:]
    assert tone_level_db(clean, 440) == pytest.approx(-12, abs=0.5)
    assert tone_level_db(clean, 1320) < -50
    # A-law read as mu-law: the level is off by about 9 dB and odd harmonics are strong.
    assert abs(tone_level_db(garbled, 440) + 12) > 6
    assert tone_level_db(garbled, 1320) > -20


async def test_g722_and_l16_at_16_khz_come_back_as_declared(env: Env) -> None:
    sim, _ = env
    for codec, rate in (("G722", 8000), ("L16", 16000)):
        call = await sim.place_inbound_call(CALLER, NUMBER)
        peer, _ = await start_of(env, call, stream_bidirectional_codec=codec,
                                 stream_bidirectional_sampling_rate=rate)  # fmt: skip
        source = ToneSource(440)
        wide = np.concatenate([source.next_frame() for _ in range(50)])
        wide = np.repeat(wide, 2)  # a crude 16 kHz copy: the tone is still there at 440 Hz
        payload = (G722.G722(16000, 64000).encode(wide) if codec == "G722"
                   else wide.astype(">i2").tobytes())  # fmt: skip
        await peer.send({"event": "media", "media": {"payload": pybase64.b64encode_as_string(
            payload)}})  # fmt: skip
        await peer.send({"event": "mark", "mark": {"name": "done"}})
        await peer.next("mark")
        assert tone_level_db(call.received_audio()[-4000:], 440) > -14, codec
        await call.hang_up()


async def test_codecs_the_simulator_cannot_decode_are_refused_as_its_limit(env: Env) -> None:
    sim, app = env
    call = await sim.place_inbound_call(CALLER, NUMBER)
    await app.webhook("call.initiated")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"stream_bidirectional_codec": "OPUS"}, "/stream_bidirectional_codec"),
        ({"stream_bidirectional_codec": "AMR-WB"}, "/stream_bidirectional_codec"),
        ({"stream_bidirectional_codec": "pcmu"}, "/stream_bidirectional_codec"),
        ({"stream_codec": "MP3"}, "/stream_codec"),
        ({"stream_bidirectional_sampling_rate": 16000}, "/stream_bidirectional_sampling_rate"),
    ]
    for fields, pointer in cases:
        status, body = await api(sim, "POST", f"/v2/calls/{call.id}/actions/answer",
                                 rtp(app, **fields))  # fmt: skip
        (error,) = body["errors"]
        assert (status, error["source"]["pointer"]) == (422, pointer), fields
    _, body = await api(sim, "POST", f"/v2/calls/{call.id}/actions/answer",
                        rtp(app, stream_bidirectional_codec="OPUS"))  # fmt: skip
    assert "simulator" in body["errors"][0]["detail"]
    # Codecs Telnyx takes for what it streams are all accepted.
    status, _ = await api(sim, "POST", f"/v2/calls/{call.id}/actions/answer",
                          rtp(app, stream_codec="AMR-WB"))  # fmt: skip
    assert status == 200


async def test_a_call_codec_outside_telnyx_offers_is_refused(env: Env) -> None:
    sim, _ = env
    with pytest.raises(ValueError, match="negotiates one of"):
        await sim.place_inbound_call(CALLER, NUMBER, codec="G729")
    assert not sim.calls


# --- who hears what callbridge sends -------------------------------------------------------------


@pytest.mark.parametrize(("legs", "heard"), [("self", True), ("both", True), ("opposite", False)])
async def test_target_legs_decide_who_hears_the_stream(env: Env, legs: str, heard: bool) -> None:
    sim, _ = env
    call = await sim.place_inbound_call(CALLER, NUMBER)
    peer, _ = await start_of(env, call, stream_bidirectional_target_legs=legs)
    await peer.send_audio(tone(1000, 0.5))
    await peer.send({"event": "mark", "mark": {"name": "sent"}})
    await peer.next("mark")
    await call.wait_until(lambda c: len(c.received_audio()) >= 8000)
    level = tone_level_db(call.received_audio(), 1000)
    assert call.media_frames_received == 1
    if heard:
        assert level > -18 and call.media_frames_discarded == 0
    else:
        # A standalone leg has no opposite leg: accepted, counted, heard by nobody.
        assert not call.received_audio().any() and call.media_frames_discarded == 1
        assert call.protocol_errors == []


async def test_target_legs_default_to_opposite_and_are_validated(env: Env) -> None:
    sim, app = env
    call = await sim.place_inbound_call(CALLER, NUMBER)
    await app.webhook("call.initiated")
    fields = rtp(app)
    del fields["stream_bidirectional_target_legs"]
    status, body = await api(sim, "POST", f"/v2/calls/{call.id}/actions/answer",
                             {**fields, "stream_bidirectional_target_legs": "caller"})  # fmt: skip
    assert (status, body["errors"][0]["source"]["pointer"]) == (
        422, "/stream_bidirectional_target_legs",
    )  # fmt: skip
    status, _ = await api(sim, "POST", f"/v2/calls/{call.id}/actions/answer", fields)
    peer = await app.next_peer()
    await peer.next("start")
    assert call.stream is not None and call.stream.config.target_legs == "opposite"  # type: ignore[attr-defined]


# --- streams that fail, stop and start again ----------------------------------------------------


async def test_stream_fault_fail_sends_streaming_failed_and_the_call_stays(env: Env) -> None:
    sim, app = env
    call = await sim.place_inbound_call(CALLER, NUMBER, stream_fault="fail")
    await app.webhook("call.initiated")
    await api(sim, "POST", f"/v2/calls/{call.id}/actions/answer", rtp(app))
    failed = (await app.webhook("streaming.failed")).body["data"]["payload"]
    assert failed["stream_type"] == "websocket" and failed["failure_reason"]
    assert failed["stream_params"] == {"stream_url": app.ws_url, "track": "inbound_track"}
    assert UUID.fullmatch(failed["stream_id"])
    assert call.state is CallState.ANSWERED and not call.streams
    call.stream_fault = None  # the application retries; this time it connects
    status, _ = await api(sim, "POST", f"/v2/calls/{call.id}/actions/streaming_start", rtp(app))
    assert status == 200
    await (await app.next_peer()).next("start")
    await app.webhook("streaming.started")


async def test_stream_fault_never_connects_and_says_nothing(env: Env) -> None:
    sim, app = env
    call = await sim.place_inbound_call(CALLER, NUMBER, stream_fault="never")
    await app.webhook("call.initiated")
    await api(sim, "POST", f"/v2/calls/{call.id}/actions/answer", rtp(app))
    await app.webhook("call.answered")
    await call.wait_until(lambda c: c.streams_attempted == 1)
    assert app.peers.empty() and not call.streams
    assert not [e for e in app.events(call) if e.startswith("streaming.")]


async def test_streaming_stop_then_start_with_new_params(env: Env) -> None:
    sim, app = env
    call = await sim.place_inbound_call(CALLER, NUMBER, codec="PCMA")
    peer, start = await start_of(env, call)
    assert start["media_format"]["encoding"] == "PCMA"
    await api(sim, "POST", f"/v2/calls/{call.id}/actions/streaming_stop", {})
    stop = await peer.next("stop")
    assert stop["stream_id"] == start_id(peer)
    await peer.closed.wait()
    await app.webhook("streaming.stopped")
    status, _ = await api(sim, "POST", f"/v2/calls/{call.id}/actions/streaming_start",
                          rtp(app, stream_codec="PCMU"))  # fmt: skip
    assert status == 200
    second = await app.next_peer()
    restarted = await second.next("start")
    assert restarted["start"]["media_format"]["encoding"] == "PCMU"
    assert restarted["stream_id"] != stop["stream_id"]
    await app.webhook("streaming.started", index=1)
    assert len(call.streams) == 2


def start_id(peer: Peer) -> str:
    return str(peer.log[1]["stream_id"])


async def test_refused_rest_requests_are_recorded(env: Env) -> None:
    sim, app = env
    call, _ = await answered_call(env)
    status, _ = await api(sim, "POST", f"/v2/calls/{call.id}/actions/streaming_start",
                          rtp(app, stream_track="sideways"))  # fmt: skip
    assert status == 422
    (error,) = sim.protocol_errors
    assert error.code == "10015" and "stream_track" in error.reason
    await api(sim, "POST", f"/v2/calls/{call.id}/actions/hangup", {})
    await call.wait_for(CallState.ENDED)
    status, _ = await api(sim, "POST", f"/v2/calls/{call.id}/actions/hangup", {})
    assert status == 422  # 90018, a race every application meets: not recorded
    assert len(sim.protocol_errors) == 1


async def test_streaming_start_right_after_stop_waits_for_the_old_stream(env: Env) -> None:
    sim, app = env
    call = await sim.place_inbound_call(CALLER, NUMBER, codec="G722")
    peer, start = await start_of(env, call)
    assert start["media_format"]["encoding"] == "G722"
    path = f"/v2/calls/{call.id}/actions"
    status, _ = await api(sim, "POST", f"{path}/streaming_stop", {})
    assert status == 200
    status, reply = await api(sim, "POST", f"{path}/streaming_start",
                              rtp(app, stream_codec="PCMU"))  # fmt: skip
    assert status == 200, reply
    second = await app.next_peer()
    await second.next("start")
    assert peer.closed.is_set() and any(m["event"] == "stop" for m in peer.log)
    await app.webhook("streaming.started", index=1)
    assert app.events(call)[-2:] == ["streaming.stopped", "streaming.started"]
    status, body = await api(sim, "POST", f"{path}/streaming_start", rtp(app))
    assert (status, body["errors"][0]["code"]) == (422, "10015")  # one live stream at a time


async def test_a_dialled_callee_streams_its_own_codec(env: Env) -> None:
    sim, app = env
    sim.set_callee("+15559990003", Callee(ring_ms=10, source=lambda: ToneSource(600), codec="PCMA"))
    connection = sim.numbers[NUMBER].connection_id
    body = {"connection_id": connection, "from": NUMBER, "to": "+15559990003", **rtp(app)}
    status, _ = await api(sim, "POST", "/v2/calls", body)
    assert status == 200
    peer = await app.next_peer()
    start = await peer.next("start")
    assert start["start"]["media_format"]["encoding"] == "PCMA"
    media = await peer.next("media")
    assert tone_level_db(decode(PCMA_8K, pybase64.b64decode(media["media"]["payload"])), 600) > -15


async def test_junk_flood_on_a_telnyx_stream_keeps_media_flowing(env: Env) -> None:
    call, peer = await answered_call(env)
    await peer.next("media")
    await call.inject_junk(kinds=("bad_json", "unknown_event"), count=100, within_s=0.4)
    await peer.next("media")
    await call.hang_up()
    await peer.closed.wait()
    assert len(peer.junk_text) == 50
    assert sum(m["event"] == "x-future-event" for m in peer.log) == 50
    assert sum(m["event"] == "media" for m in peer.log) >= 20
