"""What the providers put on the wire besides audio, written for the simulators from the
providers' own SDKs and docs, apart from callbridge's adapters so that a shared mistake cannot
hide: Twilio's request signature, Telnyx's webhook signature and envelope.

Sources, each checked by tests/test_simulator_sdk_crosscheck.py against the SDK itself:

- Twilio ``X-Twilio-Signature``: twilio-python 9.13 ``twilio/request_validator.py``
  (``compute_signature``): the URL, then for a form body every parameter name in sorted order
  followed by its value(s), sorted; HMAC-SHA1 keyed with the auth token; base64.
- Telnyx: telnyx-python 4.189 ``telnyx/lib/webhook_verification.py``: headers
  ``telnyx-signature-ed25519`` (base64 of the 64-byte Ed25519 signature) and ``telnyx-timestamp``
  (Unix seconds); the signed message is ``"{timestamp}|{body}"``; the public key is the base64
  of the raw 32-byte key.
- The Telnyx envelope ``{"data": {"record_type": "event", "event_type", "id", "occurred_at",
  "payload"}, "meta": {"attempt", "delivered_to"}}``: telnyx-python
  ``types/call_*_webhook_event.py`` (``data`` and its fields) and Telnyx's "Receiving
  webhooks" page (``meta``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "TELNYX_SIGNATURE_HEADER",
    "TELNYX_TIMESTAMP_HEADER",
    "telnyx_event",
    "telnyx_public_key",
    "telnyx_sign",
    "telnyx_time",
    "twilio_signature",
]

TELNYX_SIGNATURE_HEADER: Final = "telnyx-signature-ed25519"
TELNYX_TIMESTAMP_HEADER: Final = "telnyx-timestamp"


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str] | None) -> str:
    """``X-Twilio-Signature`` for a request to ``url`` with form ``params`` (None: a GET, or a
    websocket upgrade, whose signature covers the URL alone)."""
    fields = params or {}
    text = url + "".join(name + fields[name] for name in sorted(fields))
    digest = hmac.new(auth_token.encode(), text.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def telnyx_sign(private_key: Ed25519PrivateKey, body: bytes, timestamp: int) -> str:
    """The ``telnyx-signature-ed25519`` value for ``body`` sent at ``timestamp``."""
    return base64.b64encode(private_key.sign(str(timestamp).encode() + b"|" + body)).decode()


def telnyx_public_key(private_key: Ed25519PrivateKey) -> str:
    """The public key as the Telnyx portal shows it: base64 of the raw 32 bytes."""
    raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def telnyx_time(moment: datetime) -> str:
    """Telnyx's timestamps: UTC with microseconds and ``Z`` (``2025-01-01T12:00:00.123456Z``)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def telnyx_event(
    event_type: str,
    payload: Mapping[str, Any],
    event_id: str,
    occurred_at: datetime,
    attempt: int,
    delivered_to: str,
) -> dict[str, Any]:
    """One Call Control v2 webhook body."""
    return {
        "data": {
            "record_type": "event",
            "event_type": event_type,
            "id": event_id,
            "occurred_at": telnyx_time(occurred_at),
            "payload": dict(payload),
        },
        "meta": {"attempt": attempt, "delivered_to": delivered_to},
    }
