"""Tokens that bind a media websocket to one leg.

A token is ``<leg id>.<expiry>.<HMAC-SHA256>`` (base64url), keyed by a key derived from
``CALLBRIDGE_SECRET_KEY``: the stream URL (Telnyx) or a ``<Parameter>`` (Twilio) carries it,
and the media endpoint accepts a socket only with a valid, unexpired token for a leg that has no
live stream. It lives as long as the leg may (``DEFAULT_TTL_S``). It is not single-use on
purpose: a stream that drops may reconnect with the same token within the leg's grace period.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from engine.machine.model import DEFAULT_TIME_LIMIT_SECS

# A token must outlive every reconnect of its leg's stream: a leg may live up to Call Control's
# time limit (4 h, DEFAULT_TIME_LIMIT_SECS) from its answer, and the token is issued before that,
# when the answer or dial is sent (a dial rings up to 600 s, an incoming leg waits up to its setup
# timeout). The hour of margin covers both.
TOKEN_MARGIN_S = 3600.0
DEFAULT_TTL_S = DEFAULT_TIME_LIMIT_SECS + TOKEN_MARGIN_S


class InvalidLegToken(ValueError):
    """The token is malformed, forged, or expired; ``reason`` fits a websocket close frame."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class LegTokens:
    def __init__(self, secret_key: str, clock: Callable[[], float], ttl_s: float = DEFAULT_TTL_S):
        self._key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=b"callbridge/leg-tokens", info=b"v1"
        ).derive(secret_key.encode())
        self._clock = clock
        self._ttl = ttl_s

    def issue(self, leg_id: str) -> str:
        expiry = str(int(self._clock() + self._ttl))
        return f"{_b64(leg_id.encode())}.{expiry}.{self._mac(leg_id, expiry)}"

    def leg_of(self, token: str) -> str:
        """The leg a token is for; ``InvalidLegToken`` when it is not good now."""
        parts = token.split(".")
        if len(parts) != 3 or not (parts[1].isascii() and parts[1].isdigit()):
            raise InvalidLegToken("malformed media token")
        encoded_leg, expiry, mac = parts
        try:
            leg_id = base64.urlsafe_b64decode(encoded_leg + "=" * (-len(encoded_leg) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            raise InvalidLegToken("malformed media token") from None
        if not hmac.compare_digest(mac, self._mac(leg_id, expiry)):
            raise InvalidLegToken("media token signature mismatch")
        if int(expiry) < self._clock():
            raise InvalidLegToken("media token expired")
        return leg_id

    def _mac(self, leg_id: str, expiry: str) -> str:
        digest = hmac.new(self._key, f"{leg_id}|{expiry}".encode(), hashlib.sha256).digest()
        return _b64(digest)
