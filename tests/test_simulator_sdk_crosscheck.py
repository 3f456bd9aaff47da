"""The simulators checked against code nobody here wrote: the official twilio and telnyx SDKs.

- Every request the Twilio simulator signs (voice webhook, status callbacks, ``<Connect action>``
  and ``<Redirect>`` fetches, the media websocket upgrade, a ``wss://`` URL included) verifies
  with ``twilio.request_validator.RequestValidator``.
- TwiML built with ``twilio.twiml.voice_response.VoiceResponse`` runs in the Twilio simulator
  verb by verb: ``<Connect action>``, ``<Pause>``, ``<Redirect>``, ``<Hangup>``, ``<Reject>``.
- Every webhook the Telnyx simulator sends verifies with the telnyx SDK's Ed25519 check
  (``telnyx.lib.webhook_verification`` and ``client.webhooks.unwrap``) and validates as the
  SDK's pydantic model for its event type, with no payload field the model does not know.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
import telnyx
from aiohttp import web
from pydantic import BaseModel
from telnyx.lib.webhook_verification import WebhookVerificationError, verify_webhook_signature
from telnyx.types.call_answered_webhook_event import CallAnsweredWebhookEvent
from telnyx.types.call_dtmf_received_webhook_event import CallDtmfReceivedWebhookEvent
from telnyx.types.call_hangup_webhook_event import CallHangupWebhookEvent
from telnyx.types.call_initiated_webhook_event import CallInitiatedWebhookEvent
from telnyx.types.call_streaming_failed_webhook_event import CallStreamingFailedWebhookEvent
from telnyx.types.call_streaming_started_webhook_event import CallStreamingStartedWebhookEvent
from telnyx.types.call_streaming_stopped_webhook_event import CallStreamingStoppedWebhookEvent
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import (
    Connect,
    VoiceResponse,
)

from adapters.simulators.common import CallState
from adapters.simulators.telnyx_rest import TelnyxSimulator
from adapters.simulators.twilio_calls import TwilioCall
from adapters.simulators.twilio_rest import TwilioSimulator
from adapters.simulators.twilio_stream import TwilioStream

NUMBER = "+15550001111"
CALLER = "+15557654321"
ALL_EVENTS = ("initiated", "ringing", "answered", "completed")


# --- Twilio --------------------------------------------------------------------------------------


@dataclass
class Hit:
    """One request the Twilio simulator made, and whether the SDK accepts its signature."""

    path: str
    method: str
    fields: dict[str, str]
    valid: bool


@dataclass
class TwilioApp:
    """callbridge's part, answering from ``documents`` (path -> TwiML) and checking signatures."""

    validator: RequestValidator
    base_url: str = ""
    documents: dict[str, str] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    upgrades: list[bool] = field(default_factory=list)
    sockets: asyncio.Queue[web.WebSocketResponse] = field(default_factory=asyncio.Queue)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/media"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/media", self._media)
        app.router.add_route("*", "/{name}", self._hook)
        return app

    async def _hook(self, request: web.Request) -> web.Response:
        form = await request.post()
        fields = {key: str(value) for key, value in form.items()}
        url = f"{self.base_url}{request.path_qs}"
        signature = request.headers.get("X-Twilio-Signature", "")
        params = fields if request.method == "POST" else {}
        self.hits.append(Hit(request.path, request.method, fields or dict(request.query),
                             self.validator.validate(url, params, signature)))  # fmt: skip
        self.changed.set()
        document = self.documents.get(request.path)
        if document is None:
            return web.Response(status=404 if request.path != "/status" else 204)
        return web.Response(text=document, content_type="text/xml")

    async def _media(self, request: web.Request) -> web.WebSocketResponse:
        signature = request.headers.get("X-Twilio-Signature", "")
        self.upgrades.append(self.validator.validate(self.ws_url, {}, signature))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.put_nowait(ws)
        async for _ in ws:
            pass
        return ws

    async def wait_hits(self, path: str, count: int = 1) -> list[Hit]:
        async with asyncio.timeout(5):
            while len(found := [hit for hit in self.hits if hit.path == path]) < count:
                self.changed.clear()
                await self.changed.wait()
        return found


TwilioEnv = tuple[TwilioSimulator, TwilioApp]


