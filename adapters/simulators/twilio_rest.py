"""A Twilio account on 127.0.0.1: the REST subset callbridge calls, and the calls it places.

Start it, configure numbers, point callbridge's Twilio ``api_base_url`` at ``sim.base_url``::

    async with TwilioSimulator() as sim:
        sim.add_number("+15550001111", voice_url=f"{callbridge}/webhooks/twilio/voice")
        call = await sim.place_inbound_call("+15557654321", "+15550001111",
                                            source=ToneSource(440))
        await call.wait_for(CallState.STREAMING)

REST (HTTP Basic ``AccountSid:AuthToken``; else 401 with Twilio's JSON error, code 20003):

- ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json``: dial (``To``, ``From``, ``Url`` or
  ``Twiml``, ``Method``, ``StatusCallback``, ``StatusCallbackMethod``, ``StatusCallbackEvent``,
  ``Timeout``); 201 with the call, ``status: queued``; the callee then behaves as
  ``set_callee`` says (``Callee``, default: answers after 50 ms, silent);
- ``GET|POST .../Calls/{CallSid}.json``: read; ``Status=completed|canceled`` or
  ``Twiml=<Response><Hangup/></Response>`` hangs up (404, code 20404, once the call has ended);
  other ``Twiml`` replaces what an answered call runs (its stream gets ``stop`` and closes);
- ``GET .../IncomingPhoneNumbers.json?PhoneNumber=``,
  ``GET|POST .../IncomingPhoneNumbers/{sid}.json`` (``VoiceUrl``, ``VoiceMethod``,
  ``VoiceFallbackUrl``, ``VoiceFallbackMethod`` (fetched, with ``ErrorCode`` and ``ErrorUrl``,
  when the voice URL gives no TwiML), ``StatusCallback``, ``StatusCallbackMethod``,
  ``VoiceApplicationSid``, ``TrunkSid``: an empty value clears one, setting one clears the
  other). A number with an application or a trunk
  sends its calls there, never to its ``VoiceUrl`` (``add_application``, ``call.routed_to``).

``callback_order`` delivers each call's status callbacks reversed or shuffled (see
``TwilioCall``). Requests refused as invalid (400) are also kept in ``protocol_errors``.

Every request is kept in ``requests`` (``RecordedRequest``) whatever its outcome. ``faults``
(``rest_faults.RestFaults``) makes operations (``dial``, ``status``, ``hangup``, ``update``)
answer 503/429 or hang, in Twilio's error shape (20503 "Service unavailable", 20429 "Too Many
Requests": twilio.com/docs/api/errors).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final

import aiohttp
import orjson
from aiohttp import web

from adapters.simulators.audio import AudioSource, SilenceSource
from adapters.simulators.common import (
    Callee,
    LocalServer,
    Observatory,
    record_request,
)
from adapters.simulators.pacing import NO_IMPAIRMENTS, Impairments
from adapters.simulators.rest_faults import Fault, RestFaults
from adapters.simulators.twilio_calls import (
    CallbackOrder,
    TwilioAccount,
    TwilioApplication,
    TwilioCall,
    TwilioNumber,
    new_sid,
    rfc2822,
)
from adapters.simulators.twilio_wire_rest import _error, _field, _http_url, _not_found, _operation
from adapters.simulators.twiml import Hangup, TwimlError
from adapters.simulators.twiml import parse as parse_twiml

__all__ = ["TwilioSimulator"]

STATUS_EVENTS: Final = ("initiated", "ringing", "answered", "completed")
MAX_TIMEOUT_S: Final = 600
_PREFIX: Final = "/2010-04-01/Accounts/{account}"
_NUMBER_FIELDS: Final = (
    "VoiceUrl",
    "VoiceMethod",
    "VoiceFallbackUrl",
    "VoiceFallbackMethod",
    "StatusCallback",
    "StatusCallbackMethod",
    "VoiceApplicationSid",
    "TrunkSid",
)


class TwilioSimulator(Observatory[TwilioCall]):
    """One simulated Twilio account (REST server + call side)."""

    def __init__(
        self,
        *,
        account_sid: str | None = None,
        auth_token: str | None = None,
        webhook_timeout_s: float = 15.0,
        default_callee: Callee | None = None,
        allow_any_from: bool = False,
        callback_order: CallbackOrder = "in-order",
        callback_seed: int = 0,
    ) -> None:
        super().__init__()
        self.account_sid = account_sid or new_sid("AC")
        self.auth_token = auth_token or secrets.token_hex(16)
        self.webhook_timeout_s = webhook_timeout_s
        self.default_callee = default_callee or Callee()
        # Twilio only dials from the account's numbers or verified caller ids (error 21210).
        self.allow_any_from = allow_any_from
        self.verified_caller_ids: set[str] = set()
        self.numbers: dict[str, TwilioNumber] = {}
        self.applications: dict[str, TwilioApplication] = {}
        # The order every call's status callbacks are delivered in (see TwilioCall).
        self.callback_order: CallbackOrder = callback_order
        self.callback_seed = callback_seed
        self.callees: dict[str, Callee] = {}
        self.base_url = ""
        self._server: LocalServer | None = None
        self._session: aiohttp.ClientSession | None = None
        self._account: TwilioAccount | None = None
        self.faults = RestFaults()

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> TwilioSimulator:
        self._session = aiohttp.ClientSession()
        self._account = TwilioAccount(
            self.account_sid, self.auth_token, self._session, self.webhook_timeout_s,
            self.applications,
        )  # fmt: skip
        self._server = LocalServer(self._app())
        self.base_url = await self._server.start()
        return self

    async def close(self) -> None:
        self.faults.release()
        for call in list(self.calls.values()):
            if call.stream is not None:
                await call.stream.abort()
            await call.close()
        if self._server is not None:
            await self._server.close()
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> TwilioSimulator:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- configuration ---------------------------------------------------------------------------

    def add_number(
        self,
        phone_number: str,
        *,
        voice_url: str | None = None,
        voice_method: str = "POST",
        status_callback: str | None = None,
        status_callback_method: str = "POST",
        status_callback_events: tuple[str, ...] = ("completed",),
        voice_application_sid: str | None = None,
        trunk_sid: str | None = None,
    ) -> TwilioNumber:
        """A number on the account. With ``voice_application_sid`` or ``trunk_sid`` its calls go
        to that application or trunk, not to ``voice_url`` (Twilio allows one of the two)."""
        if voice_application_sid is not None and trunk_sid is not None:
            raise ValueError("Twilio keeps only one of voice_application_sid and trunk_sid")
        number = TwilioNumber(
            new_sid("PN"), phone_number, voice_url, voice_method, status_callback,
            status_callback_method, status_callback_events,
            voice_application_sid=voice_application_sid, trunk_sid=trunk_sid,
        )  # fmt: skip
        self.numbers[phone_number] = number
        self.verified_caller_ids.add(phone_number)
        return number

    def add_application(
        self,
        *,
        voice_url: str | None = None,
        voice_method: str = "POST",
        status_callback: str | None = None,
    ) -> str:
        """A TwiML App; its ``AP...`` sid. Calls to numbers naming it fetch ``voice_url``
        (none: the call fails without any webhook)."""
        application = TwilioApplication(new_sid("AP"), voice_url, voice_method, status_callback)
        self.applications[application.sid] = application
        return application.sid

    def set_callee(self, phone_number: str, callee: Callee) -> None:
        """How ``phone_number`` answers when callbridge dials it."""
        self.callees[phone_number] = callee

    # --- calls -----------------------------------------------------------------------------------

    async def place_inbound_call(
        self,
        from_: str,
        to: str,
        *,
        source: AudioSource | None = None,
        impairments: Impairments = NO_IMPAIRMENTS,
        extra_params: dict[str, str] | None = None,
        callback_order: CallbackOrder | None = None,
    ) -> TwilioCall:
        """Someone dials ``to`` (a number on this account with a ``voice_url``, an application
        or a trunk). Returns at once; the webhook, TwiML and stream follow in the background.
        ``call.routed_to`` says where the call went. ``callback_order`` overrides the
        simulator's for this call."""
        number = self.numbers.get(to)
        routed = number is not None and (number.voice_application_sid or number.trunk_sid)
        if number is None or not (number.voice_url or routed):
            raise ValueError(f"{to} is not on the simulated account or has no voice_url")
        call = TwilioCall(
            self._require_account(),
            direction="inbound",
            from_=from_,
            to=to,
            source=source or SilenceSource(),
            impairments=impairments,
            number=number,
            extra_params=extra_params,
            callback_order=callback_order or self.callback_order,
            callback_seed=self.callback_seed,
        )
        self._add(call)
        call.start()
        return call

    def _add(self, call: TwilioCall) -> None:
        self._record_call(call.sid, call)

    def _require_account(self) -> TwilioAccount:
        if self._account is None:
            raise RuntimeError("start the simulator first")
        return self._account

    # --- REST ------------------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post(f"{_PREFIX}/Calls.json", self._create_call)
        app.router.add_route("*", f"{_PREFIX}/Calls/{{sid}}.json", self._call)
        app.router.add_get(f"{_PREFIX}/IncomingPhoneNumbers.json", self._list_numbers)
        app.router.add_route("*", f"{_PREFIX}/IncomingPhoneNumbers/{{sid}}.json", self._number)
        return app

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        recorded = await record_request(request)
        self.requests.append(recorded)
        auth = recorded.auth
        if auth != ("basic", self.account_sid, self.auth_token):
            response: web.StreamResponse = _error(401, 20003, "Authenticate")
            response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
        elif request.match_info.get("account") != self.account_sid:
            response = _not_found(request)
        elif (fault := self.faults.take(_operation(request, recorded.form))) is not None:
            response = await self._faulted(fault)
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                if exc.status != 404:
                    raise
                response = _not_found(request)
        recorded.status = response.status
        body = response.body if isinstance(response, web.Response) else None
        if response.status == 400 and isinstance(body, bytes):
            error = orjson.loads(body)
            self.record_refusal(recorded, str(error["code"]), str(error["message"]))
        self._changed.set()
        return response

    async def _faulted(self, fault: Fault) -> web.Response:
        if fault.hang:
            await self.faults.hold()
            # Only a client that waited this long sees it; 20500 is Twilio's generic server error.
            return _error(504, 20500, "Internal Server Error")
        if fault.status == 429:
            response = _error(429, 20429, "Too Many Requests")
        else:
            response = _error(fault.status, 20503, "Service unavailable")
        if fault.retry_after_s is not None:
            response.headers["Retry-After"] = f"{fault.retry_after_s:g}"
        return response

    def _base_path(self) -> str:
        return f"/2010-04-01/Accounts/{self.account_sid}"

    async def _create_call(self, request: web.Request) -> web.Response:
        form = await request.post()
        to, from_ = _field(form, "To") or "", _field(form, "From") or ""
        url, twiml = _field(form, "Url"), _field(form, "Twiml")
        callback = _field(form, "StatusCallback")
        if not to:
            return _error(400, 21201, "No 'To' number is specified")
        if not from_:
            return _error(400, 21213, "No 'From' number is specified")
        if not self.allow_any_from and from_ not in self.verified_caller_ids:
            return _error(400, 21210, f"The source phone number provided, {from_}, is not yet "
                          "verified for your account.")  # fmt: skip
        if (url is None) == (twiml is None):
            return _error(400, 21205, "Url parameter is required (or Twiml, not both).")
        if url is not None and not _http_url(url):
            return _error(400, 21205, f"Url is not a valid URL: {url}")
        if twiml is not None:
            try:
                parse_twiml(twiml)
            except TwimlError as exc:
                return _error(400, 12100, f"Twiml is not valid TwiML: {exc}")
        if callback is not None and not _http_url(callback):
            return _error(400, 21609, f"StatusCallback is not a valid URL: {callback}")
        # Twilio takes the events repeated, or space-separated in one field.
        events = tuple(
            part for value in form.getall("StatusCallbackEvent", []) for part in str(value).split()
        )
        if any(event not in STATUS_EVENTS for event in events):
            return _error(400, 21626, f"Invalid StatusCallbackEvent: {' '.join(events)}")
        method = (_field(form, "Method") or "POST").upper()
        callback_method = (_field(form, "StatusCallbackMethod") or "POST").upper()
        if method not in ("GET", "POST") or callback_method not in ("GET", "POST"):
            return _error(400, 21608, "Method and StatusCallbackMethod must be GET or POST")
        timeout = _field(form, "Timeout") or "60"
        if not timeout.isdigit() or int(timeout) < 1:
            return _error(400, 21621, f"Timeout must be a positive integer, not {timeout!r}")
        callee = self.callees.get(to, self.default_callee)
        call = TwilioCall(
            self._require_account(),
            direction="outbound",
            from_=from_,
            to=to,
            source=SilenceSource(),
            impairments=callee.impairments,
            url=url,
            method=method,
            twiml=twiml,
            status_callback=callback,
            status_callback_method=callback_method,
            status_callback_events=events or ("completed",),
            timeout_s=min(int(timeout), MAX_TIMEOUT_S),
            callee=callee,
            callback_order=self.callback_order,
            callback_seed=self.callback_seed,
        )
        self._add(call)
        body = call.to_json(self._base_path())
        call.start()
        return web.json_response(body, status=201)

    async def _call(self, request: web.Request) -> web.Response:
        call = self.calls.get(request.match_info["sid"])
        if call is None or request.method not in ("GET", "POST"):
            raise web.HTTPNotFound()
        if request.method == "GET":
            return web.json_response(call.to_json(self._base_path()))
        if call.end_reason is not None:
            raise web.HTTPNotFound()
        form = await request.post()
        status, twiml = _field(form, "Status"), _field(form, "Twiml")
        if twiml is not None:
            try:
                verbs = parse_twiml(twiml)
            except TwimlError as exc:
                return _error(400, 12100, f"Twiml is not valid TwiML: {exc}")
            if verbs and not isinstance(verbs[0], Hangup):
                if call.status != "in-progress":
                    # Twilio can also redirect a ringing call; the simulator does not model it.
                    return _error(400, 21220, "the simulator runs new TwiML on answered calls")
                await call.run_instead(verbs)
                return web.json_response(call.to_json(self._base_path()))
            status = "completed"
        if status not in ("completed", "canceled"):
            return _error(400, 21218, f"Invalid Status: {status}")
        answered = call.status == "in-progress"
        # "canceled" only ends a call that is not yet answered; Twilio ignores it otherwise.
        ends = status == "completed" or not answered
        if ends and call.mark_ended("completed" if answered else "canceled"):
            call.spawn(call.tear_down())
        return web.json_response(call.to_json(self._base_path()))

    def _number_json(self, number: TwilioNumber) -> dict[str, Any]:
        return {
            "sid": number.sid,
            "account_sid": self.account_sid,
            "phone_number": number.phone_number,
            "friendly_name": number.phone_number,
            "voice_url": number.voice_url or "",
            "voice_method": number.voice_method,
            "voice_fallback_url": number.voice_fallback_url or "",
            "voice_fallback_method": number.voice_fallback_method,
            "status_callback": number.status_callback or "",
            "status_callback_method": number.status_callback_method,
            "voice_application_sid": number.voice_application_sid,
            "trunk_sid": number.trunk_sid,
            "api_version": "2010-04-01",
            "capabilities": {"voice": True, "sms": True, "mms": True, "fax": False},
            "date_created": rfc2822(number.date_created),
            "date_updated": rfc2822(datetime.now(UTC)),
            "uri": f"{self._base_path()}/IncomingPhoneNumbers/{number.sid}.json",
        }

    async def _list_numbers(self, request: web.Request) -> web.Response:
        wanted = request.query.get("PhoneNumber")
        found = [n for n in self.numbers.values() if wanted is None or n.phone_number == wanted]
        uri = f"{self._base_path()}/IncomingPhoneNumbers.json"
        return web.json_response({
            "incoming_phone_numbers": [self._number_json(n) for n in found],
            "start": 0, "end": max(len(found) - 1, 0), "page": 0, "page_size": 50,
            "uri": uri, "first_page_uri": uri, "next_page_uri": None, "previous_page_uri": None,
        })  # fmt: skip

    async def _number(self, request: web.Request) -> web.Response:
        sid = request.match_info["sid"]
        number = next((n for n in self.numbers.values() if n.sid == sid), None)
        if number is None or request.method not in ("GET", "POST"):
            raise web.HTTPNotFound()
        if request.method == "POST":
            form = await request.post()
            fields = {key: _field(form, key) for key in _NUMBER_FIELDS if key in form}
            for key in ("VoiceMethod", "VoiceFallbackMethod", "StatusCallbackMethod"):
                if (fields.get(key) or "POST").upper() not in ("GET", "POST"):
                    return _error(400, 21608, f"{key} must be GET or POST")
            for key in ("VoiceUrl", "VoiceFallbackUrl", "StatusCallback"):
                value = fields.get(key)
                if value and not _http_url(value):
                    return _error(400, 21502, f"{key} is not a valid URL: {value}")
            if "VoiceUrl" in fields:
                number.voice_url = fields["VoiceUrl"] or None
            if "VoiceMethod" in fields:
                number.voice_method = (fields["VoiceMethod"] or "POST").upper()
            if "VoiceFallbackUrl" in fields:
                number.voice_fallback_url = fields["VoiceFallbackUrl"] or None
            if "VoiceFallbackMethod" in fields:
                number.voice_fallback_method = (fields["VoiceFallbackMethod"] or "POST").upper()
            if "StatusCallback" in fields:
                number.status_callback = fields["StatusCallback"] or None
            if "StatusCallbackMethod" in fields:
                number.status_callback_method = (fields["StatusCallbackMethod"] or "POST").upper()
            _route_number(number, fields)
        return web.json_response(self._number_json(number))


def _route_number(number: TwilioNumber, fields: Mapping[str, str | None]) -> None:
    """Apply ``VoiceApplicationSid`` / ``TrunkSid``: an empty value clears it, and setting one
    deletes the other (twilio SDK 9.13, incoming_phone_number/__init__.py ``update``)."""
    if "VoiceApplicationSid" in fields:
        number.voice_application_sid = fields["VoiceApplicationSid"] or None
        if number.voice_application_sid is not None:
            number.trunk_sid = None
    if "TrunkSid" in fields:
        number.trunk_sid = fields["TrunkSid"] or None
        if number.trunk_sid is not None:
            number.voice_application_sid = None
