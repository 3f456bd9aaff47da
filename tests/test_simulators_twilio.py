"""The Twilio simulator against a small in-test server playing callbridge's part.

The stand-in answers the voice webhook with TwiML, checks every signature with the Twilio
adapter's own validator, accepts the media websocket and lets each test drive it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import orjson
import pybase64
import pytest
from aiohttp import web

from adapters.simulators.audio import ToneSource, noise_floor_db, tone_level_db
from adapters.simulators.common import JUNK_KINDS, Callee, CallState
from adapters.simulators.pacing import Impairments
from adapters.simulators.twilio_calls import TwilioCall
from adapters.simulators.twilio_rest import TwilioSimulator
from adapters.twilio.signature import validate_signature
from adapters.twilio.twiml import connect_stream, reject
from media.codecs import PCMU_8K, decode, encode

NUMBER = "+15550001111"
CALLER = "+15557654321"
ALL_EVENTS = ("initiated", "ringing", "answered", "completed")


@dataclass
class Peer:
    """One media websocket, as the stand-in sees it."""

    ws: web.WebSocketResponse
    signature_ok: bool
    log: list[dict[str, Any]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    junk_text: list[str] = field(default_factory=list)  # text frames that are not JSON
    binary: int = 0

    async def next(self, event: str) -> dict[str, Any]:
        async with asyncio.timeout(5):
            while True:
                message = await self.queue.get()
                if message["event"] == event:
                    return message

    @property
    def stream_sid(self) -> str:
        return str(self.log[1]["streamSid"])

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send_str(
            message if isinstance(message, str) else orjson.dumps(message).decode()
        )

    async def send_audio(self, samples: np.ndarray) -> None:
        payload = pybase64.b64encode_as_string(encode(PCMU_8K, samples))
        await self.send(
            {"event": "media", "streamSid": self.stream_sid, "media": {"payload": payload}}
        )


class Bridge:
    """callbridge's part: voice and status webhooks, and the media socket."""

    def __init__(self, auth_token: str) -> None:
        self.auth_token = auth_token
        self.base_url = ""
        self.twiml: Callable[[], str] = lambda: connect_stream(self.ws_url, {"leg": "token-1"})
        self.voice: list[tuple[str, dict[str, str], bool]] = []
        self.status: list[dict[str, str]] = []
        self.status_signed = True
        self.status_arrived = asyncio.Event()
        self.peers: asyncio.Queue[Peer] = asyncio.Queue()

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/media"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/voice", self._voice)
        app.router.add_post("/status", self._status)
        app.router.add_get("/media", self._media)
        return app

    async def _form(self, request: web.Request) -> tuple[dict[str, str], bool]:
        form = await request.post()
        url = f"{self.base_url}{request.path_qs}"
        params = (
            None if request.method == "GET" else {k: [str(v) for v in form.getall(k)] for k in form}
        )
        signed = validate_signature(
            self.auth_token, url, params, request.headers.get("X-Twilio-Signature")
        )
        fields = {
            k: str(v) for k, v in (request.query if request.method == "GET" else form).items()
        }
        return fields, signed

    async def _voice(self, request: web.Request) -> web.Response:
        fields, signed = await self._form(request)
        self.voice.append((request.method, fields, signed))
        return web.Response(text=self.twiml(), content_type="text/xml")

    async def _status(self, request: web.Request) -> web.Response:
        fields, signed = await self._form(request)
        self.status_signed &= signed
        self.status.append(fields)
        self.status_arrived.set()
        return web.Response()

    async def _media(self, request: web.Request) -> web.WebSocketResponse:
        signed = validate_signature(
            self.auth_token, self.ws_url, None, request.headers.get("x-twilio-signature")
        )
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        peer = Peer(ws, signed)
        self.peers.put_nowait(peer)
        try:
            async for message in ws:
                if message.type is aiohttp.WSMsgType.BINARY:
                    peer.binary += 1
                elif message.type is aiohttp.WSMsgType.TEXT:
                    try:
                        frame = orjson.loads(message.data)
                    except orjson.JSONDecodeError:
                        peer.junk_text.append(message.data)
                        continue
                    peer.log.append(frame)
                    peer.arrivals.append(time.monotonic())
                    peer.queue.put_nowait(frame)
        finally:
            peer.closed.set()
        return ws

    async def next_peer(self) -> Peer:
        async with asyncio.timeout(5):
            return await self.peers.get()

    async def wait_status(self, status: str, count: int = 1) -> dict[str, str]:
        """The first callback with ``status``, once ``count`` callbacks have arrived."""
        async with asyncio.timeout(5):
            while True:
                for fields in self.status:
                    if fields["CallStatus"] == status and len(self.status) >= count:
                        return fields
                self.status_arrived.clear()
                await self.status_arrived.wait()