@pytest.fixture
async def twilio_env(aiohttp_server: Any) -> AsyncIterator[TwilioEnv]:
    async with TwilioSimulator() as sim:
        app = TwilioApp(RequestValidator(sim.auth_token))
        server = await aiohttp_server(app.app())
        app.base_url = str(server.make_url("")).rstrip("/")
        sim.add_number(NUMBER, voice_url=f"{app.base_url}/voice",
                       status_callback=f"{app.base_url}/status",
                       status_callback_events=ALL_EVENTS)  # fmt: skip
        yield sim, app


def document(build: Callable[[VoiceResponse], object]) -> str:
    """A TwiML document from the SDK (its verb methods return the verb, not the response)."""
    response = VoiceResponse()
    build(response)
    return str(response)


def connect(app: TwilioApp, **attributes: str) -> Connect:
    element = Connect(**attributes)
    stream = element.stream(url=app.ws_url)
    stream.parameter(name="leg", value="token-1")
    return element


async def test_twilio_signatures_verify_with_the_sdk(twilio_env: TwilioEnv) -> None:
    sim, app = twilio_env
    app.documents["/voice"] = str(VoiceResponse().append(connect(app)))
    call = await sim.place_inbound_call(CALLER, NUMBER)
    ws = await asyncio.wait_for(app.sockets.get(), 5)
    await ws.close()  # nothing follows </Connect>: the call ends
    await call.wait_for(CallState.ENDED)
    statuses = await app.wait_hits("/status", 4)
    (voice,) = await app.wait_hits("/voice")
    assert voice.valid and voice.fields["CallSid"] == call.sid
    assert [hit.fields["CallStatus"] for hit in statuses] == [
        "initiated", "ringing", "in-progress", "completed",
    ]  # fmt: skip
    assert all(hit.valid for hit in statuses)
    assert app.upgrades == [True]
    assert call.status == "completed" and call.protocol_errors == []


async def test_twilio_get_webhook_signature_verifies_with_the_sdk(twilio_env: TwilioEnv) -> None:
    sim, app = twilio_env
    sim.numbers[NUMBER].voice_method = "GET"
    app.documents["/voice"] = document(lambda r: r.hangup())
    call = await sim.place_inbound_call(CALLER, NUMBER)
    (voice,) = await app.wait_hits("/voice")
    assert (voice.method, voice.valid, voice.fields["CallSid"]) == ("GET", True, call.sid)


async def test_twilio_wss_upgrade_signature_verifies_with_the_sdk(twilio_env: TwilioEnv) -> None:
    sim, app = twilio_env
    app.documents["/voice"] = str(VoiceResponse().append(connect(app)))
    call = await sim.place_inbound_call(CALLER, NUMBER)
    await call.wait_for(CallState.STREAMING)
    url = "wss://callbridge.example.com/media/twilio"
    stream = TwilioStream(call, url, "MZ" + "0" * 32, {})
    validator = RequestValidator(sim.auth_token)
    assert validator.validate(url, {}, stream.headers["X-Twilio-Signature"])
    assert not RequestValidator("another-token").validate(
        url, {}, stream.headers["X-Twilio-Signature"]
    )


async def test_twiml_connect_action_pause_redirect_hangup(twilio_env: TwilioEnv) -> None:
    sim, app = twilio_env
    app.documents["/voice"] = str(VoiceResponse().append(connect(app, action="/after")))
    after = VoiceResponse()
    after.pause(length=1)
    after.redirect("/next", method="GET")
    app.documents["/after"] = str(after)
    app.documents["/next"] = document(lambda r: r.hangup())
    call = await sim.place_inbound_call(CALLER, NUMBER)
    ws = await asyncio.wait_for(app.sockets.get(), 5)
    await ws.close()
    (action,) = await app.wait_hits("/after")
    action_at = time.monotonic()
    (redirect,) = await app.wait_hits("/next")
    paused = time.monotonic() - action_at
    await call.wait_for(CallState.ENDED)
    assert (action.method, action.valid, action.fields["CallSid"]) == ("POST", True, call.sid)
    assert action.fields["CallStatus"] == "in-progress"
    assert (redirect.method, redirect.valid) == ("GET", True)
    assert 0.9 < paused < 2.0
    assert (call.status, call.protocol_errors) == ("completed", [])
    fetches = [
        record.kind for record in call.events if record.kind in ("voice", "action", "redirect")
    ]
    assert fetches == ["voice", "action", "redirect"]


