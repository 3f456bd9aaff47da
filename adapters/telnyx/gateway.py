"""Telnyx's REST side: the HTTP client, the leg map, and the engine's gateway (PROTOCOLS.md 1).

- ``TelnyxRest`` sends one ``TelnyxRequest`` (built by ``adapters.telnyx.webhooks``) with
  ``Authorization: Bearer <API key>`` to the configuration's ``api_base_url``. The builders' paths
  start with ``/v2``, so a base that already ends in ``/v2`` (Telnyx's documented base,
  ``https://api.telnyx.com/v2``) has it removed first: both spellings reach the same URL.
- ``TelnyxLegs`` maps callbridge's ``call_control_id`` to Telnyx's one, both ways, with the
  configuration that carries the leg (its webhooks are verified with that configuration's key).
- ``TelnyxGateway`` is the engine's ``ProviderGateway`` for one configuration: answer with the
  leg's media stream, reject, hang up, dial, and the call's status. Any refusal or failure of
  Telnyx is a ``ProviderCallError`` carrying the HTTP status and ``Retry-After`` (the runtime
  retries transient ones, engine/providers/calls.py); 422 ``90018`` ("call has already ended") is
  success for hangup and reject. Answer, hangup, reject and dial carry a ``command_id``, so a
  command retried after a lost answer is ignored by Telnyx rather than done twice (the SDK's
  ``command_id``: "Telnyx will ignore any command with the same `command_id` for the same
  `call_control_id`", types/calls/action_answer_params.py; for dial "others Dial commands with
  the same `command_id`", types/call_dial_params.py).

The media stream's leg token travels in the ``stream_url`` query string (``?token=...``): Telnyx's
answer takes no ``stream_auth_token`` (PROTOCOLS.md 3.1), and one mechanism for answer and dial
keeps the media endpoint simple. The endpoint also accepts the token from the
``x-telnyx-streaming-auth-token`` header or the ``connected`` frame (streaming_start's way).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, TypedDict
from urllib.parse import quote

import aiohttp
import orjson

from adapters.carrier import Carrier
from adapters.context import AdapterContext
from adapters.telnyx import webhooks as wire
from adapters.telnyx.webhooks import TelnyxRequest, is_already_ended
from engine.errors import ProviderError
from engine.logs import get_logger
from engine.machine.effects import DialCall
from engine.machine.model import RejectCause
from engine.providers.calls import ProviderCallError, parse_retry_after
from engine.providers.gateway import CallGone, CallPresence
from engine.store.base import ProviderConfigRecord

__all__ = [
    "DEFAULT_API_BASE_URL",
    "LEG_QUERY",
    "MEDIA_PATH",
    "WEBHOOK_PATH",
    "TelnyxGateway",
    "TelnyxLeg",
    "TelnyxLegs",
    "TelnyxReply",
    "TelnyxRest",
]

log = get_logger("callbridge.telnyx")

DEFAULT_API_BASE_URL = "https://api.telnyx.com/v2"
WEBHOOK_PATH = "/webhooks/telnyx"
MEDIA_PATH = "/media/telnyx"
# A dialled call's webhook URL names its leg (``?leg=``), so that its webhooks reaching another
# node find the owner before the Telnyx call id is known anywhere (engine/cluster/webhooks.py).
# Telnyx signs ``timestamp|body``, not the URL, so the query changes no signature.
LEG_QUERY = "leg"
# What callbridge asks Telnyx to stream: the caller's audio only, in PCMU both ways (the mixer's
# native codec). The two directions are independent at Telnyx (PROTOCOLS.md 3.4): without
# ``stream_codec`` Telnyx streams the call's own codec (PCMA on most UK/EU/Indian calls) while
# still decoding what we send as ``stream_bidirectional_codec``. Telnyx transcodes PCMU<->PCMA, so
# asking for PCMU gets PCMU on every G.711 call; a G722/OPUS call still streams its own codec, which
# the media session reads from the ``start`` frame.
STREAM_TRACK = "inbound_track"
STREAM_CODEC = "PCMU"
STREAM_BIDIRECTIONAL_CODEC = "PCMU"
STREAM_TARGET_LEGS = "self"
_REJECT_CAUSES: dict[RejectCause, wire.RejectCause] = {
    RejectCause.CALL_REJECTED: "CALL_REJECTED",
    RejectCause.USER_BUSY: "USER_BUSY",
    RejectCause.NOT_FOUND: "NOT_FOUND",
    RejectCause.TEMPORARILY_UNAVAILABLE: "TEMPORARILY_UNAVAILABLE",
}


class StreamFields(TypedDict):
    stream_url: str
    stream_track: str
    stream_codec: str
    stream_bidirectional_codec: str
    stream_bidirectional_target_legs: str


@dataclass(frozen=True, slots=True)
class TelnyxReply:
    status: int
    body: bytes
    retry_after_s: float | None = None  # from retry-after-ms / Retry-After, when given

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def error_text(self) -> str:
        """Telnyx's first error (``title: detail``), or the bare status."""
        try:
            document = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return f"HTTP {self.status}"
        errors = document.get("errors") if isinstance(document, dict) else None
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            parts = [str(first.get(k)) for k in ("code", "title", "detail") if first.get(k)]
            return f"HTTP {self.status} " + ": ".join(parts)
        return f"HTTP {self.status}"

    def refused(self, operation: str) -> ProviderCallError:
        """The error for this reply, as the retry policy reads it."""
        return ProviderCallError(
            f"Telnyx refused {operation}: {self.error_text()}",
            status=self.status,
            retry_after_s=self.retry_after_s,
        )

    def data(self) -> dict[str, Any]:
        """The ``data`` object of a success; ``ProviderError`` if there is none."""
        try:
            document = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            raise ProviderError("Telnyx answered with invalid JSON") from None
        data = document.get("data") if isinstance(document, dict) else None
        if not isinstance(data, dict):
            raise ProviderError("Telnyx's answer lacks the 'data' object")
        return data


