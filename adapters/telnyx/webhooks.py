"""Telnyx Call Control webhooks in and out, and the REST requests callbridge sends to Telnyx
(PROTOCOLS.md 1).

- ``parse_event`` reads a webhook body (``{"data": {...}, "meta": {...}}``) into a flat
  ``TelnyxEvent``. Telnyx delivers out of order and duplicated: dedupe on ``event_id``.
- ``build_event`` renders the same envelope for callbridge's own outgoing webhooks and for the
  Telnyx simulator.
- The request builders return a ``TelnyxRequest`` (method, path under the API host, JSON body);
  the HTTP client that sends them adds ``Authorization: Bearer <key>``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple
from urllib.parse import quote, urlencode

import orjson

__all__ = [
    "API_BASE",
    "RejectCause",
    "TelnyxEvent",
    "TelnyxRequest",
    "answer",
    "build_event",
    "dial",
    "format_occurred_at",
    "hangup",
    "is_already_ended",
    "lookup_phone_number",
    "parse_event",
    "phone_number_id",
    "reject",
    "streaming_start",
    "update_phone_number_connection",
]

API_BASE = "https://api.telnyx.com"

RejectCause = Literal["CALL_REJECTED", "NOT_FOUND", "TEMPORARILY_UNAVAILABLE", "USER_BUSY"]

# Codecs callbridge can produce for ``stream_bidirectional_codec`` (the mixer's codecs).
_BIDIRECTIONAL_CODECS = frozenset({"PCMU", "PCMA", "L16"})
_STREAM_TRACKS = frozenset({"inbound_track", "outbound_track", "both_tracks"})
# What Telnyx may stream to us (SDK 4.189 ``types/stream_codec.py``); "default" is the call's own
# codec, also what Telnyx streams when it cannot transcode (it transcodes PCMU<->PCMA only).
_STREAM_CODECS = frozenset({"PCMU", "PCMA", "G722", "OPUS", "AMR-WB", "L16", "default"})
# Which legs hear what we send (SDK ``types/stream_bidirectional_target_legs.py``). Telnyx's default
# is "opposite" (OpenAPI ``StreamBidirectionalTargetLegs``), which reaches nobody on callbridge's
# legs: they are standalone call-control legs, never bridged at Telnyx, so they have no opposite.
_TARGET_LEGS = frozenset({"self", "opposite", "both"})
_REJECT_CAUSES = frozenset({"CALL_REJECTED", "NOT_FOUND", "TEMPORARILY_UNAVAILABLE", "USER_BUSY"})
_MAX_STREAM_AUTH_TOKEN = 4000
# Telnyx's error code for a command on a call that has already ended (HTTP 422).
_ALREADY_ENDED = "90018"


# --- webhooks in -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TelnyxEvent:
    """One Call Control webhook, with the payload fields the engine reads lifted out.

    Absent fields are None; ``client_state`` is also None when Telnyx sends ``""``. ``payload`` is
    the raw payload object for anything else (``sip_hangup_cause``, ``stream_url``, ...).
    """

    event_id: str
    event_type: str
    occurred_at: str | None
    call_control_id: str | None
    call_leg_id: str | None
    call_session_id: str | None
    connection_id: str | None
    from_: str | None
    to: str | None
    direction: str | None
    state: str | None
    client_state: str | None
    hangup_cause: str | None
    hangup_source: str | None
    digit: str | None
    attempt: int | None
    payload: dict[str, Any] = field(repr=False)


def _text(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"Telnyx webhook {where}.{key} is not a string")
    return value


def parse_event(body: bytes | str | Mapping[str, Any]) -> TelnyxEvent:
    """A webhook body (raw bytes, or an already-decoded object). Raises ValueError if malformed."""
    if isinstance(body, bytes | str):
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ValueError("Telnyx webhook body is not valid JSON") from None
    else:
        document = body
    if not isinstance(document, Mapping):
        raise ValueError("Telnyx webhook body is not a JSON object")
    data = document.get("data")
    if not isinstance(data, Mapping):
        raise ValueError("Telnyx webhook lacks the 'data' object")
    record_type = data.get("record_type", "event")
    if record_type != "event":
        raise ValueError(f"Telnyx webhook record_type is {str(record_type)[:40]!r}, not 'event'")
    event_id = _text(data, "id", "data")
    event_type = _text(data, "event_type", "data")
    if event_id is None:
        raise ValueError("Telnyx webhook lacks data.id")
    if event_type is None:
        raise ValueError("Telnyx webhook lacks data.event_type")
    payload = data.get("payload")
    if not isinstance(payload, dict):
        raise ValueError("Telnyx webhook lacks the data.payload object")
    # ``meta`` appears in real deliveries but not in the SDK's model: optional.
    meta = document.get("meta")
    attempt = meta.get("attempt") if isinstance(meta, Mapping) else None
    return TelnyxEvent(
        event_id=event_id,
        event_type=event_type,
        occurred_at=_text(data, "occurred_at", "data"),
        call_control_id=_text(payload, "call_control_id", "payload"),
        call_leg_id=_text(payload, "call_leg_id", "payload"),
        call_session_id=_text(payload, "call_session_id", "payload"),
        connection_id=_text(payload, "connection_id", "payload"),
        from_=_text(payload, "from", "payload"),
        to=_text(payload, "to", "payload"),
        direction=_text(payload, "direction", "payload"),
        state=_text(payload, "state", "payload"),
        client_state=_text(payload, "client_state", "payload"),
        hangup_cause=_text(payload, "hangup_cause", "payload"),
        hangup_source=_text(payload, "hangup_source", "payload"),
        digit=_text(payload, "digit", "payload"),
        attempt=attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else None,
        payload=payload,
    )


# --- webhooks out ----------------------------------------------------------------------------


def format_occurred_at(moment: datetime) -> str:
    """Telnyx's timestamp form: UTC, microseconds, ``Z`` (``2025-01-01T12:00:00.123456Z``)."""
    if moment.tzinfo is None:
        raise ValueError("occurred_at must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build_event(
    event_type: str,
    payload: Mapping[str, Any],
    event_id: str,
    occurred_at: datetime | str,
    attempt: int = 1,
    delivered_to: str | None = None,
) -> dict[str, Any]:
    """The webhook envelope Telnyx sends, for ``event_type`` with ``payload``."""
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    meta: dict[str, Any] = {"attempt": attempt}
    if delivered_to is not None:
        meta["delivered_to"] = delivered_to
    return {
        "data": {
            "record_type": "event",
            "event_type": event_type,
            "id": event_id,
            "occurred_at": (
                format_occurred_at(occurred_at)
                if isinstance(occurred_at, datetime)
                else occurred_at
            ),
            "payload": dict(payload),
        },
        "meta": meta,
    }


