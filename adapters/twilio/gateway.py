"""Twilio as the engine's ``ProviderGateway``: the REST client, the legs it carries, held answers.

Three pieces:

- ``TwilioRest``: the few REST requests callbridge makes (``adapters.twilio.webhooks`` builds
  them), sent with HTTP Basic ``AccountSid:AuthToken`` to the configuration's ``api_base_url``
  (default ``https://api.twilio.com``). A provider that cannot be reached raises
  ``ProviderCallError``; a refusal comes back as a ``RestReply`` for the caller to judge, and
  the gateway raises it as a ``ProviderCallError`` with its status and ``Retry-After``, so the
  runtime can retry the transient ones (engine/providers/calls.py).
- ``TwilioLegs``: every Twilio leg of this process, by ``call_control_id`` and by ``CallSid``,
  with the configuration that owns it (its auth token verifies the leg's webhooks and stream).
- ``TwilioGateway``: the engine's provider calls for the legs of one configuration.

Twilio answers a call as soon as its voice webhook returns TwiML, so an inbound leg's webhook
response is *held* (``TwilioLeg.decision``) until the engine decides: ``answer`` resolves it
with a bidirectional stream, ``reject`` with ``<Reject>``, ``hangup`` with ``<Hangup/>``. Once
the call is up (or for an outbound call), hangups and rejects go through REST
(``Status=completed``; a call that is already gone counts as done).

A dial is not idempotent at Twilio: each ``POST .../Calls.json`` places a new call and the API
takes no idempotency key (twilio's own sync client never retries a POST: urllib3's
``Retry.DEFAULT_ALLOWED_METHODS``), so ``dial_is_idempotent`` is False and the runtime repeats a
dial only when Twilio surely did not act on it (429, or no connection made). Twilio's error pages
say the same: "hanging up a call" is idempotent, "triggering an outbound call" is not
(twilio.com/docs/api/errors/20500), and a 429 "is never processed and is always safe to retry"
(errors/20429).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote, urlencode

import aiohttp
import orjson

from adapters.carrier import Carrier
from adapters.context import AdapterContext
from adapters.twilio import twiml
from adapters.twilio.webhooks import (
    API_BASE,
    CallbackOrder,
    TwilioRequest,
    create_call,
    hangup_call,
    is_call_gone,
    update_call_twiml,
)
from engine.errors import ProviderError
from engine.logs import get_logger
from engine.machine.effects import DialCall
from engine.machine.model import RejectCause
from engine.providers.calls import ProviderCallError, parse_retry_after
from engine.providers.gateway import CallGone, CallPresence
from engine.store.base import ProviderConfigRecord

__all__ = [
    "MEDIA_PATH",
    "STATUS_PATH",
    "VOICE_PATH",
    "Decision",
    "RestReply",
    "TwilioGateway",
    "TwilioLeg",
    "TwilioLegs",
    "TwilioRest",
    "stream_twiml",
]

log = get_logger("callbridge.twilio")

VOICE_PATH: Final = "/webhooks/twilio/voice"
STATUS_PATH: Final = "/webhooks/twilio/status"
MEDIA_PATH: Final = "/media/twilio"
# The <Parameter> that carries the leg token to the media endpoint (start.customParameters).
LEG_TOKEN_PARAMETER: Final = "leg_token"
# The query parameter that ties an outbound call's webhooks to its leg before its CallSid is known.
LEG_QUERY: Final = "leg"
_ENDED_STATUSES: Final = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})


# --- REST ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RestReply:
    status: int
    body: bytes
    retry_after_s: float | None = None  # Twilio's Retry-After, when given

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> object:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None

    def detail(self) -> str:
        """Twilio's own words for a refusal (``code`` and ``message``), else the HTTP status."""
        document = self.json()
        if isinstance(document, dict) and document.get("message"):
            code = document.get("code")
            prefix = f"Twilio error {code}" if code else f"HTTP {self.status}"
            return f"{prefix}: {document['message']}"
        return f"HTTP {self.status}"

    def refused(self, what: str) -> ProviderCallError:
        """The error for this reply, as the retry policy reads it."""
        return ProviderCallError(
            f"{what}: {self.detail()}", status=self.status, retry_after_s=self.retry_after_s
        )


