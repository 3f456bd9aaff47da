"""Telnyx webhook signatures: Ed25519 over ``"{timestamp}|"`` + raw body (PROTOCOLS.md 2).

Telnyx sends ``telnyx-signature-ed25519`` (base64 of a 64-byte signature) and ``telnyx-timestamp``
(Unix seconds). The public key from the portal is base64 of the raw 32-byte key, not PEM. As in
the SDK, a timestamp more than 300 s away from now, in either direction, is refused, so a
captured webhook cannot be replayed later.

Verify over the body bytes exactly as received: re-serialised JSON will not match. ``now`` is a
parameter so the check stays pure and testable; the caller passes ``time.time()``.

The signing half serves callbridge's own outgoing webhooks (which imitate Telnyx's) and the
Telnyx simulator.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "SignatureError",
    "public_key_b64",
    "sign_webhook",
    "verify_webhook",
]

SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"
DEFAULT_TOLERANCE_S = 300

_PUBLIC_KEY_BYTES = 32
_SIGNATURE_BYTES = 64


class SignatureError(ValueError):
    """A webhook whose signature cannot be accepted; ``reason`` says why (safe to log)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _b64decode(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{what} is not valid base64") from None


def _signed_message(timestamp: str | int, payload: bytes) -> bytes:
    return f"{timestamp}|".encode() + payload


def verify_webhook(
    public_key_b64: str,
    payload: bytes,
    signature_b64: str | None,
    timestamp: str | None,
    now: float,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> None:
    """Return if Telnyx signed ``payload`` at ``timestamp``; raise ``SignatureError`` otherwise.

    ``signature_b64`` and ``timestamp`` are the raw header values, None when a header is missing.
    """
    key = _b64decode(public_key_b64, "public key")
    if len(key) != _PUBLIC_KEY_BYTES:
        raise SignatureError(f"public key must be {_PUBLIC_KEY_BYTES} bytes, got {len(key)}")
    if not signature_b64:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    if not timestamp:
        raise SignatureError(f"missing {TIMESTAMP_HEADER} header")
    # The length cap keeps int() far from Python's digit limit (it raises past 4300 digits).
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        raise SignatureError("timestamp is not a Unix time in seconds")
    # Cheap checks first: a stale replay is refused without spending a signature verification.
    age = now - int(timestamp)
    if age > tolerance_s:
        raise SignatureError(f"timestamp is {int(age)} s old (tolerance {tolerance_s} s)")
    if -age > tolerance_s:
        raise SignatureError(
            f"timestamp is {int(-age)} s in the future (tolerance {tolerance_s} s)"
        )
    signature = _b64decode(signature_b64, "signature")
    if len(signature) != _SIGNATURE_BYTES:
        raise SignatureError(f"signature must be {_SIGNATURE_BYTES} bytes, got {len(signature)}")
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(
            signature, _signed_message(timestamp, payload)
        )
    except InvalidSignature:
        raise SignatureError("signature does not match the payload") from None


def sign_webhook(private_key: Ed25519PrivateKey, payload: bytes, timestamp: int) -> str:
    """The ``telnyx-signature-ed25519`` header value for ``payload`` sent at ``timestamp``."""
    signature = private_key.sign(_signed_message(timestamp, payload))
    return base64.b64encode(signature).decode("ascii")


def public_key_b64(private_key: Ed25519PrivateKey) -> str:
    """The public half in Telnyx's portal format: base64 of the raw 32 bytes."""
    raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")