async def test_twiml_pause_first_delays_the_answer(twilio_env: TwilioEnv) -> None:
    sim, app = twilio_env
    document = VoiceResponse()
    document.pause(length=1)
    document.hangup()
    app.documents["/voice"] = str(document)
    call = await sim.place_inbound_call(CALLER, NUMBER)
    await app.wait_hits("/voice")
    fetched = time.monotonic()
    await call.wait_for(CallState.ANSWERED)
    assert time.monotonic() - fetched > 0.9
    await call.wait_for(CallState.ENDED)
    assert call.status == "completed"


async def test_twiml_reject_busy_is_never_answered(twilio_env: TwilioEnv) -> None:
    sim, app = twilio_env
    app.documents["/voice"] = document(lambda r: r.reject(reason="busy"))
    call = await sim.place_inbound_call(CALLER, NUMBER)
    await call.wait_for(CallState.ENDED)
    assert call.status == "busy" and CallState.ANSWERED not in call.history


async def test_failed_redirect_ends_the_call_with_an_application_error(
    twilio_env: TwilioEnv,
) -> None:
    sim, app = twilio_env
    app.documents["/voice"] = document(lambda r: r.redirect("/missing"))
    call = await sim.place_inbound_call(CALLER, NUMBER)
    await call.wait_for(CallState.ENDED)
    assert call.status == "failed"
    assert [error.code for error in call.protocol_errors] == ["11200"]


@pytest.mark.parametrize(
    ("document", "code"),
    [
        (document(lambda r: r.say("hello")), "sim-unsupported"),
        ("<Response><Bogus/></Response>", "12200"),
        ('<Response><Hangup/><Pause length="soon"/></Response>', "12200"),
        ('<Response><Connect><Stream url="wss://x.test/m" colour="red"/></Connect></Response>',
         "12200"),
        ("<Response><Hangup></Response>", "12100"),
        ("<Reply><Hangup/></Reply>", "12100"),
    ],
)  # fmt: skip
async def test_twiml_the_simulator_cannot_run_is_a_protocol_error(
    twilio_env: TwilioEnv, document: str, code: str
) -> None:
    sim, app = twilio_env
    app.documents["/voice"] = document
    call: TwilioCall = await sim.place_inbound_call(CALLER, NUMBER)
    await call.wait_for(CallState.ENDED)
    assert [error.code for error in call.protocol_errors] == [code]
    assert call.status == "failed"


# --- Telnyx --------------------------------------------------------------------------------------

MODELS: dict[str, type[BaseModel]] = {
    "call.initiated": CallInitiatedWebhookEvent,
    "call.answered": CallAnsweredWebhookEvent,
    "call.dtmf.received": CallDtmfReceivedWebhookEvent,
    "call.hangup": CallHangupWebhookEvent,
    "streaming.started": CallStreamingStartedWebhookEvent,
    "streaming.stopped": CallStreamingStoppedWebhookEvent,
    "streaming.failed": CallStreamingFailedWebhookEvent,
}


@dataclass
class Delivery:
    body: bytes
    headers: dict[str, str]