def api_url(base_url: str | None, path: str) -> str:
    """The full URL of a builder path (``/v2/...``) under a configuration's base URL."""
    base = (base_url or DEFAULT_API_BASE_URL).rstrip("/")
    return base.removesuffix("/v2") + path


class TelnyxRest:
    """One configuration's REST client over the app's shared aiohttp session."""

    def __init__(self, context: AdapterContext, base_url: str | None, api_key: str) -> None:
        self._context = context
        self._base_url = base_url
        self._api_key = api_key

    async def send(self, request: TelnyxRequest, operation: str) -> TelnyxReply:
        """Send the request; ``ProviderCallError`` only when Telnyx cannot be reached (``sent``
        False when not even the connection was made)."""
        http = self._context.require_http()
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}
        body = None
        if request.body is not None:
            headers["Content-Type"] = "application/json"
            body = orjson.dumps(request.body)
        url = api_url(self._base_url, request.path)
        try:
            # A request without an answer in time is a transient fault (engine/providers/calls.py).
            timeout = aiohttp.ClientTimeout(total=self._context.settings.provider_attempt_timeout_s)
            async with http.request(
                request.method, url, data=body, headers=headers, timeout=timeout
            ) as response:
                wait = parse_retry_after(response.headers, time.time())
                return TelnyxReply(response.status, await response.read(), wait)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProviderCallError(
                f"Telnyx {operation}: cannot reach the API: {type(exc).__name__}: {exc}",
                sent=not isinstance(exc, aiohttp.ClientConnectorError),
            ) from None

    async def expect_ok(self, request: TelnyxRequest, operation: str) -> TelnyxReply:
        reply = await self.send(request, operation)
        if not reply.ok:
            raise reply.refused(operation)
        return reply


@dataclass(frozen=True, slots=True)
class TelnyxLeg:
    leg_id: str  # callbridge's call_control_id
    telnyx_id: str  # Telnyx's call_control_id
    config: ProviderConfigRecord