@pytest.fixture
async def env(aiohttp_server: Any) -> AsyncIterator[tuple[TwilioSimulator, Bridge]]:
    sim = TwilioSimulator()
    await sim.start()
    bridge = Bridge(sim.auth_token)
    server = await aiohttp_server(bridge.app())
    bridge.base_url = str(server.make_url("")).rstrip("/")
    sim.add_number(
        NUMBER,
        voice_url=f"{bridge.base_url}/voice",
        status_callback=f"{bridge.base_url}/status",
        status_callback_events=ALL_EVENTS,
    )
    try:
        yield sim, bridge
    finally:
        await sim.close()


async def answered_call(
    env: tuple[TwilioSimulator, Bridge], **kwargs: Any
) -> tuple[TwilioCall, Peer]:
    sim, bridge = env
    call = await sim.place_inbound_call(CALLER, NUMBER, **kwargs)
    peer = await bridge.next_peer()
    await peer.next("start")
    await call.wait_for(CallState.STREAMING)
    return call, peer


def tone(freq: float, seconds: float, level: float = -12) -> np.ndarray:
    source = ToneSource(freq, level)
    return np.concatenate([source.next_frame() for _ in range(round(seconds * 50))])


# --- inbound call, webhook and stream ------------------------------------------------------------


async def test_inbound_call_posts_a_signed_voice_webhook(
    env: tuple[TwilioSimulator, Bridge],
) -> None:
    sim, bridge = env
    call, _ = await answered_call(env)
    method, fields, signed = bridge.voice[0]
    assert (method, signed) == ("POST", True)
    assert fields["CallSid"] == call.sid
    assert re.fullmatch(r"CA[0-9a-f]{32}", call.sid)
    assert fields["AccountSid"] == sim.account_sid
    assert (fields["From"], fields["To"]) == (CALLER, NUMBER)
    assert (fields["CallStatus"], fields["Direction"]) == ("ringing", "inbound")
    assert fields["ApiVersion"] == "2010-04-01"


async def test_stream_opens_with_a_signed_upgrade_connected_and_start(
    env: tuple[TwilioSimulator, Bridge],
) -> None:
    sim, _ = env
    call, peer = await answered_call(env)
    assert peer.signature_ok
    connected, start = peer.log[0], peer.log[1]
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert start["sequenceNumber"] == "1"
    details = start["start"]
    assert re.fullmatch(r"MZ[0-9a-f]{32}", details["streamSid"])
    assert details["streamSid"] == start["streamSid"]
    assert (details["accountSid"], details["callSid"]) == (sim.account_sid, call.sid)
    assert details["tracks"] == ["inbound"]
    assert details["mediaFormat"] == {
        "encoding": "audio/x-mulaw",
        "sampleRate": 8000,
        "channels": 1,
    }
    assert details["customParameters"] == {"leg": "token-1"}