# --- REST requests ---------------------------------------------------------------------------


class TelnyxRequest(NamedTuple):
    method: str
    path: str
    body: dict[str, Any] | None


def _action(call_control_id: str, action: str) -> str:
    # Control ids look like "v3:..."; ":" is legal in a path segment, "/" and "?" are quoted.
    return f"/v2/calls/{quote(call_control_id, safe=':')}/actions/{action}"


def _common(body: dict[str, Any], client_state: str | None, command_id: str | None) -> None:
    if client_state is not None:
        # Telnyx refuses a client_state that is not base64 (PROTOCOLS.md 1.4).
        try:
            base64.b64decode(client_state, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("client_state must be base64") from None
        body["client_state"] = client_state
    if command_id is not None:
        body["command_id"] = command_id


def _stream(
    body: dict[str, Any],
    stream_url: str | None,
    stream_track: str,
    stream_codec: str | None,
    bidirectional_codec: str,
    target_legs: str,
) -> None:
    """The media-stream fields shared by dial, answer and streaming_start.

    Both directions are declared explicitly, because they are independent at Telnyx
    (PROTOCOLS.md 3.4): ``stream_codec`` is what Telnyx sends us, ``stream_bidirectional_codec``
    what it decodes from us, and ``stream_bidirectional_target_legs`` who hears it.
    """
    if stream_url is None:
        return
    if stream_track not in _STREAM_TRACKS:
        raise ValueError(f"unknown stream_track {stream_track!r}")
    if stream_codec is not None and stream_codec not in _STREAM_CODECS:
        raise ValueError(f"stream_codec must be one of {sorted(_STREAM_CODECS)}")
    if target_legs not in _TARGET_LEGS:
        raise ValueError(f"stream_bidirectional_target_legs must be one of {sorted(_TARGET_LEGS)}")
    if bidirectional_codec not in _BIDIRECTIONAL_CODECS:
        raise ValueError(
            f"stream_bidirectional_codec must be one of {sorted(_BIDIRECTIONAL_CODECS)}"
        )
    body["stream_url"] = stream_url
    body["stream_track"] = stream_track
    if stream_codec is not None:
        body["stream_codec"] = stream_codec
    # "rtp" streams raw codec bytes both ways; the alternative ("mp3") is one file per second.
    body["stream_bidirectional_mode"] = "rtp"
    body["stream_bidirectional_codec"] = bidirectional_codec
    body["stream_bidirectional_target_legs"] = target_legs


def _auth_token(body: dict[str, Any], stream_auth_token: str | None) -> None:
    if stream_auth_token is not None:
        if len(stream_auth_token) > _MAX_STREAM_AUTH_TOKEN:
            raise ValueError("stream_auth_token is limited to 4000 characters")
        body["stream_auth_token"] = stream_auth_token


def dial(
    connection_id: str,
    to: str,
    from_: str,
    *,
    stream_url: str | None = None,
    stream_track: str = "inbound_track",
    stream_codec: str | None = None,
    stream_bidirectional_codec: str = "PCMU",
    stream_bidirectional_target_legs: str = "self",
    stream_bidirectional_sampling_rate: int | None = None,
    stream_auth_token: str | None = None,
    timeout_secs: int | None = None,
    webhook_url: str | None = None,
    client_state: str | None = None,
    command_id: str | None = None,
) -> TelnyxRequest:
    """``POST /v2/calls``: an outbound leg; the answer arrives later as ``call.answered``."""
    body: dict[str, Any] = {"connection_id": connection_id, "to": to, "from": from_}
    _stream(
        body,
        stream_url,
        stream_track,
        stream_codec,
        stream_bidirectional_codec,
        stream_bidirectional_target_legs,
    )
    if stream_url is not None and stream_bidirectional_sampling_rate is not None:
        body["stream_bidirectional_sampling_rate"] = stream_bidirectional_sampling_rate
    _auth_token(body, stream_auth_token)
    if timeout_secs is not None:
        if not 5 <= timeout_secs <= 600:
            raise ValueError("timeout_secs must be between 5 and 600")
        body["timeout_secs"] = timeout_secs
    if webhook_url is not None:
        body["webhook_url"] = webhook_url
    _common(body, client_state, command_id)
    return TelnyxRequest("POST", "/v2/calls", body)


def answer(
    call_control_id: str,
    *,
    stream_url: str | None = None,
    stream_track: str = "inbound_track",
    stream_codec: str | None = None,
    stream_bidirectional_codec: str = "PCMU",
    stream_bidirectional_target_legs: str = "self",
    client_state: str | None = None,
    command_id: str | None = None,
) -> TelnyxRequest:
    """Answer an incoming leg, opening its media stream to ``stream_url``.

    answer takes no ``stream_auth_token`` (PROTOCOLS.md 3.1): to bind a stream to a token, answer
    without ``stream_url`` and then send ``streaming_start``.
    """
    body: dict[str, Any] = {}
    _stream(
        body,
        stream_url,
        stream_track,
        stream_codec,
        stream_bidirectional_codec,
        stream_bidirectional_target_legs,
    )
    _common(body, client_state, command_id)
    return TelnyxRequest("POST", _action(call_control_id, "answer"), body)


def hangup(
    call_control_id: str, *, client_state: str | None = None, command_id: str | None = None
) -> TelnyxRequest:
    """Hang up a leg; if it already ended Telnyx answers 422 ``90018`` (is_already_ended)."""
    body: dict[str, Any] = {}
    _common(body, client_state, command_id)
    return TelnyxRequest("POST", _action(call_control_id, "hangup"), body)


def reject(
    call_control_id: str,
    cause: RejectCause = "CALL_REJECTED",
    *,
    client_state: str | None = None,
    command_id: str | None = None,
) -> TelnyxRequest:
    """Refuse an unanswered incoming leg (SIP 603/404/480/486 by cause)."""
    if cause not in _REJECT_CAUSES:
        raise ValueError(f"unknown reject cause {cause!r}")
    body: dict[str, Any] = {"cause": cause}
    _common(body, client_state, command_id)
    return TelnyxRequest("POST", _action(call_control_id, "reject"), body)


def streaming_start(
    call_control_id: str,
    *,
    stream_url: str,
    stream_auth_token: str | None = None,
    custom_parameters: Mapping[str, str] | None = None,
    stream_track: str = "inbound_track",
    stream_codec: str | None = None,
    stream_bidirectional_codec: str = "PCMU",
    stream_bidirectional_target_legs: str = "self",
    stream_bidirectional_sampling_rate: int | None = None,
    client_state: str | None = None,
    command_id: str | None = None,
) -> TelnyxRequest:
    """Open a media stream on an answered leg; the token comes back in the ``connected`` frame."""
    body: dict[str, Any] = {}
    _stream(
        body,
        stream_url,
        stream_track,
        stream_codec,
        stream_bidirectional_codec,
        stream_bidirectional_target_legs,
    )
    if stream_bidirectional_sampling_rate is not None:
        body["stream_bidirectional_sampling_rate"] = stream_bidirectional_sampling_rate
    _auth_token(body, stream_auth_token)
    if custom_parameters:
        body["custom_parameters"] = [
            {"name": name, "value": value} for name, value in custom_parameters.items()
        ]
    _common(body, client_state, command_id)
    return TelnyxRequest("POST", _action(call_control_id, "streaming_start"), body)


def streaming_stop(
    call_control_id: str, *, client_state: str | None = None, command_id: str | None = None
) -> TelnyxRequest:
    """Stop every media stream of the leg (no ``stream_id``: all of them; SDK 4.189
    ``ActionStopStreamingParams``); Telnyx confirms with ``streaming.stopped``."""
    body: dict[str, Any] = {}
    _common(body, client_state, command_id)
    return TelnyxRequest("POST", _action(call_control_id, "streaming_stop"), body)


def lookup_phone_number(phone_number: str) -> TelnyxRequest:
    """``GET /v2/phone_numbers?filter[phone_number]=...``: the number's record on this account.

    The SDK documents the filter as digits only ("non-numerical characters will result in no
    values") and as a partial match, so the "+" is dropped here and ``phone_number_id`` picks the
    exact number from the results. Whether "+E.164" would also match is unconfirmed.
    """
    digits = phone_number.removeprefix("+")
    if not (digits.isascii() and digits.isdigit() and len(digits) >= 3):
        raise ValueError(f"phone number must be E.164 digits, not {phone_number!r}")
    return TelnyxRequest(
        "GET", "/v2/phone_numbers?" + urlencode({"filter[phone_number]": digits}), None
    )


def update_phone_number_connection(phone_number_id: str, connection_id: str) -> TelnyxRequest:
    """``PATCH /v2/phone_numbers/{id}`` with ``connection_id``: route the number's calls to a
    Call Control application (field confirmed in the SDK's ``PhoneNumberUpdateParams``)."""
    path = f"/v2/phone_numbers/{quote(phone_number_id, safe='')}"
    return TelnyxRequest("PATCH", path, {"connection_id": connection_id})


def phone_number_id(body: bytes, phone_number: str) -> str | None:
    """The id of ``phone_number`` in a lookup response, or None if it is not on the account."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValueError("Telnyx phone number lookup returned invalid JSON") from None
    records = document.get("data") if isinstance(document, dict) else None
    if not isinstance(records, list):
        raise ValueError("Telnyx phone number lookup lacks the 'data' list")
    wanted = "+" + phone_number.removeprefix("+")
    for record in records:
        if isinstance(record, dict) and record.get("phone_number") == wanted:
            found = record.get("id")
            if not isinstance(found, str):
                raise ValueError("Telnyx phone number record lacks its id")
            return found
    return None


def is_already_ended(status: int, body: bytes) -> bool:
    """True for Telnyx's "Call has already ended" answer (HTTP 422, error code ``90018``)."""
    if status != 422:
        return False
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    errors = document.get("errors") if isinstance(document, dict) else None
    if not isinstance(errors, list):
        return False
    # The code is a string in Telnyx's errors; a number is accepted in case a proxy rewrote it.
    return any(
        isinstance(error, dict) and str(error.get("code")) == _ALREADY_ENDED for error in errors
    )
