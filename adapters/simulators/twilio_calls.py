"""The call side of the Twilio simulator: one ``TwilioCall`` per call, inbound or REST-dialled.

An inbound call POSTs the voice webhook to its number's ``VoiceUrl`` exactly as Twilio does
(form-encoded PascalCase fields, ``X-Twilio-Signature`` over the URL and sorted fields with the
account's auth token) and follows the TwiML it gets back; an outbound call rings its callee per
the configured ``Callee`` and, once answered, fetches its ``Url`` (or runs its ``Twiml``) the
same way. This module owns the call: its ringing and answer, its signed webhooks, its status
callbacks and its REST resource; running the TwiML, verb by verb, is ``twilio_flow``'s.

A number with a ``TrunkSid`` or a ``VoiceApplicationSid`` routes the call there
(``routed_to``); the number's URLs are not used.

Status callbacks go to the number's (or the dial's) ``StatusCallback`` for the configured events,
with ``SequenceNumber`` from 0 and ``CallDuration`` on ``completed``: in order, or, with
``callback_order``, reversed or shuffled as Twilio's separate requests may arrive.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal
from urllib.parse import urlencode, urlsplit

import aiohttp

from adapters.simulators.audio import AudioSource
from adapters.simulators.common import Callee, CallState, SimulatedCall, WebhookRecord
from adapters.simulators.pacing import NO_IMPAIRMENTS, Impairments
from adapters.simulators.twilio_flow import TwimlFlow
from adapters.simulators.twilio_stream import MAX_QUEUED_SAMPLES
from adapters.simulators.twiml import Verb
from adapters.simulators.wire import twilio_signature

__all__ = [
    "CallbackOrder",
    "TwilioAccount",
    "TwilioApplication",
    "TwilioCall",
    "TwilioNumber",
    "new_sid",
    "rfc2822",
]

CallbackOrder = Literal["in-order", "reversed", "shuffled"]

API_VERSION: Final = "2010-04-01"
DTMF_DIGITS: Final = frozenset("0123456789*#ABCD")
# SIP final response Twilio reports in SipResponseCode for each terminal status.
_SIP_CODES: Final = {"completed": 200, "busy": 486, "no-answer": 487, "canceled": 487,
                     "failed": 500}  # fmt: skip


def new_sid(prefix: str) -> str:
    """A Twilio SID: two-letter prefix and 32 hex digits."""
    return prefix + secrets.token_hex(16)


def rfc2822(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")


@dataclass(slots=True)
class TwilioNumber:
    """An IncomingPhoneNumber on the simulated account."""

    sid: str
    phone_number: str
    voice_url: str | None = None
    voice_method: str = "POST"
    status_callback: str | None = None
    status_callback_method: str = "POST"
    # A number's StatusCallback reports the end of each call unless told more.
    status_callback_events: tuple[str, ...] = ("completed",)
    date_created: datetime = field(default_factory=lambda: datetime.now(UTC))
    # Twilio ignores the voice URLs while either is set; setting one clears the other (twilio
    # SDK 9.13, rest/api/v2010/account/incoming_phone_number/__init__.py, ``trunk_sid`` and
    # ``voice_application_sid`` docstrings).
    voice_application_sid: str | None = None
    trunk_sid: str | None = None
    # Fetched when the voice URL cannot give TwiML (see ``TwimlFlow.fetch``).
    voice_fallback_url: str | None = None
    voice_fallback_method: str = "POST"


@dataclass(slots=True)
class TwilioApplication:
    """A TwiML App (``AP...``): a number whose ``VoiceApplicationSid`` names it sends its calls
    to the application's ``voice_url`` (never the number's own) and its status callbacks to the
    application's ``status_callback``."""

    sid: str
    voice_url: str | None = None
    voice_method: str = "POST"
    status_callback: str | None = None
    status_callback_method: str = "POST"


@dataclass(slots=True)
class TwilioAccount:
    """What a call needs from its simulator: the credentials and an HTTP client."""

    account_sid: str
    auth_token: str
    session: aiohttp.ClientSession
    webhook_timeout_s: float = 15.0
    applications: dict[str, TwilioApplication] = field(default_factory=dict)