@dataclass
class TelnyxApp:
    base_url: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/telnyx", self._webhook)
        app.router.add_get("/media", self._media)
        return app

    async def _webhook(self, request: web.Request) -> web.Response:
        self.deliveries.append(Delivery(await request.read(), dict(request.headers)))
        self.changed.set()
        return web.Response()

    async def _media(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:
            pass
        return ws

    def types(self) -> list[str]:
        return [orjson.loads(d.body)["data"]["event_type"] for d in self.deliveries]

    async def wait_for(self, event_type: str) -> None:
        async with asyncio.timeout(5):
            while event_type not in self.types():
                self.changed.clear()
                await self.changed.wait()


TelnyxEnv = tuple[TelnyxSimulator, TelnyxApp]


@pytest.fixture
async def telnyx_env(aiohttp_server: Any) -> AsyncIterator[TelnyxEnv]:
    async with TelnyxSimulator() as sim:
        app = TelnyxApp()
        server = await aiohttp_server(app.app())
        app.base_url = str(server.make_url("")).rstrip("/")
        sim.add_number("+15550002222", sim.add_connection(f"{app.base_url}/telnyx"))
        yield sim, app


async def command(sim: TelnyxSimulator, call_id: str, action: str, body: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {sim.api_key}"}
    url = f"{sim.base_url}/v2/calls/{call_id}/actions/{action}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, headers=headers) as response,
    ):
        assert response.status == 200, await response.text()


def check_with_the_sdk(sim: TelnyxSimulator, delivery: Delivery) -> BaseModel:
    verify_webhook_signature(delivery.body, delivery.headers, sim.public_key)
    client = telnyx.Telnyx(api_key="KEY-unused", public_key=sim.public_key)
    unwrapped = client.webhooks.unwrap(delivery.body.decode(), headers=delivery.headers)
    body = orjson.loads(delivery.body)
    assert unwrapped.data is not None  # type: ignore[union-attr]
    model = MODELS[body["data"]["event_type"]]
    # Strict: pydantic validates every field against the SDK's types and Literal enums.
    event = model.model_validate(body)
    data = event.data  # type: ignore[attr-defined]
    payload_model = type(data.payload)
    known = {info.alias or name for name, info in payload_model.model_fields.items()}
    unknown = set(body["data"]["payload"]) - known
    assert unknown == set(), f"{body['data']['event_type']}: fields the SDK does not know"
    assert data.event_type == body["data"]["event_type"]
    return event


async def test_telnyx_webhooks_verify_and_parse_with_the_sdk(telnyx_env: TelnyxEnv) -> None:
    sim, app = telnyx_env
    call = await sim.place_inbound_call(CALLER, "+15550002222")
    await app.wait_for("call.initiated")
    ws_url = app.base_url.replace("http://", "ws://") + "/media"
    await command(sim, call.id, "answer", {"stream_url": ws_url,
                                           "stream_bidirectional_mode": "rtp",
                                           "stream_bidirectional_target_legs": "self"})  # fmt: skip
    await app.wait_for("streaming.started")
    await call.send_dtmf("7")
    await app.wait_for("call.dtmf.received")
    await call.hang_up()
    await app.wait_for("call.hangup")
    assert app.types() == [
        "call.initiated", "call.answered", "streaming.started", "call.dtmf.received",
        "streaming.stopped", "call.hangup",
    ]  # fmt: skip
    events = [check_with_the_sdk(sim, delivery) for delivery in app.deliveries]
    hangup = events[-1].data.payload  # type: ignore[attr-defined]
    assert (hangup.hangup_cause, hangup.hangup_source) == ("normal_clearing", "caller")
    assert events[0].data.payload.direction == "incoming"  # type: ignore[attr-defined]


async def test_telnyx_streaming_failed_parses_with_the_sdk(telnyx_env: TelnyxEnv) -> None:
    sim, app = telnyx_env
    call = await sim.place_inbound_call(CALLER, "+15550002222", stream_fault="fail")
    await app.wait_for("call.initiated")
    await command(sim, call.id, "answer", {"stream_url": "wss://nowhere.test/media"})
    await app.wait_for("streaming.failed")
    failed = check_with_the_sdk(sim, app.deliveries[-1]).data.payload  # type: ignore[attr-defined]
    assert failed.stream_type == "websocket"
    assert failed.stream_params.stream_url == "wss://nowhere.test/media"
    assert failed.stream_params.track == "inbound_track"
    assert failed.failure_reason and failed.stream_id


async def test_a_forged_telnyx_webhook_fails_the_sdk_check(telnyx_env: TelnyxEnv) -> None:
    sim, _ = telnyx_env
    call = await sim.place_inbound_call(CALLER, "+15550002222")
    await call.wait_until(lambda c: bool(c.events))
    forged = await call.replay_webhook(call.events[0], age_s=0, corrupt_signature=True)
    with pytest.raises(WebhookVerificationError):
        verify_webhook_signature(forged.body, forged.headers, sim.public_key)
    stale = await call.replay_webhook(call.events[0], age_s=600)
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify_webhook_signature(stale.body, stale.headers, sim.public_key)
