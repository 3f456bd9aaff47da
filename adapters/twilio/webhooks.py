"""Twilio voice/status webhooks in, REST requests out (PROTOCOLS.md 4.1, 4.2).

Webhooks arrive form-encoded with PascalCase names; ``parse_voice_call`` and ``parse_status``
turn the form into small frozen records and name the first missing field in their ValueError.
Check the signature (``adapters.twilio.signature``) before parsing.

The request builders return a ``TwilioRequest`` (method, absolute URL, form fields) for the few
REST calls callbridge makes; the HTTP client that sends them adds HTTP Basic auth
(AccountSid:AuthToken). Repeated form fields (``StatusCallbackEvent``) are lists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import NamedTuple
from urllib.parse import quote, urlencode

import orjson

__all__ = [
    "API_BASE",
    "STATUS_EVENTS",
    "CallbackOrder",
    "TwilioRequest",
    "TwilioStatus",
    "TwilioVoiceCall",
    "create_call",
    "hangup_call",
    "is_call_gone",
    "lookup_phone_number",
    "parse_status",
    "parse_voice_call",
    "phone_number_sid",
    "update_phone_number",
]

API_BASE = "https://api.twilio.com"
STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")
# Twilio's REST error code for "the requested resource was not found" (a call already gone).
_NOT_FOUND_CODE = 20404


@dataclass(frozen=True, slots=True)
class TwilioVoiceCall:
    """The incoming-call webhook: a new leg Twilio asks TwiML for."""

    call_sid: str
    account_sid: str
    from_: str
    to: str
    direction: str
    call_status: str
    parent_call_sid: str | None = None
    caller_name: str | None = None
    forwarded_from: str | None = None


@dataclass(frozen=True, slots=True)
class TwilioStatus:
    """A call-progress status callback.

    ``sequence_number`` orders callbacks of one call (they can arrive out of order);
    ``duration`` is ``CallDuration`` in seconds, ``sip_response_code`` e.g. 487 on a ring timeout.
    """

    call_sid: str
    account_sid: str
    call_status: str
    sequence_number: int | None = None
    duration: int | None = None
    sip_response_code: int | None = None
    timestamp: str | None = None
    direction: str | None = None
    from_: str | None = None
    to: str | None = None
    parent_call_sid: str | None = None


def _required(params: Mapping[str, str], name: str, what: str) -> str:
    value = params.get(name)
    if not value:
        raise ValueError(f"Twilio {what} lacks the {name} parameter")
    return value


def _optional_int(params: Mapping[str, str], name: str, what: str) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if not (value.isascii() and value.isdigit()):
        raise ValueError(f"Twilio {what} has a non-numeric {name}: {value[:20]!r}")
    return int(value)


def parse_voice_call(params: Mapping[str, str]) -> TwilioVoiceCall:
    """The incoming-call (voice URL) webhook's form fields."""
    what = "voice webhook"
    return TwilioVoiceCall(
        call_sid=_required(params, "CallSid", what),
        account_sid=_required(params, "AccountSid", what),
        from_=_required(params, "From", what),
        to=_required(params, "To", what),
        direction=_required(params, "Direction", what),
        call_status=_required(params, "CallStatus", what),
        parent_call_sid=params.get("ParentCallSid") or None,
        caller_name=params.get("CallerName") or None,
        forwarded_from=params.get("ForwardedFrom") or None,
    )


def parse_status(params: Mapping[str, str]) -> TwilioStatus:
    """A status callback's form fields."""
    what = "status callback"
    return TwilioStatus(
        call_sid=_required(params, "CallSid", what),
        account_sid=_required(params, "AccountSid", what),
        call_status=_required(params, "CallStatus", what),
        sequence_number=_optional_int(params, "SequenceNumber", what),
        duration=_optional_int(params, "CallDuration", what),
        sip_response_code=_optional_int(params, "SipResponseCode", what),
        timestamp=params.get("Timestamp") or None,
        direction=params.get("Direction") or None,
        from_=params.get("From") or None,
        to=params.get("To") or None,
        parent_call_sid=params.get("ParentCallSid") or None,
    )


def _timestamp(value: str | None) -> float | None:
    """A callback's ``Timestamp`` (RFC 2822, e.g. ``Tue, 01 Dec 2026 10:00:00 +0000``)."""
    if value is None:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


class CallbackOrder:
    """Which status callbacks of one call are the newest so far, in Twilio's own order.

    Twilio fires a call's status callbacks in order but delivers each as a separate request
    with no arrival-order guarantee, numbering them with ``SequenceNumber`` (0, 1, 2, ...) and
    stamping each with ``Timestamp`` (PROTOCOLS.md 4.2). ``admit`` says whether a callback is
    newer than every one seen before (and remembers it): by ``SequenceNumber`` when both carry
    one, else by ``Timestamp`` (one-second resolution, so an equal one is not older). When
    neither can tell, the callback counts as new: an unknown order is no reason to drop it.
    """

    __slots__ = ("_sequence", "_time", "status")

    def __init__(self) -> None:
        self._sequence: int | None = None
        self._time: float | None = None
        self.status: str | None = None  # the CallStatus of the newest callback seen

    def admit(self, callback: TwilioStatus) -> bool:
        sequence, at = callback.sequence_number, _timestamp(callback.timestamp)
        if sequence is not None and self._sequence is not None:
            newer = sequence > self._sequence
        elif at is not None and self._time is not None:
            newer = at >= self._time
        else:
            newer = True
        if newer:
            self._sequence = sequence if sequence is not None else self._sequence
            self._time = at if at is not None else self._time
            self.status = callback.call_status
        return newer


# --- REST requests ---------------------------------------------------------------------------


class TwilioRequest(NamedTuple):
    method: str
    url: str
    form: dict[str, str | list[str]]