async def test_media_frames_carry_string_counters_and_the_callers_tone(
    env: tuple[TwilioSimulator, Bridge],
) -> None:
    _, peer = await answered_call(env, source=ToneSource(440))
    media = [await peer.next("media") for _ in range(25)]
    assert [m["sequenceNumber"] for m in media] == [str(n) for n in range(2, 27)]
    assert [m["media"]["chunk"] for m in media] == [str(n) for n in range(1, 26)]
    assert [m["media"]["timestamp"] for m in media] == [str(20 * n) for n in range(25)]
    assert {m["media"]["track"] for m in media} == {"inbound"}
    audio = np.concatenate(
        [decode(PCMU_8K, pybase64.b64decode(m["media"]["payload"])) for m in media]
    )
    assert len(audio) == 25 * 160
    assert tone_level_db(audio, 440) == pytest.approx(-12, abs=0.5)


async def test_media_arrives_at_real_time(env: tuple[TwilioSimulator, Bridge]) -> None:
    _, peer = await answered_call(env)
    for _ in range(51):
        await peer.next("media")
    first = peer.log.index(next(m for m in peer.log if m["event"] == "media"))
    elapsed = peer.arrivals[first + 50] - peer.arrivals[first]
    # 50 frames of 20 ms after the first: one second, give or take the scheduler.
    assert 0.9 < elapsed < 1.2


# --- what the caller hears -----------------------------------------------------------------------


async def test_received_audio_is_played_at_real_time_and_marks_follow_it(
    env: tuple[TwilioSimulator, Bridge],
) -> None:
    call, peer = await answered_call(env, source=ToneSource(440))
    sent_at = time.monotonic()
    await peer.send_audio(tone(1000, 1.0))  # one second of audio in one message
    await peer.send({"event": "mark", "streamSid": peer.stream_sid, "mark": {"name": "played"}})
    mark = await peer.next("mark")
    assert time.monotonic() - sent_at > 0.95  # not before the second has played
    assert mark["mark"] == {"name": "played"}
    assert mark["streamSid"] == peer.stream_sid
    assert int(mark["sequenceNumber"]) > 1
    heard = call.received_audio()
    loud = np.flatnonzero(np.abs(heard) > 1000)
    assert 7500 < loud[-1] - loud[0] < 8100  # one second long, not squeezed
    assert tone_level_db(heard, 1000) - tone_level_db(heard, 440) > 40
    assert tone_level_db(heard, 1000) - noise_floor_db(heard, exclude_hz=[1000]) > 20


async def test_clear_flushes_queued_audio_and_returns_marks(
    env: tuple[TwilioSimulator, Bridge],
) -> None:
    call, peer = await answered_call(env)
    await peer.send_audio(tone(1000, 5.0))
    await peer.send({"event": "mark", "streamSid": peer.stream_sid, "mark": {"name": "end"}})
    await call.wait_until(lambda c: np.abs(c.received_audio()).max(initial=0) > 1000)
    await peer.send({"event": "clear", "streamSid": peer.stream_sid})
    assert (await peer.next("mark"))["mark"]["name"] == "end"
    heard_at_clear = len(call.received_audio())
    await call.wait_until(lambda c: len(c.received_audio()) > heard_at_clear + 8 * 160)
    tail = call.received_audio()[heard_at_clear + 2 * 160 :]
    assert not tail.any()
    assert call.playout.queued_samples == 0


async def test_malformed_messages_are_recorded_and_not_played(
    env: tuple[TwilioSimulator, Bridge],
) -> None:
    call, peer = await answered_call(env)
    payload = pybase64.b64encode_as_string(encode(PCMU_8K, tone(1000, 0.2)))
    sid = peer.stream_sid
    await peer.ws.send_bytes(encode(PCMU_8K, tone(1000, 0.2)))
    await peer.send("{not json")
    await peer.send(
        {"event": "media", "streamSid": sid, "media": {"payload": payload, "track": "outbound"}}
    )
    await peer.send(
        {"event": "media", "streamSid": sid, "sequenceNumber": "1", "media": {"payload": payload}}
    )
    await peer.send({"event": "media", "streamSid": "MZ" + "0" * 32, "media": {"payload": payload}})
    await peer.send({"event": "media", "streamSid": sid, "media": {"payload": "%%%not-base64"}})
    await peer.send({"event": "play", "streamSid": sid})
    await peer.send({"event": "mark", "streamSid": sid, "mark": {"name": "sync"}})
    await peer.next("mark")  # nothing was queued, so it comes straight back
    codes = [error.code for error in call.protocol_errors]
    assert codes == ["31950"] + ["31951"] * 6
    assert "'track'" in call.protocol_errors[2].reason
    assert "extra keys ['sequenceNumber']" in call.protocol_errors[3].reason
    await call.wait_until(lambda c: len(c.received_audio()) >= 20 * 160)
    assert not call.received_audio().any()