class TelnyxLegs:
    """callbridge leg <-> Telnyx call, for every live Telnyx leg of this process.

    A dialled leg is known only once Telnyx has answered the dial request, but Telnyx may send the
    new call's first webhooks before that answer reaches us: ``find`` waits for dials in flight
    before it calls a Telnyx id unknown.
    """

    def __init__(self) -> None:
        self._by_leg: dict[str, TelnyxLeg] = {}
        self._by_telnyx: dict[str, TelnyxLeg] = {}
        self._dials: set[asyncio.Future[None]] = set()

    def __len__(self) -> int:
        return len(self._by_leg)

    def add(self, leg_id: str, telnyx_id: str, config: ProviderConfigRecord) -> TelnyxLeg:
        leg = TelnyxLeg(leg_id, telnyx_id, config)
        self._by_leg[leg_id] = leg
        self._by_telnyx[telnyx_id] = leg
        return leg

    def of_leg(self, leg_id: str) -> TelnyxLeg | None:
        return self._by_leg.get(leg_id)

    def of_telnyx(self, telnyx_id: str | None) -> TelnyxLeg | None:
        return self._by_telnyx.get(telnyx_id) if telnyx_id is not None else None

    async def find(self, telnyx_id: str | None, wait_s: float = 5.0) -> TelnyxLeg | None:
        """The leg of a Telnyx call id, waiting for dials in flight if it is not known yet."""
        leg = self.of_telnyx(telnyx_id)
        if leg is not None or telnyx_id is None or not self._dials:
            return leg
        await asyncio.wait(set(self._dials), timeout=wait_s)
        return self.of_telnyx(telnyx_id)

    def forget(self, leg_id: str) -> None:
        leg = self._by_leg.pop(leg_id, None)
        if leg is not None and self._by_telnyx.get(leg.telnyx_id) is leg:
            del self._by_telnyx[leg.telnyx_id]

    def dialling(self) -> asyncio.Future[None]:
        """Mark a dial in flight; resolve the future (``dialled``) when its answer is handled."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._dials.add(future)
        return future

    def dialled(self, future: asyncio.Future[None]) -> None:
        self._dials.discard(future)
        if not future.done():
            future.set_result(None)


class TelnyxGateway:
    """The engine's gateway for the legs of one Telnyx configuration."""

    name = "telnyx"
    dial_is_idempotent = True  # the dial's command_id: Telnyx places one call per id

    def __init__(
        self, context: AdapterContext, config: ProviderConfigRecord, legs: TelnyxLegs
    ) -> None:
        self._context = context
        self._config = config
        self._legs = legs
        self.rest = TelnyxRest(context, config.api_base_url, context.auth_token(config))

    @property
    def config(self) -> ProviderConfigRecord:
        return self._config

    def stream_url(self, leg_id: str) -> str:
        """The media websocket URL for a leg, its token in the query string."""
        token = self._context.tokens.issue(leg_id)
        return f"{self._context.public_media_url(MEDIA_PATH)}?token={token}"

    def _stream_fields(self, leg_id: str) -> StreamFields:
        """The stream callbridge asks for on answer, dial and streaming_start alike."""
        return {
            "stream_url": self.stream_url(leg_id),
            "stream_track": STREAM_TRACK,
            "stream_codec": STREAM_CODEC,
            "stream_bidirectional_codec": STREAM_BIDIRECTIONAL_CODEC,
            "stream_bidirectional_target_legs": STREAM_TARGET_LEGS,
        }

    def _telnyx_id(self, leg_id: str, operation: str) -> str:
        leg = self._legs.of_leg(leg_id)
        if leg is None:
            raise ProviderError(f"Telnyx {operation}: leg {leg_id} has no Telnyx call")
        return leg.telnyx_id

    async def answer(self, call_control_id: str) -> None:
        telnyx_id = self._telnyx_id(call_control_id, "answer")
        request = wire.answer(
            telnyx_id, **self._stream_fields(call_control_id), command_id=f"answer:{telnyx_id}"
        )
        await self.rest.expect_ok(request, "answer")
        log.info("telnyx call answered", leg_id=call_control_id, telnyx_id=telnyx_id)

    async def restart_media(self, call_control_id: str) -> None:
        """Open the leg's stream again: stop whatever stream Telnyx still has (one refused for
        its codec is still running at Telnyx), then start a new one asking for PCMU, which is the
        documented recovery (PROTOCOLS.md 3.4). A call Telnyx has ended is a ``ProviderError``."""
        telnyx_id = self._telnyx_id(call_control_id, "streaming_start")
        stopped = await self.rest.send(wire.streaming_stop(telnyx_id), "streaming_stop")
        if not stopped.ok:
            # Nothing to stop is not a reason to give up: the start below says whether the
            # call can still stream.
            log.info("telnyx streaming_stop refused", leg_id=call_control_id,
                     error=stopped.error_text())  # fmt: skip
        request = wire.streaming_start(telnyx_id, **self._stream_fields(call_control_id))
        reply = await self.rest.send(request, "streaming_start")
        if reply.status == 404 or is_already_ended(reply.status, reply.body):
            raise CallGone(f"Telnyx has no live call {telnyx_id} to stream from")
        if not reply.ok:
            raise reply.refused("streaming_start")
        log.info("telnyx media stream restarted", leg_id=call_control_id, telnyx_id=telnyx_id)

    async def hangup(self, call_control_id: str) -> None:
        leg = self._legs.of_leg(call_control_id)
        if leg is None:
            # Its call.hangup has been handled already: nothing is left to end at Telnyx.
            log.info("telnyx hangup skipped: the call has ended", leg_id=call_control_id)
            return
        request = wire.hangup(leg.telnyx_id, command_id=f"hangup:{leg.telnyx_id}")
        await self._ending(request, "hangup", call_control_id)

    async def reject(self, call_control_id: str, cause: RejectCause) -> None:
        telnyx_id = self._telnyx_id(call_control_id, "reject")
        request = wire.reject(telnyx_id, _REJECT_CAUSES[cause], command_id=f"reject:{telnyx_id}")
        await self._ending(request, "reject", call_control_id)

    async def reject_call(self, telnyx_id: str, cause: RejectCause) -> None:
        """Reject a Telnyx call that never became a callbridge leg (refused at admission)."""
        await self._ending(wire.reject(telnyx_id, _REJECT_CAUSES[cause]), "reject", None)

    async def _ending(self, request: TelnyxRequest, operation: str, leg_id: str | None) -> None:
        reply = await self.rest.send(request, operation)
        if reply.ok:
            return
        if is_already_ended(reply.status, reply.body):
            log.info("telnyx call had already ended", operation=operation, leg_id=leg_id)
            return
        raise reply.refused(operation)

    async def dial(self, dial: DialCall) -> str | None:
        request = wire.dial(
            self._config.account_sid,
            dial.to,
            dial.from_,
            **self._stream_fields(dial.call_control_id),
            timeout_secs=dial.timeout_secs,
            webhook_url=self._context.public_url(WEBHOOK_PATH)
            + f"?{LEG_QUERY}={quote(dial.call_control_id, safe=':')}",
            # Telnyx places one call per command_id: a retried dial cannot ring twice.
            command_id=dial.call_control_id,
        )
        pending = self._legs.dialling()
        try:
            reply = await self.rest.expect_ok(request, "dial")
            telnyx_id = reply.data().get("call_control_id")
            if not isinstance(telnyx_id, str) or not telnyx_id:
                raise ProviderError("Telnyx's dial answer lacks the call_control_id")
            self._legs.add(dial.call_control_id, telnyx_id, self._config)
        finally:
            self._legs.dialled(pending)
        log.info("telnyx call dialled", leg_id=dial.call_control_id, telnyx_id=telnyx_id)
        return Carrier("telnyx", self._config.id, telnyx_id, outbound=True).dumps()

    async def status(self, call_control_id: str) -> CallPresence:
        """``GET /v2/calls/{call_control_id}`` (the SDK's ``calls.retrieve_status``): ``is_alive``
        true is up. False is not up, which Telnyx also says of a call still ringing ("For Dial
        command it will always be `false`", types/call_retrieve_status_response.py), so the
        caller judges it by what it knows of the leg. 404 or 90018: the call is gone."""
        leg = self._legs.of_leg(call_control_id)
        if leg is None:
            return CallPresence.GONE  # its call.hangup has been handled already
        request = TelnyxRequest("GET", f"/v2/calls/{quote(leg.telnyx_id, safe=':')}", None)
        reply = await self.rest.send(request, "status")
        if reply.status == 404 or is_already_ended(reply.status, reply.body):
            return CallPresence.GONE
        if not reply.ok:
            raise reply.refused("status")
        return CallPresence.UP if reply.data().get("is_alive") is True else CallPresence.NOT_UP

    def forget(self, call_control_id: str) -> None:
        self._legs.forget(call_control_id)