class TwilioCall(SimulatedCall):
    """One Twilio call. ``status`` is Twilio's CallStatus (queued, ringing, in-progress, ...)."""

    def __init__(
        self,
        account: TwilioAccount,
        *,
        direction: Literal["inbound", "outbound"],
        from_: str,
        to: str,
        source: AudioSource,
        impairments: Impairments = NO_IMPAIRMENTS,
        number: TwilioNumber | None = None,
        url: str | None = None,
        method: str = "POST",
        twiml: str | None = None,
        status_callback: str | None = None,
        status_callback_method: str = "POST",
        status_callback_events: tuple[str, ...] = ("completed",),
        timeout_s: float = 60.0,
        callee: Callee | None = None,
        extra_params: Mapping[str, str] | None = None,
        callback_order: CallbackOrder = "in-order",
        callback_seed: int = 0,
    ) -> None:
        if impairments.reorder:
            raise ValueError("a Twilio stream is one TCP connection: it cannot reorder frames")
        super().__init__(
            direction=direction,
            from_=from_,
            to=to,
            source=source,
            impairments=impairments,
            max_queued_samples=MAX_QUEUED_SAMPLES,
        )
        self.account = account
        self.sid = new_sid("CA")
        self.number = number
        self.status = "queued" if direction == "outbound" else "ringing"
        self.url, self.method, self.twiml = url, method, twiml
        self.timeout_s = timeout_s
        self.callee = callee
        self.extra_params = dict(extra_params or {})
        #: Where the call went: ``voice_url``, ``application:AP...`` or ``trunk:TK...``.
        self.routed_to = "voice_url"
        self.application: TwilioApplication | None = None
        if number is not None:
            status_callback, status_callback_method = self._route(number)
            status_callback_events = number.status_callback_events
        self.status_callback = status_callback
        self.status_callback_method = status_callback_method
        self.status_callback_events = status_callback_events
        self.date_created = datetime.now(UTC)
        self.start_time: datetime | None = None
        self.end_time: datetime | None = None
        self._status_seq = 0
        self.callback_order: CallbackOrder = callback_order
        self._callback_rng = random.Random(callback_seed)
        self._callbacks: asyncio.Queue[tuple[str, dict[str, str]]] = asyncio.Queue()
        #: Set once the call has ended: what ringing and a ``<Pause>`` wait on.
        self.ended_event = asyncio.Event()
        self._flow = TwimlFlow(self)
        self.spawn(self._deliver_callbacks())

    @property
    def id(self) -> str:
        return self.sid

    def _route(self, number: TwilioNumber) -> tuple[str | None, str]:
        """Where a call to ``number`` goes; its status callback URL and method."""
        if number.trunk_sid is not None:
            # The trunk handles the call: nothing reaches the number's URLs.
            self.routed_to = f"trunk:{number.trunk_sid}"
            return None, "POST"
        if number.voice_application_sid is not None:
            self.routed_to = f"application:{number.voice_application_sid}"
            app = self.account.applications.get(number.voice_application_sid)
            self.application = app
            return (app.status_callback, app.status_callback_method) if app else (None, "POST")
        return number.status_callback, number.status_callback_method

    @property
    def duration_s(self) -> int:
        if self.answered_at is None:
            return 0
        return int((self.ended_at or time.monotonic()) - self.answered_at)

    def start(self) -> None:
        self.spawn(self._run_inbound() if self.direction == "inbound" else self._run_outbound())

    # --- test controls ---------------------------------------------------------------------------

    async def send_dtmf(
        self, digit: str, *, message: bool = True, tones_ms: int | None = None
    ) -> None:
        """The caller presses ``digit``: a Media Streams ``dtmf`` message (``message``) and/or,
        with ``tones_ms``, the key's tones in its audio for that long. A real phone through
        Twilio can produce both for one press."""
        if digit not in DTMF_DIGITS:
            raise ValueError(f"not a DTMF digit: {digit!r}")
        if self.stream is None:
            raise RuntimeError("DTMF travels on the media stream, and none is open")
        if tones_ms is not None:
            self.press_tones(digit, tones_ms)
        if message:
            await self.stream.send_dtmf(digit)

    async def hang_up(self) -> None:
        """The caller (or callee of an outbound call) hangs up."""
        await self.end(
            "completed" if self.state >= CallState.ANSWERED else "canceled",
        )

    # --- the call flow ---------------------------------------------------------------------------

    def webhook_params(self) -> dict[str, str]:
        """The fields every request about the call carries (voice, redirect, action, status)."""
        direction = "inbound" if self.direction == "inbound" else "outbound-api"
        return {
            "AccountSid": self.account.account_sid,
            "ApiVersion": API_VERSION,
            "CallSid": self.sid,
            "CallStatus": self.status,
            "Called": self.to,
            "Caller": self.from_,
            "Direction": direction,
            "From": self.from_,
            "To": self.to,
            **self.extra_params,
        }

    async def _run_inbound(self) -> None:
        self._status("initiated")
        self._status("ringing")
        number = self.number
        assert number is not None
        fallback: tuple[str, str] | None = None
        if self.routed_to == "voice_url":
            url, method = number.voice_url, number.voice_method
            if number.voice_fallback_url:
                fallback = (number.voice_fallback_url, number.voice_fallback_method)
        elif self.application is not None:
            url, method = self.application.voice_url, self.application.voice_method
        else:
            url, method = None, "POST"
        if url is None:
            # A trunk, or an application the simulator does not know: nobody simulated takes
            # the call, and the number's VoiceUrl is never fetched.
            await self.end("failed")
            return
        verbs = await self._flow.fetch(url, method, fallback=fallback)
        if verbs is not None:
            await self._flow.follow(verbs, url)

    async def _run_outbound(self) -> None:
        callee = self.callee or Callee()
        self._status("initiated")
        self.status = "ringing"
        self._status("ringing")
        ring_s = callee.ring_ms / 1000
        if callee.outcome == "no-answer":
            ring_s = min(ring_s, self.timeout_s)
        elif ring_s > self.timeout_s:
            callee = Callee("no-answer")
            ring_s = self.timeout_s
        try:
            await asyncio.wait_for(self.ended_event.wait(), ring_s)
            return  # hung up (canceled) while ringing
        except TimeoutError:
            pass
        if self.state is CallState.ENDED:
            return
        if callee.outcome != "answer":
            await self.end(callee.outcome)
            return
        self.source = callee.source()
        self.impairments = callee.impairments
        self.answer()
        if self.twiml is not None:
            verbs = self._flow.parse(self.twiml.encode())
            if verbs is None:
                await self.end("failed")
        else:
            assert self.url is not None
            verbs = await self._flow.fetch(self.url, self.method)
        if verbs is not None:
            await self._flow.follow(verbs, self.url or "")

    def answer(self) -> None:
        """Pick up (once): ``in-progress``, and the ``answered`` status callback."""
        if self.state >= CallState.ANSWERED:
            return
        self.status = "in-progress"
        self.start_time = datetime.now(UTC)
        self.set_state(CallState.ANSWERED)
        self._status("answered")

    async def run_instead(self, verbs: tuple[Verb, ...]) -> None:
        """A call update with ``Twiml``: what the call was running stops and ``verbs`` run in
        its place (see ``TwimlFlow.run_instead``)."""
        await self._flow.run_instead(verbs)

    def new_stream_sid(self) -> str:
        """A SID for a media stream the call opens (``MZ...``)."""
        return new_sid("MZ")

    # --- webhooks --------------------------------------------------------------------------------

    async def post_webhook(
        self, kind: str, url: str, method: str, params: Mapping[str, str]
    ) -> WebhookRecord:
        """Send one signed webhook and record it with its response."""
        headers = {
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
        }
        body = b""
        if method.upper() == "GET":
            # GET carries the fields in the query, which the signature covers as part of the URL.
            url = f"{url}{'&' if urlsplit(url).query else '?'}{urlencode(sorted(params.items()))}"
            headers["X-Twilio-Signature"] = twilio_signature(self.account.auth_token, url, None)
        else:
            body = urlencode(sorted(params.items())).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            headers["X-Twilio-Signature"] = twilio_signature(self.account.auth_token, url, params)
        record = WebhookRecord(kind, url, method.upper(), headers, body, time.monotonic())
        timeout = aiohttp.ClientTimeout(total=self.account.webhook_timeout_s)
        try:
            async with self.account.session.request(
                method.upper(), url, data=body or None, headers=headers, timeout=timeout
            ) as response:
                record.status = response.status
                record.response = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            record.error = f"{type(exc).__name__}: {exc}"
        self.events.append(record)
        self.notify()
        return record

    def _status(self, event: str) -> None:
        """Queue the status callback for ``event`` if the call asked for it."""
        if self.status_callback is None or event not in self.status_callback_events:
            return
        params = self.webhook_params()
        params["CallStatus"] = {"initiated": "initiated", "ringing": "ringing"}.get(
            event, self.status
        )
        params["CallbackSource"] = "call-progress-events"
        params["SequenceNumber"] = str(self._status_seq)
        params["Timestamp"] = rfc2822(datetime.now(UTC))
        self._status_seq += 1
        if event == "completed":
            params["CallDuration"] = str(self.duration_s)
            params["Duration"] = str(-(-self.duration_s // 60))
            params["SipResponseCode"] = str(_SIP_CODES.get(self.status, 200))
        self._callbacks.put_nowait((event, params))

    async def _deliver_callbacks(self) -> None:
        """Deliver status callbacks one at a time. Out of order (``callback_order`` reversed or
        shuffled), the callbacks up to the first ``answered`` or ``completed`` are held and then
        sent together in that order, so a ``ringing`` can arrive after ``in-progress``; later
        ones go as they come. Each keeps the ``SequenceNumber`` and ``Timestamp`` it was fired
        with: Twilio sends them as separate requests with no arrival-order guarantee
        (PROTOCOLS.md 4.2)."""
        held: list[tuple[str, dict[str, str]]] = []
        holding = self.callback_order != "in-order"
        while True:
            event, params = await self._callbacks.get()
            if holding:
                held.append((event, params))
                if event not in ("answered", "completed"):
                    continue
                holding = False
                if self.callback_order == "reversed":
                    held.reverse()
                else:
                    self._callback_rng.shuffle(held)
            batch, held = held or [(event, params)], []
            for kind, fields in batch:
                assert self.status_callback is not None
                await self.post_webhook(
                    kind, self.status_callback, self.status_callback_method, fields
                )

    async def end(self, status: str) -> None:
        """End the call with Twilio status ``status``: close the stream with ``stop``, then
        send the ``completed`` callback. Does nothing if the call has already ended."""
        if self.mark_ended(status):
            await self.tear_down()

    def mark_ended(self, status: str) -> bool:
        """The synchronous half of ``end``: the call is over from now on (False if it was)."""
        if self.state is CallState.ENDED:
            return False
        self.status = status
        self.end_time = datetime.now(UTC)
        self.finish(status)
        self.ended_event.set()
        return True

    async def tear_down(self) -> None:
        """The asynchronous half of ``end``: ``stop`` the stream, report ``completed``."""
        stream = self.stream
        if stream is not None:
            await stream.stop()
        self._status("completed")

    def to_json(self, base_path: str) -> dict[str, Any]:
        """The Call resource as Twilio's REST API renders it."""
        uri = f"{base_path}/Calls/{self.sid}.json"
        return {
            "sid": self.sid,
            "account_sid": self.account.account_sid,
            "api_version": API_VERSION,
            "direction": "inbound" if self.direction == "inbound" else "outbound-api",
            "from": self.from_,
            "from_formatted": self.from_,
            "to": self.to,
            "to_formatted": self.to,
            "status": self.status,
            "parent_call_sid": None,
            "phone_number_sid": self.number.sid if self.number else None,
            "date_created": rfc2822(self.date_created),
            "date_updated": rfc2822(datetime.now(UTC)),
            "start_time": rfc2822(self.start_time) if self.start_time else None,
            "end_time": rfc2822(self.end_time) if self.end_time else None,
            "duration": str(self.duration_s) if self.state is CallState.ENDED else None,
            "price": None,
            "price_unit": "USD",
            "answered_by": None,
            "caller_name": None,
            "forwarded_from": None,
            "queue_time": "0",
            "uri": uri,
            "subresource_uris": {"streams": uri.replace(".json", "/Streams.json")},
        }