# --- the call's end ------------------------------------------------------------------------------


async def test_server_closing_the_stream_ends_the_call(env: tuple[TwilioSimulator, Bridge]) -> None:
    _, bridge = env
    call, peer = await answered_call(env)
    await peer.ws.close()
    await call.wait_for(CallState.ENDED)
    assert call.status == "completed"
    completed = await bridge.wait_status("completed")
    assert completed["CallDuration"].isdigit()
    statuses = [(s["CallStatus"], s["SequenceNumber"]) for s in bridge.status]
    assert statuses == [
        ("initiated", "0"),
        ("ringing", "1"),
        ("in-progress", "2"),
        ("completed", "3"),
    ]
    assert bridge.status_signed


async def test_caller_hang_up_sends_stop(env: tuple[TwilioSimulator, Bridge]) -> None:
    sim, bridge = env
    call, peer = await answered_call(env)
    await call.hang_up()
    stop = await peer.next("stop")
    assert stop["stop"] == {"accountSid": sim.account_sid, "callSid": call.sid}
    async with asyncio.timeout(5):
        await peer.closed.wait()
    assert (await bridge.wait_status("completed"))["CallSid"] == call.sid


async def test_dtmf_travels_on_the_stream(env: tuple[TwilioSimulator, Bridge]) -> None:
    call, peer = await answered_call(env)
    await call.send_dtmf("7")
    dtmf = await peer.next("dtmf")
    assert dtmf["dtmf"] == {"track": "inbound_track", "digit": "7"}
    assert dtmf["streamSid"] == peer.stream_sid
    with pytest.raises(ValueError, match="DTMF"):
        await call.send_dtmf("x")


async def test_reject_ends_the_call_unanswered(env: tuple[TwilioSimulator, Bridge]) -> None:
    sim, bridge = env
    bridge.twiml = lambda: reject("busy")
    call = await sim.place_inbound_call(CALLER, NUMBER)
    await call.wait_for(CallState.ENDED)
    assert call.status == "busy"
    assert CallState.ANSWERED not in call.history
    assert (await bridge.wait_status("busy"))["CallSid"] == call.sid
    assert bridge.peers.empty()


async def test_stream_url_with_a_query_is_refused(env: tuple[TwilioSimulator, Bridge]) -> None:
    sim, bridge = env
    bridge.twiml = lambda: (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        f'<Stream url="{bridge.ws_url}?token=1"/></Connect></Response>'
    )
    call = await sim.place_inbound_call(CALLER, NUMBER)
    await call.wait_for(CallState.ENDED)
    assert [e.code for e in call.protocol_errors] == ["31920"]
    assert bridge.peers.empty()


async def test_lost_frames_leave_gaps_in_timestamps_only(
    env: tuple[TwilioSimulator, Bridge],
) -> None:
    _, peer = await answered_call(env, impairments=Impairments(loss=0.3, seed=5))
    media = [await peer.next("media") for _ in range(30)]
    chunks = [int(m["media"]["chunk"]) for m in media]
    stamps = [int(m["media"]["timestamp"]) for m in media]
    assert chunks == list(range(1, 31))
    assert stamps[-1] > 29 * 20  # some frames never left
    with pytest.raises(ValueError, match="TCP"):
        TwilioCall(env[0]._require_account(), direction="inbound", from_=CALLER, to=NUMBER,
                   source=ToneSource(440), impairments=Impairments(reorder=0.1))  # fmt: skip