def _account_url(base_url: str, account_sid: str, tail: str) -> str:
    # Path segments are quoted whole so no id can add a path segment or a query.
    return f"{base_url.rstrip('/')}/2010-04-01/Accounts/{quote(account_sid, safe='')}/{tail}"


def create_call(
    account_sid: str,
    *,
    to: str,
    from_: str,
    url: str | None = None,
    twiml: str | None = None,
    status_callback: str | None = None,
    status_callback_events: Sequence[str] = STATUS_EVENTS,
    timeout: int | None = None,
    base_url: str = API_BASE,
) -> TwilioRequest:
    """Place an outbound call; Twilio fetches TwiML from ``url`` or runs ``twiml`` on answer.

    ``status_callback_events`` only matter with a ``status_callback`` (Twilio's default without
    them is ``completed`` alone); ``timeout`` is the ring time in seconds (Twilio default 60).
    """
    if (url is None) == (twiml is None):
        raise ValueError("create_call needs exactly one of url and twiml")
    form: dict[str, str | list[str]] = {"To": to, "From": from_}
    if url is not None:
        form["Url"] = url
    if twiml is not None:
        form["Twiml"] = twiml
    if status_callback is not None:
        unknown = set(status_callback_events) - set(STATUS_EVENTS)
        if unknown:
            raise ValueError(f"unknown status callback events: {sorted(unknown)}")
        form["StatusCallback"] = status_callback
        form["StatusCallbackMethod"] = "POST"
        form["StatusCallbackEvent"] = list(status_callback_events)
    if timeout is not None:
        if timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        form["Timeout"] = str(timeout)
    return TwilioRequest("POST", _account_url(base_url, account_sid, "Calls.json"), form)


def hangup_call(account_sid: str, call_sid: str, *, base_url: str = API_BASE) -> TwilioRequest:
    """End a call in any state (a 404 with code 20404 means it was already gone)."""
    url = _account_url(base_url, account_sid, f"Calls/{quote(call_sid, safe='')}.json")
    return TwilioRequest("POST", url, {"Status": "completed"})


def update_call_twiml(
    account_sid: str, call_sid: str, document: str, *, base_url: str = API_BASE
) -> TwilioRequest:
    """Replace what a live call runs with ``document`` (twilio-python ``CallInstance.update``,
    form field ``Twiml``); a 404 with code 20404 means the call is gone."""
    url = _account_url(base_url, account_sid, f"Calls/{quote(call_sid, safe='')}.json")
    return TwilioRequest("POST", url, {"Twiml": document})


def lookup_phone_number(
    account_sid: str, phone_number: str, *, base_url: str = API_BASE
) -> TwilioRequest:
    """Find an IncomingPhoneNumber by its E.164 number (an empty list: not on this account)."""
    # urlencode turns the leading "+" into %2B; a raw "+" would arrive as a space.
    query = urlencode({"PhoneNumber": phone_number})
    return TwilioRequest(
        "GET", _account_url(base_url, account_sid, f"IncomingPhoneNumbers.json?{query}"), {}
    )


def update_phone_number(
    account_sid: str,
    number_sid: str,
    *,
    voice_url: str,
    status_callback: str | None = None,
    voice_fallback_url: str | None = None,
    clear_voice_application: bool = False,
    base_url: str = API_BASE,
) -> TwilioRequest:
    """Point a number's voice webhook (and status callbacks, and its fallback) at callbridge.

    ``voice_fallback_url`` is the number's ``VoiceFallbackUrl`` (the twilio SDK's
    ``IncomingPhoneNumberContext.update`` posts ``voice_fallback_url`` as ``VoiceFallbackUrl``
    and ``voice_fallback_method`` as ``VoiceFallbackMethod``: "The URL that we should call when
    an error occurs retrieving or executing the TwiML requested by `url`").

    ``clear_voice_application`` also sends an empty ``VoiceApplicationSid``: Twilio ignores
    ``VoiceUrl`` while the number has one (the twilio SDK's ``IncomingPhoneNumberContext.update``
    docstring: "The `voice_url` will not be called if a `voice_application_sid` or a `trunk_sid`
    is set"; it posts the field as ``VoiceApplicationSid``), and an empty value removes it.
    """
    form: dict[str, str | list[str]] = {"VoiceUrl": voice_url, "VoiceMethod": "POST"}
    if clear_voice_application:
        form["VoiceApplicationSid"] = ""
    if status_callback is not None:
        form["StatusCallback"] = status_callback
        form["StatusCallbackMethod"] = "POST"
    if voice_fallback_url is not None:
        form["VoiceFallbackUrl"] = voice_fallback_url
        form["VoiceFallbackMethod"] = "POST"
    tail = f"IncomingPhoneNumbers/{quote(number_sid, safe='')}.json"
    return TwilioRequest("POST", _account_url(base_url, account_sid, tail), form)


def phone_number_sid(body: bytes) -> str | None:
    """The ``PN...`` sid from a lookup response, or None if the number is not on the account."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValueError("Twilio phone number lookup returned invalid JSON") from None
    numbers = document.get("incoming_phone_numbers") if isinstance(document, dict) else None
    if not isinstance(numbers, list):
        raise ValueError("Twilio phone number lookup lacks incoming_phone_numbers")
    if not numbers:
        return None
    first = numbers[0]
    sid = first.get("sid") if isinstance(first, dict) else None
    if not isinstance(sid, str):
        raise ValueError("Twilio phone number lookup entry lacks its sid")
    return sid


def is_call_gone(status: int, body: bytes) -> bool:
    """True for Twilio's answer to a request on a call that no longer exists (404, 20404)."""
    if status != 404:
        return False
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(document, dict) and document.get("code") == _NOT_FOUND_CODE