class TwilioRest:
    """One Twilio account's REST API."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        account_sid: str,
        auth_token: str,
        base_url: str | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """``timeout_s``: how long one request may take (None: the session's own limit)."""
        self._http = http
        self._timeout = (
            http.timeout if timeout_s is None else aiohttp.ClientTimeout(total=timeout_s)
        )
        self.account_sid = account_sid
        self._authorization = aiohttp.encode_basic_auth(account_sid, auth_token)
        self.base_url = (base_url or API_BASE).rstrip("/")

    async def send(self, request: TwilioRequest) -> RestReply:
        """Send one request; ``ProviderCallError`` only when Twilio cannot be reached at all
        (``sent`` False when not even the connection was made)."""
        fields = [
            (name, item)
            for name, value in request.form.items()
            for item in (value if isinstance(value, list) else [value])
        ]
        headers = {"Authorization": self._authorization}
        if fields:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            async with self._http.request(
                request.method,
                request.url,
                data=urlencode(fields) if fields else None,
                headers=headers,
                timeout=self._timeout,
            ) as response:
                wait = parse_retry_after(response.headers, time.time())
                return RestReply(response.status, await response.read(), wait)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProviderCallError(
                f"Twilio is unreachable at {self.base_url}: {type(exc).__name__}: {exc}",
                sent=not isinstance(exc, aiohttp.ClientConnectorError),
            ) from None


# --- the legs ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """What a held voice webhook answers: a stream to the engine, or this TwiML document."""

    answer: bool
    document: str = ""


@dataclass(slots=True, eq=False)
class TwilioLeg:
    call_control_id: str
    org_id: int
    config: ProviderConfigRecord
    outbound: bool
    call_sid: str | None = None
    # Set once a voice webhook was answered with <Connect><Stream> (and LegAnswered fed).
    answered: bool = False
    # Inbound only: the held voice webhook's answer, resolved by the gateway or the timeout.
    decision: asyncio.Future[Decision] | None = None
    # The newest status callback seen, so a late one cannot move the leg backwards (handlers).
    callbacks: CallbackOrder = field(default_factory=CallbackOrder)

    def decide(self, decision: Decision) -> bool:
        """Resolve the held voice webhook; False if none is waiting (anymore)."""
        if self.decision is None or self.decision.done():
            return False
        self.decision.set_result(decision)
        return True


class TwilioLegs:
    """The Twilio legs of this process, by call_control_id and by CallSid."""

    def __init__(self) -> None:
        self._by_id: dict[str, TwilioLeg] = {}
        self._by_sid: dict[str, TwilioLeg] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, leg: TwilioLeg) -> None:
        self._by_id[leg.call_control_id] = leg
        if leg.call_sid is not None:
            self._by_sid[leg.call_sid] = leg

    def set_sid(self, leg: TwilioLeg, call_sid: str) -> None:
        leg.call_sid = call_sid
        if self._by_id.get(leg.call_control_id) is leg:
            self._by_sid[call_sid] = leg

    def by_id(self, call_control_id: str) -> TwilioLeg | None:
        return self._by_id.get(call_control_id)

    def by_sid(self, call_sid: str) -> TwilioLeg | None:
        return self._by_sid.get(call_sid)

    def forget(self, call_control_id: str) -> None:
        """The leg ended: drop it; a voice webhook still held for it ends the call at Twilio."""
        leg = self._by_id.pop(call_control_id, None)
        if leg is None:
            return
        if leg.call_sid is not None and self._by_sid.get(leg.call_sid) is leg:
            del self._by_sid[leg.call_sid]
        leg.decide(Decision(False, twiml.hangup()))


def stream_twiml(context: AdapterContext, call_control_id: str) -> str:
    """``<Connect><Stream>`` to callbridge's media endpoint, with a fresh leg token."""
    return twiml.connect_stream(
        context.public_media_url(MEDIA_PATH),
        {LEG_TOKEN_PARAMETER: context.tokens.issue(call_control_id)},
        hold_s=context.settings.stream_hold_s,
    )


# --- the gateway ---------------------------------------------------------------------------------