async def test_scheduled_disconnect_drops_the_socket(env: tuple[TwilioSimulator, Bridge]) -> None:
    call, peer = await answered_call(env, impairments=Impairments(disconnect_after_ms=200))
    async with asyncio.timeout(5):
        await peer.closed.wait()
    assert not any(m["event"] == "stop" for m in peer.log)
    await call.wait_for(CallState.ENDED)


# --- REST ----------------------------------------------------------------------------------------


async def rest(
    sim: TwilioSimulator, method: str, tail: str, data: Any = None, password: str | None = None
) -> tuple[int, Any]:
    url = f"{sim.base_url}/2010-04-01/Accounts/{sim.account_sid}/{tail}"
    headers = {
        "Authorization": aiohttp.encode_basic_auth(sim.account_sid, password or sim.auth_token)
    }
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, data=data, headers=headers) as response,
    ):
        return response.status, await response.json()


async def test_rest_refuses_bad_credentials(env: tuple[TwilioSimulator, Bridge]) -> None:
    sim, _ = env
    status, body = await rest(sim, "GET", "IncomingPhoneNumbers.json", password="wrong")
    assert status == 401
    assert body["code"] == 20003
    assert set(body) == {"code", "message", "more_info", "status"}
    assert sim.requests[-1].auth == ("basic", sim.account_sid, "wrong")
    assert sim.requests[-1].status == 401


async def test_rest_dial_answer_stream_and_hang_up(env: tuple[TwilioSimulator, Bridge]) -> None:
    sim, bridge = env
    sim.set_callee("+15559990000", Callee(ring_ms=30, source=lambda: ToneSource(600)))
    form = [("To", "+15559990000"), ("From", NUMBER), ("Url", f"{bridge.base_url}/voice"),
            ("StatusCallback", f"{bridge.base_url}/status")]  # fmt: skip
    form += [("StatusCallbackEvent", event) for event in ALL_EVENTS]
    status, body = await rest(sim, "POST", "Calls.json", data=form)
    assert status == 201
    assert body["status"] == "queued"
    assert re.fullmatch(r"CA[0-9a-f]{32}", body["sid"])
    peer = await bridge.next_peer()
    media = await peer.next("media")
    assert tone_level_db(decode(PCMU_8K, pybase64.b64decode(media["media"]["payload"])), 600) > -15
    _, fields, signed = bridge.voice[0]
    assert signed
    assert (fields["Direction"], fields["CallStatus"]) == ("outbound-api", "in-progress")
    status, body = await rest(
        sim, "POST", f"Calls/{body['sid']}.json", data={"Status": "completed"}
    )
    assert (status, body["status"]) == (200, "completed")
    await peer.next("stop")
    await bridge.wait_status("completed")
    assert [s["CallStatus"] for s in bridge.status] == [
        "initiated",
        "ringing",
        "in-progress",
        "completed",
    ]
    status, body = await rest(
        sim, "POST", f"Calls/{body['sid']}.json", data={"Status": "completed"}
    )
    assert (status, body["code"]) == (404, 20404)


async def test_rest_dial_to_a_busy_number(env: tuple[TwilioSimulator, Bridge]) -> None:
    sim, bridge = env
    sim.set_callee("+15559990001", Callee("busy", ring_ms=10))
    form = {"To": "+15559990001", "From": NUMBER, "Twiml": "<Response><Hangup/></Response>",
            "StatusCallback": f"{bridge.base_url}/status"}  # fmt: skip
    status, body = await rest(sim, "POST", "Calls.json", data=form)
    assert status == 201
    assert (await bridge.wait_status("busy"))["SipResponseCode"] == "486"
    assert sim.calls[body["sid"]].state is CallState.ENDED


async def test_rest_dial_is_validated(env: tuple[TwilioSimulator, Bridge]) -> None:
    sim, bridge = env
    url = f"{bridge.base_url}/voice"
    cases = [
        ({"From": NUMBER, "Url": url}, 21201),
        ({"To": "+1555", "From": "+19999999999", "Url": url}, 21210),
        ({"To": "+1555", "From": NUMBER}, 21205),
        ({"To": "+1555", "From": NUMBER, "Url": url, "StatusCallbackEvent": "bogus"}, 21626),
    ]
    for form, code in cases:
        status, body = await rest(sim, "POST", "Calls.json", data=form)
        assert (status, body["code"]) == (400, code)
    assert not sim.calls


