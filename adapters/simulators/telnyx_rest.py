"""A Telnyx account on 127.0.0.1: the Call Control REST subset callbridge calls, its numbers and
connections, and the calls it places.

    async with TelnyxSimulator() as sim:
        connection = sim.add_connection(webhook_url=f"{callbridge}/webhooks/telnyx")
        sim.add_number("+15550002222", connection_id=connection)
        # callbridge's Telnyx config: api_base_url=sim.base_url, api_key=sim.api_key,
        # public_key=sim.public_key
        call = await sim.place_inbound_call("+15557654321", "+15550002222",
                                            source=ToneSource(1000))
        await call.wait_for(CallState.STREAMING)

REST (``Authorization: Bearer <api_key>``; else 401 ``{"errors": [{"code": "10009", ...}]}``):
``POST /v2/calls`` (dial), ``GET /v2/calls/{id}``, ``POST /v2/calls/{id}/actions/{answer,
hangup, reject, streaming_start, streaming_stop}`` (422 ``90018`` "Call has already ended" once
the leg has ended, 404 for an unknown id or action),
``GET /v2/phone_numbers?filter[phone_number]=``, ``GET|PATCH /v2/phone_numbers/{id}``,
``GET|PATCH /v2/call_control_applications/{id}`` (a PATCH needs ``application_name`` and
``webhook_event_url``, as the SDK's update params say; ``webhook_event_failover_url`` is optional).
Every request is kept in ``requests``; those refused as invalid (400/422, but not the 90018
race) also in ``protocol_errors``. ``faults`` (``rest_faults.RestFaults``) makes operations
(``dial``, ``status``, ``answer``, ``hangup``, ...) answer 503/429 or hang, in Telnyx's error
shape (codes from Telnyx's error list: 10007 unexpected error, 10011 too many requests).
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.simulators.audio import AudioSource, SilenceSource
from adapters.simulators.codecs import ByteOrder
from adapters.simulators.common import (
    Callee,
    CallState,
    LocalServer,
    Observatory,
    record_request,
)
from adapters.simulators.pacing import NO_IMPAIRMENTS, Impairments
from adapters.simulators.rest_faults import Fault, RestFaults
from adapters.simulators.telnyx_calls import (
    NO_FAULTS,
    CommandError,
    StreamFault,
    TelnyxAccount,
    TelnyxCall,
    TelnyxConnection,
    WebhookFaults,
)
from adapters.simulators.telnyx_stream import StreamConfig, StreamConfigError
from adapters.simulators.wire import telnyx_public_key, telnyx_time

__all__ = ["TelnyxNumber", "TelnyxSimulator"]

_ACTIONS: Final = ("answer", "hangup", "reject", "streaming_start", "streaming_stop")


@dataclass(slots=True)
class TelnyxNumber:
    id: str
    phone_number: str
    connection_id: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def _errors(
    status: int, code: str, title: str, detail: str, pointer: str | None = None
) -> web.Response:
    error: dict[str, Any] = {"code": code, "title": title, "detail": detail}
    if pointer is not None:
        error["source"] = {"pointer": pointer}
    return web.json_response({"errors": [error]}, status=status)


def _numeric_id() -> str:
    # Telnyx connection and number ids are long decimal strings.
    return str(secrets.randbelow(9 * 10**18) + 10**18)


def _valid_base64(value: object) -> bool:
    try:
        base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        return False
    return isinstance(value, str)


class TelnyxSimulator(Observatory[TelnyxCall]):
    """One simulated Telnyx account (REST server + call side)."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        private_key: Ed25519PrivateKey | None = None,
        webhook_timeout_s: float = 10.0,
        default_callee: Callee | None = None,
        l16_byte_order: ByteOrder = "big",
    ) -> None:
        super().__init__()
        self.api_key = api_key or "KEY" + secrets.token_hex(16)
        self.private_key = private_key or Ed25519PrivateKey.generate()
        self.public_key = telnyx_public_key(self.private_key)
        self.webhook_timeout_s = webhook_timeout_s
        self.default_callee = default_callee or Callee()
        self.l16_byte_order: ByteOrder = l16_byte_order
        self.connections: dict[str, TelnyxConnection] = {}
        self.numbers: dict[str, TelnyxNumber] = {}
        self.callees: dict[str, Callee] = {}
        self.base_url = ""
        self._dial_commands: dict[str, TelnyxCall] = {}
        self.faults = RestFaults()
        self._server: LocalServer | None = None
        self._account: TelnyxAccount | None = None

    async def start(self) -> TelnyxSimulator:
        session = aiohttp.ClientSession()
        self._account = TelnyxAccount(
            self.private_key, session, self.connections, self.webhook_timeout_s,
            self.l16_byte_order,
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
        if self._account is not None:
            await self._account.session.close()

    async def __aenter__(self) -> TelnyxSimulator:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- configuration ---------------------------------------------------------------------------

    def add_connection(
        self, webhook_url: str | None = None, *, application_name: str = "callbridge-sim"
    ) -> str:
        """A Call Control application whose legs' webhooks go to ``webhook_url``; its id."""
        connection = TelnyxConnection(_numeric_id(), webhook_url, application_name)
        self.connections[connection.id] = connection
        return connection.id

    def add_number(self, phone_number: str, connection_id: str | None = None) -> TelnyxNumber:
        number = TelnyxNumber(_numeric_id(), phone_number, connection_id)
        self.numbers[phone_number] = number
        return number

    def set_callee(self, phone_number: str, callee: Callee) -> None:
        self.callees[phone_number] = callee

    # --- calls -----------------------------------------------------------------------------------

    async def place_inbound_call(
        self,
        from_: str,
        to: str,
        *,
        source: AudioSource | None = None,
        impairments: Impairments = NO_IMPAIRMENTS,
        faults: WebhookFaults = NO_FAULTS,
        codec: str = "PCMU",
        stream_fault: StreamFault | None = None,
    ) -> TelnyxCall:
        """Someone dials ``to`` (a number on a connection). Returns at once; ``call.initiated``
        follows in the background and the leg waits for commands. ``codec`` is what the caller's
        side negotiated (PCMU, PCMA, G722 or OPUS); ``stream_fault`` makes its streams fail."""
        number = self.numbers.get(to)
        if number is None or number.connection_id not in self.connections:
            raise ValueError(f"{to} is not on the simulated account or has no connection")
        call = TelnyxCall(
            self._require_account(), direction="inbound", from_=from_, to=to,
            connection_id=number.connection_id, source=source or SilenceSource(),
            impairments=impairments, faults=faults, codec=codec, stream_fault=stream_fault,
        )  # fmt: skip
        self._add(call)
        call.start()
        return call

    def _add(self, call: TelnyxCall) -> None:
        self._record_call(call.call_control_id, call)

    def _require_account(self) -> TelnyxAccount:
        if self._account is None:
            raise RuntimeError("start the simulator first")
        return self._account

    # --- REST ------------------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/v2/calls", self._dial)
        app.router.add_get("/v2/calls/{id}", self._get_call)
        app.router.add_post("/v2/calls/{id}/actions/{action}", self._action)
        app.router.add_get("/v2/phone_numbers", self._list_numbers)
        app.router.add_route("*", "/v2/phone_numbers/{id}", self._number)
        app.router.add_route("*", "/v2/call_control_applications/{id}", self._application)
        return app

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        recorded = await record_request(request)
        self.requests.append(recorded)
        body = recorded.json
        if recorded.auth != ("bearer", self.api_key):
            response: web.StreamResponse = _errors(
                401, "10009", "Authentication failed",
                "The required authentication headers were either invalid or not included.",
            )  # fmt: skip
        elif request.method in ("POST", "PATCH") and recorded.body and not isinstance(body, dict):
            response = _errors(
                400, "10023", "Invalid JSON", "The request body is not a JSON object"
            )
            self.record_refusal(recorded, "10023", "The request body is not a JSON object")
        elif (fault := self.faults.take(_operation(request))) is not None:
            response = await self._faulted(fault)
        else:
            try:
                response = await handler(request)
            except CommandError as exc:
                response = _errors(exc.status, exc.code, exc.title, exc.detail, exc.pointer)
                # 90018 "already ended" is a race any application meets, not a mistake.
                if exc.status in (400, 422) and exc.code != "90018":
                    self.record_refusal(recorded, exc.code, exc.detail)
            except web.HTTPException as exc:
                if exc.status not in (404, 405):
                    raise
                response = _errors(404, "10005", "Resource not found", f"{request.path}")
        recorded.status = response.status
        self._changed.set()
        return response

    async def _faulted(self, fault: Fault) -> web.Response:
        if fault.hang:
            await self.faults.hold()
            return _errors(504, "10007", "Unexpected error", "Gateway timeout")
        if fault.status == 429:
            response = _errors(429, "10011", "Too many requests", "Rate limit exceeded")
        else:
            response = _errors(fault.status, "10007", "Unexpected error",
                               "The service is temporarily unavailable")  # fmt: skip
        if fault.retry_after_s is not None:
            response.headers["Retry-After"] = f"{fault.retry_after_s:g}"
        return response

    async def _dial(self, request: web.Request) -> web.Response:
        body = await _json(request)
        for key in ("connection_id", "from", "to"):
            if not body.get(key):
                raise CommandError(422, "10004", "Missing required parameter", key)
        to = body["to"]
        if not isinstance(to, str):
            raise CommandError(
                422,
                "10015",
                "Bad Request",
                "the simulator dials one destination: 'to' must be a string",
            )
        connection_id = str(body["connection_id"])
        if connection_id not in self.connections:
            raise CommandError(
                422,
                "10017",
                "Associated resource does not exist",
                f"connection_id {connection_id} is not on this account",
            )
        _check_client_state(body)
        webhook_url = body.get("webhook_url")
        if webhook_url is not None and not (
            isinstance(webhook_url, str) and urlsplit(webhook_url).scheme in ("http", "https")
        ):
            raise CommandError(422, "10003", "Invalid URL", "webhook_url must be an http(s) URL")
        timeout = body.get("timeout_secs", 30)
        if not isinstance(timeout, int) or not 5 <= timeout <= 600:
            raise CommandError(422, "10015", "Bad Request", "timeout_secs must be 5 to 600")
        command_id = body.get("command_id")
        if isinstance(command_id, str) and command_id in self._dial_commands:
            return web.json_response({"data": self._dial_commands[command_id].to_json()})
        try:
            stream = StreamConfig.parse(body, with_token=True)
        except StreamConfigError as exc:
            raise CommandError(422, exc.code, exc.title, exc.detail, exc.pointer) from None
        callee = self.callees.get(to, self.default_callee)
        call = TelnyxCall(
            self._require_account(), direction="outbound", from_=str(body["from"]), to=to,
            connection_id=connection_id, source=SilenceSource(), impairments=callee.impairments,
            webhook_url=webhook_url, client_state=body.get("client_state"),
            timeout_secs=timeout, callee=callee, stream=stream, codec=callee.codec,
        )  # fmt: skip
        if isinstance(command_id, str):
            self._dial_commands[command_id] = call
        self._add(call)
        call.start()
        return web.json_response({"data": call.to_json()})

    def _call(self, request: web.Request) -> TelnyxCall:
        call = self.calls.get(request.match_info["id"])
        if call is None:
            raise CommandError(404, "10005", "Resource not found", "Call not found")
        return call

    async def _get_call(self, request: web.Request) -> web.Response:
        return web.json_response({"data": self._call(request).to_json()})

    async def _action(self, request: web.Request) -> web.Response:
        call = self._call(request)
        action = request.match_info["action"]
        if action not in _ACTIONS:
            raise CommandError(
                404,
                "10005",
                "Resource not found",
                f"the simulator does not implement actions/{action}",
            )
        body = await _json(request)
        if call.state is CallState.ENDED:
            raise CommandError(
                422,
                "90018",
                "Call has already ended",
                "This call is no longer active and can't receive commands.",
            )
        _check_client_state(body)
        if not call.repeated_command(body.get("command_id")):
            previous = call.client_state
            # Set first: the command's own webhooks already carry the new client_state.
            call.client_state = body.get("client_state", previous)
            try:
                _run_action(call, action, body)
            except CommandError:
                call.client_state = previous
                raise
        return web.json_response({"data": {"result": "ok"}})

    def _number_json(self, number: TelnyxNumber) -> dict[str, Any]:
        connection = self.connections.get(number.connection_id or "")
        return {
            "id": number.id,
            "record_type": "phone_number",
            "phone_number": number.phone_number,
            "status": "active",
            "connection_id": number.connection_id,
            "connection_name": connection.application_name if connection else None,
            "tags": [],
            "created_at": telnyx_time(number.created_at),
            "updated_at": telnyx_time(datetime.now(UTC)),
        }

    async def _list_numbers(self, request: web.Request) -> web.Response:
        wanted = request.query.get("filter[phone_number]")
        if wanted is None:
            found = list(self.numbers.values())
        elif wanted.isascii() and wanted.isdigit():
            # A partial match on digits; the SDK documents that other characters match nothing.
            found = [n for n in self.numbers.values() if wanted in n.phone_number]
        else:
            found = []
        return web.json_response({
            "data": [self._number_json(n) for n in found],
            "meta": {"total_results": len(found), "total_pages": 1, "page_number": 1,
                     "page_size": 20},
        })  # fmt: skip

    async def _number(self, request: web.Request) -> web.Response:
        number = next((n for n in self.numbers.values() if n.id == request.match_info["id"]), None)
        if number is None or request.method not in ("GET", "PATCH"):
            raise CommandError(404, "10005", "Resource not found", "Phone number not found")
        if request.method == "PATCH":
            body = await _json(request)
            if "connection_id" in body:
                wanted = body["connection_id"]
                if wanted is not None and str(wanted) not in self.connections:
                    raise CommandError(
                        422,
                        "10017",
                        "Associated resource does not exist",
                        f"connection_id {wanted} is not on this account",
                    )
                number.connection_id = None if wanted is None else str(wanted)
        return web.json_response({"data": self._number_json(number)})

    async def _application(self, request: web.Request) -> web.Response:
        connection = self.connections.get(request.match_info["id"])
        if connection is None or request.method not in ("GET", "PATCH"):
            raise CommandError(404, "10005", "Resource not found", "Application not found")
        if request.method == "PATCH":
            body = await _json(request)
            _check_application_update(body)
            connection.application_name = body["application_name"]
            connection.webhook_event_url = body["webhook_event_url"]
            if "webhook_event_failover_url" in body:
                connection.webhook_event_failover_url = body["webhook_event_failover_url"] or None
        return web.json_response({"data": {
            "id": connection.id, "record_type": "call_control_application",
            "application_name": connection.application_name,
            "webhook_event_url": connection.webhook_event_url, "webhook_api_version": "2",
            "webhook_event_failover_url": connection.webhook_event_failover_url or "",
        }})  # fmt: skip


def _operation(request: web.Request) -> str:
    """The operation a request is, as ``faults`` names it."""
    action = request.match_info.get("action")
    if action is not None:
        return action
    if request.path == "/v2/calls" and request.method == "POST":
        return "dial"
    if request.path.startswith("/v2/calls/") and request.method == "GET":
        return "status"
    return f"{request.method} {request.path}"


def _run_action(call: TelnyxCall, action: str, body: dict[str, Any]) -> None:
    if action == "answer":
        call.answer(body)
    elif action == "hangup":
        call.api_hangup()
    elif action == "reject":
        call.reject(body)
    elif action == "streaming_start":
        call.streaming_start(body)
    else:
        call.streaming_stop(body)


async def _json(request: web.Request) -> dict[str, Any]:
    """The JSON object body (the middleware has refused anything else); {} when empty."""
    if not await request.read():
        return {}
    body = await request.json()
    return body if isinstance(body, dict) else {}


def _check_client_state(body: dict[str, Any]) -> None:
    state = body.get("client_state")
    if state is not None and not _valid_base64(state):
        raise CommandError(422, "10015", "Bad Request", "client_state must be base64")


def _check_application_update(body: dict[str, Any]) -> None:
    """Telnyx's SDK marks ``application_name`` and ``webhook_event_url`` ``Required`` in
    ``CallControlApplicationUpdateParams`` (telnyx 4.189, types/
    call_control_application_update_params.py): a PATCH without either is refused."""
    for key in ("application_name", "webhook_event_url"):
        value = body.get(key)
        if value is None:
            raise CommandError(422, "10004", "Missing required parameter",
                               f"{key} is required", f"/{key}")  # fmt: skip
        if not isinstance(value, str) or not value:
            raise CommandError(422, "10015", "Bad Request", f"{key} must be a non-empty string",
                               f"/{key}")  # fmt: skip
    # The SDK's docstrings, of both: "Must include a scheme, such as 'https'." The failover URL
    # is Optional[str] there: null (or "") clears it.
    for key in ("webhook_event_url", "webhook_event_failover_url"):
        value = body.get(key)
        if key == "webhook_event_failover_url" and value in (None, ""):
            continue
        url = urlsplit(value) if isinstance(value, str) else None
        if url is None or url.scheme not in ("http", "https") or not url.netloc:
            raise CommandError(422, "10003", "Invalid URL", f"{key} must be an http(s) URL",
                               f"/{key}")  # fmt: skip