class TwilioGateway:
    """The engine's provider calls for the Twilio legs of one provider configuration."""

    name = "twilio"
    dial_is_idempotent = False  # see the module docstring

    def __init__(
        self, context: AdapterContext, config: ProviderConfigRecord, legs: TwilioLegs
    ) -> None:
        self._context = context
        self.config = config
        self._legs = legs

    def rest(self) -> TwilioRest:
        return TwilioRest(
            self._context.require_http(),
            self.config.account_sid,
            self._context.auth_token(self.config),
            self.config.api_base_url,
            # A request without an answer in time is a transient fault (engine/providers/calls.py).
            timeout_s=self._context.settings.provider_attempt_timeout_s,
        )

    def hold(self, call_control_id: str, org_id: int, call_sid: str) -> TwilioLeg:
        """Track a new inbound leg whose voice webhook waits for the engine's decision."""
        leg = TwilioLeg(
            call_control_id,
            org_id,
            self.config,
            outbound=False,
            call_sid=call_sid,
            decision=asyncio.get_running_loop().create_future(),
        )
        self._legs.add(leg)
        return leg

    async def answer(self, call_control_id: str) -> None:
        leg = self._legs.by_id(call_control_id)
        if leg is not None and leg.answered:
            return
        if leg is None or not leg.decide(Decision(answer=True)):
            raise ProviderError("the Twilio call is no longer waiting for an answer")

    async def reject(self, call_control_id: str, cause: RejectCause) -> None:
        reason: twiml.RejectReason = "busy" if cause is RejectCause.USER_BUSY else "rejected"
        leg = self._legs.by_id(call_control_id)
        if leg is not None and leg.decide(Decision(False, twiml.reject(reason))):
            return
        await self._complete(call_control_id)

    async def restart_media(self, call_control_id: str) -> None:
        """Open the leg's stream again by updating the live call with fresh stream TwiML (a new
        leg token); Twilio then runs it in place of what it was running."""
        leg = self._legs.by_id(call_control_id)
        if leg is None or leg.call_sid is None:
            raise ProviderError("the Twilio call is not known: its stream cannot be reopened")
        document = stream_twiml(self._context, call_control_id)
        request = update_call_twiml(
            self.config.account_sid, leg.call_sid, document, base_url=self._base()
        )
        reply = await self.rest().send(request)
        if is_call_gone(reply.status, reply.body):
            raise CallGone(f"Twilio has no live call {leg.call_sid} to stream from")
        if not reply.ok:
            raise reply.refused("Twilio refused the stream update")
        log.info("twilio media stream restarted", leg_id=call_control_id, call_sid=leg.call_sid)

    async def hangup(self, call_control_id: str) -> None:
        leg = self._legs.by_id(call_control_id)
        if leg is not None and leg.decide(Decision(False, twiml.hangup())):
            return
        await self._complete(call_control_id)

    async def _complete(self, call_control_id: str) -> None:
        """End the call at Twilio through REST; a call already gone is done."""
        leg = self._legs.by_id(call_control_id)
        if leg is None or leg.call_sid is None:
            return  # nothing was placed at Twilio (or it is long forgotten)
        request = hangup_call(self.config.account_sid, leg.call_sid, base_url=self._base())
        reply = await self.rest().send(request)
        if reply.ok or is_call_gone(reply.status, reply.body):
            return
        raise reply.refused(f"Twilio refused to end call {leg.call_sid}")

    async def dial(self, dial: DialCall) -> str | None:
        leg = TwilioLeg(dial.call_control_id, dial.org_id, self.config, outbound=True)
        # Tracked before the request: Twilio may call back before its reply arrives, and the
        # webhooks name the leg in their URL.
        self._legs.add(leg)
        # Quoted so that it never needs re-encoding: the signature covers the URL byte for byte.
        query = f"?{LEG_QUERY}={quote(dial.call_control_id, safe=':')}"
        request = create_call(
            self.config.account_sid,
            to=dial.to,
            from_=dial.from_,
            url=self._context.public_url(VOICE_PATH) + query,
            status_callback=self._context.public_url(STATUS_PATH) + query,
            timeout=dial.timeout_secs if dial.timeout_secs > 0 else None,
            base_url=self._base(),
        )
        reply = await self.rest().send(request)
        if not reply.ok:
            raise reply.refused(f"Twilio refused the call to {dial.to}")
        document = reply.json()
        sid = document.get("sid") if isinstance(document, dict) else None
        if not isinstance(sid, str):
            raise ProviderError("Twilio accepted the call but its reply has no call sid")
        if leg.call_sid is None:
            self._legs.set_sid(leg, sid)
        log.info("twilio call placed", leg_id=dial.call_control_id, call_sid=sid, to=dial.to)
        return Carrier("twilio", self.config.id, leg.call_sid or sid, outbound=True).dumps()

    async def status(self, call_control_id: str) -> CallPresence:
        """``GET .../Calls/{Sid}.json``: ``status`` in-progress is up; queued and ringing are
        not up yet; completed, busy, failed, no-answer and canceled (twilio's
        ``CallInstance.Status``, rest/api/v2010/account/call/__init__.py) or a 404 mean gone. A
        leg with no CallSid yet (its dial still in flight) is not up."""
        leg = self._legs.by_id(call_control_id)
        if leg is None:
            return CallPresence.GONE
        if leg.call_sid is None:
            return CallPresence.NOT_UP
        # The call's resource URL is the one a hangup POSTs to; a GET of it reads the call.
        ending = hangup_call(self.config.account_sid, leg.call_sid, base_url=self._base())
        reply = await self.rest().send(TwilioRequest("GET", ending.url, {}))
        if is_call_gone(reply.status, reply.body):
            return CallPresence.GONE
        if not reply.ok:
            raise reply.refused(f"Twilio refused the status of call {leg.call_sid}")
        document = reply.json()
        status = document.get("status") if isinstance(document, dict) else None
        if status == "in-progress":
            return CallPresence.UP
        if status in ("queued", "ringing"):
            return CallPresence.NOT_UP
        if status in _ENDED_STATUSES:
            return CallPresence.GONE
        raise ProviderCallError(f"Twilio call {leg.call_sid} has an unknown status {status!r}")

    def forget(self, call_control_id: str) -> None:
        self._legs.forget(call_control_id)

    def _base(self) -> str:
        return self.config.api_base_url or API_BASE