async def test_rest_numbers_lookup_and_update(env: tuple[TwilioSimulator, Bridge]) -> None:
    sim, _ = env
    status, body = await rest(sim, "GET", "IncomingPhoneNumbers.json?PhoneNumber=%2B15550001111")
    assert status == 200
    (number,) = body["incoming_phone_numbers"]
    assert re.fullmatch(r"PN[0-9a-f]{32}", number["sid"])
    status, body = await rest(sim, "GET", "IncomingPhoneNumbers.json?PhoneNumber=%2B15550009999")
    assert (status, body["incoming_phone_numbers"]) == (200, [])
    update = {
        "VoiceUrl": "https://example.test/voice",
        "VoiceMethod": "POST",
        "StatusCallback": "https://example.test/status",
        "StatusCallbackMethod": "POST",
    }
    status, body = await rest(
        sim, "POST", f"IncomingPhoneNumbers/{number['sid']}.json", data=update
    )
    assert (status, body["voice_url"]) == (200, "https://example.test/voice")
    assert sim.numbers[NUMBER].status_callback == "https://example.test/status"
    recorded = sim.requests[-1]
    assert (recorded.method, recorded.form["VoiceUrl"]) == ("POST", ["https://example.test/voice"])
    status, body = await rest(sim, "POST", "IncomingPhoneNumbers/PN404.json", data=update)
    assert (status, body["code"]) == (404, 20404)


async def test_voice_webhook_by_get_is_signed_over_the_query(
    env: tuple[TwilioSimulator, Bridge],
) -> None:
    sim, bridge = env
    sim.numbers[NUMBER].voice_method = "GET"
    call, _ = await answered_call(env)
    method, fields, signed = bridge.voice[0]
    assert (method, signed) == ("GET", True)
    assert fields["CallSid"] == call.sid


# --- numbers routed to an application or a trunk ------------------------------------------------


async def test_number_with_an_application_never_fetches_its_voice_url(
    env: tuple[TwilioSimulator, Bridge],
) -> None:
    sim, bridge = env
    app_sid = sim.add_application()
    sim.numbers[NUMBER].voice_application_sid = app_sid
    call = await sim.place_inbound_call(CALLER, NUMBER)
    await call.wait_for(CallState.ENDED)
    assert (call.routed_to, call.status) == (f"application:{app_sid}", "failed")
    # Nothing reached the number's VoiceUrl or StatusCallback.
    assert (bridge.voice, bridge.status, call.events) == ([], [], [])


async def test_number_with_an_application_calls_the_applications_url(
    env: tuple[TwilioSimulator, Bridge],
) -> None:
    sim, bridge = env
    app_sid = sim.add_application(voice_url=f"{bridge.base_url}/voice?app=1")
    sim.numbers[NUMBER].voice_application_sid = app_sid
    call, _ = await answered_call(env)
    assert call.events[0].url.endswith("/voice?app=1")
    assert bridge.voice[0][2]  # signed


async def test_number_with_a_trunk_goes_to_the_trunk(env: tuple[TwilioSimulator, Bridge]) -> None:
    sim, bridge = env
    sim.numbers[NUMBER].trunk_sid = "TK" + "0" * 32
    call = await sim.place_inbound_call(CALLER, NUMBER)
    await call.wait_for(CallState.ENDED)
    assert call.routed_to == "trunk:TK" + "0" * 32
    assert (bridge.voice, bridge.status) == ([], [])


