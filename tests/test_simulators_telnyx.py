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
import numpy as np
import orjson
import pybase64
import pytest
from aiohttp import web

from adapters.simulators.audio import ToneSource, noise_floor_db, tone_level_db
from adapters.simulators.common import Callee, CallState
from adapters.simulators.pacing import Impairments
from adapters.simulators.telnyx_calls import TelnyxCall, WebhookFaults
from adapters.simulators.telnyx_rest import TelnyxSimulator
from adapters.telnyx.signature import SignatureError, verify_webhook
from adapters.telnyx.webhooks import parse_event
from media.codecs import L16_8K, PCMU_8K, decode, encode

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
                    frame = orjson.loads(message.data)
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