async def test_rest_number_shows_and_sets_application_and_trunk(
    env: tuple[TwilioSimulator, Bridge],
) -> None:
    sim, bridge = env
    app_sid = sim.add_application(voice_url=f"{bridge.base_url}/voice")
    sid = sim.numbers[NUMBER].sid
    status, body = await rest(sim, "GET", f"IncomingPhoneNumbers/{sid}.json")
    assert (status, body["voice_application_sid"], body["trunk_sid"]) == (200, None, None)
    path = f"IncomingPhoneNumbers/{sid}.json"
    _, body = await rest(sim, "POST", path, data={"VoiceApplicationSid": app_sid})
    assert (body["voice_application_sid"], body["trunk_sid"]) == (app_sid, None)
    # Setting a trunk deletes the application and vice versa (twilio SDK docstrings).
    _, body = await rest(sim, "POST", path, data={"TrunkSid": "TK" + "1" * 32})
    assert (body["voice_application_sid"], body["trunk_sid"]) == (None, "TK" + "1" * 32)
    _, body = await rest(sim, "POST", path, data={"VoiceApplicationSid": app_sid})
    assert (body["voice_application_sid"], body["trunk_sid"]) == (app_sid, None)
    _, body = await rest(sim, "POST", path, data={"VoiceApplicationSid": ""})
    assert body["voice_application_sid"] is None
    _, body = await rest(sim, "POST", path, data={"TrunkSid": "TK" + "1" * 32})
    _, body = await rest(sim, "POST", path, data={"TrunkSid": ""})
    assert body["trunk_sid"] is None
    call, _ = await answered_call(env)
    assert call.routed_to == "voice_url"


def test_add_number_refuses_both_application_and_trunk() -> None:
    sim = TwilioSimulator()
    with pytest.raises(ValueError, match="only one"):
        sim.add_number(NUMBER, voice_application_sid="AP" + "0" * 32, trunk_sid="TK" + "0" * 32)


# --- status callbacks out of order --------------------------------------------------------------


async def hung_up_call(env: tuple[TwilioSimulator, Bridge], **kwargs: Any) -> list[dict[str, str]]:
    _, bridge = env
    call, _ = await answered_call(env, **kwargs)
    await call.hang_up()
    await bridge.wait_status("completed", count=4)
    return bridge.status


async def test_status_callbacks_in_order_by_default(env: tuple[TwilioSimulator, Bridge]) -> None:
    status = await hung_up_call(env)
    assert [s["CallStatus"] for s in status] == ["initiated", "ringing", "in-progress", "completed"]
    assert [s["SequenceNumber"] for s in status] == ["0", "1", "2", "3"]


async def test_status_callbacks_reversed(env: tuple[TwilioSimulator, Bridge]) -> None:
    status = await hung_up_call(env, callback_order="reversed")
    # The setup callbacks arrive together once answered, newest first: a late "ringing".
    assert [s["CallStatus"] for s in status] == ["in-progress", "ringing", "initiated", "completed"]
    assert [s["SequenceNumber"] for s in status] == ["2", "1", "0", "3"]
    assert all(s["Timestamp"].endswith("+0000") for s in status)


async def test_status_callbacks_shuffled(env: tuple[TwilioSimulator, Bridge]) -> None:
    sim, _ = env
    sim.callback_order, sim.callback_seed = "shuffled", 3
    status = await hung_up_call(env)
    numbers = [s["SequenceNumber"] for s in status]
    assert sorted(numbers) == ["0", "1", "2", "3"]
    assert numbers[:3] != ["0", "1", "2"]  # seed 3 gives a real shuffle
    assert {s["CallStatus"] for s in status} == {"initiated", "ringing", "in-progress", "completed"}


# --- key presses ---------------------------------------------------------------------------------


async def test_dtmf_message_and_tones_for_one_press(env: tuple[TwilioSimulator, Bridge]) -> None:
    call, peer = await answered_call(env)
    await call.send_dtmf("5", tones_ms=200)
    message = await peer.next("dtmf")
    assert message["dtmf"] == {"track": "inbound_track", "digit": "5"}
    assert message["streamSid"] == peer.stream_sid
    audio = np.concatenate([
        decode(PCMU_8K, pybase64.b64decode((await peer.next("media"))["media"]["payload"]))
        for _ in range(10)
    ])  # fmt: skip
    # Key 5 is 770 Hz + 1336 Hz (ITU-T Q.23), each at -10 dBFS.
    assert tone_level_db(audio, 770) == pytest.approx(-10, abs=1.5)
    assert tone_level_db(audio, 1336) == pytest.approx(-10, abs=1.5)


async def test_dtmf_tones_without_a_message(env: tuple[TwilioSimulator, Bridge]) -> None:
    call, peer = await answered_call(env)
    await call.send_dtmf("1", message=False, tones_ms=100)
    audio = np.concatenate([
        decode(PCMU_8K, pybase64.b64decode((await peer.next("media"))["media"]["payload"]))
        for _ in range(5)
    ])  # fmt: skip
    assert tone_level_db(audio, 697) > -13
    await call.hang_up()
    await peer.closed.wait()
    assert not [m for m in peer.log if m["event"] == "dtmf"]


# --- junk on a live stream ----------------------------------------------------------------------


async def test_junk_frames_between_media(env: tuple[TwilioSimulator, Bridge]) -> None:
    call, peer = await answered_call(env, source=ToneSource(440))
    await peer.next("media")
    sent = await call.inject_junk(kinds=(*JUNK_KINDS, "binary"))
    assert sent == call.junk_frames_sent == 6
    await peer.next("error")
    await peer.next("media")  # media keeps flowing after the junk
    await call.hang_up()
    await peer.closed.wait()
    kinds = {m["event"] for m in peer.log}
    assert {"x-future-event", "error", "mark"} <= kinds
    bad_media = [m for m in peer.log if m["event"] == "media" and "%" in m["media"]["payload"]]
    assert len(bad_media) == 1
    assert peer.junk_text and peer.binary == 1
    nameless = next(m for m in peer.log if m["event"] == "mark")
    assert nameless["mark"] == {} and nameless["streamSid"] == peer.stream_sid
    error = next(m for m in peer.log if m["event"] == "error")
    assert "x_extra" in error and "x_extra" in error["error"]


async def test_junk_flood_keeps_media_flowing(env: tuple[TwilioSimulator, Bridge]) -> None:
    call, peer = await answered_call(env)
    await peer.next("media")
    started = time.monotonic()
    await call.inject_junk(kinds=("unknown_event",), count=100, within_s=0.5)
    elapsed = time.monotonic() - started
    await peer.next("media")
    await call.hang_up()
    await peer.closed.wait()
    assert 0.45 < elapsed < 1.0
    junk = [m for m in peer.log if m["event"] == "x-future-event"]
    assert len(junk) == 100
    first = peer.log.index(junk[0])
    last = peer.log.index(junk[-1])
    # About 25 media frames went out while the 0.5 s flood lasted.
    assert sum(m["event"] == "media" for m in peer.log[first:last]) >= 15
    # Counters stay one per frame across junk and media.
    numbers = [int(m["sequenceNumber"]) for m in peer.log[1:] if m["event"] != "stop"]
    assert numbers == list(range(1, len(numbers) + 1))


async def test_junk_needs_a_live_stream(env: tuple[TwilioSimulator, Bridge]) -> None:
    call, _ = await answered_call(env)
    with pytest.raises(ValueError, match="junk kinds"):
        await call.inject_junk(kinds=("nonsense",))
    await call.hang_up()
    with pytest.raises(RuntimeError, match="none is open"):
        await call.inject_junk()


async def test_refused_rest_requests_are_recorded(env: tuple[TwilioSimulator, Bridge]) -> None:
    sim, _ = env
    status, _ = await rest(sim, "POST", "Calls.json", data={"From": NUMBER})
    assert status == 400
    (error,) = sim.protocol_errors
    assert (error.code, error.frame) == ("21201", f"POST /2010-04-01/Accounts/{sim.account_sid}"
                                                  "/Calls.json")  # fmt: skip
    await rest(sim, "GET", "IncomingPhoneNumbers/PN404.json")  # a 404 is an answer, not a refusal
    assert len(sim.protocol_errors) == 1
