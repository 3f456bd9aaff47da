"""Requests one node sends another on its own behalf (a leg handed over: engine/cluster/
handover.py), signed with the deployment's secret key.

Every node of a deployment has the same ``CALLBRIDGE_SECRET_KEY`` (the secrets stored
encrypted need it), so it is what proves a request came from a node: an HMAC-SHA256, under a
key derived from it for this use alone, of the time, the method, the path and the body's
SHA-256, sent as ``X-Callbridge-Node-Signature: t=<unix seconds>,v1=<hex>`` and accepted within
``MAX_SKEW_S`` of the receiver's clock. Forwarded client requests (engine/cluster/forward.py)
are not signed: the owner authenticates the client's own credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable

from engine.errors import AuthenticationError

HEADER = "X-Callbridge-Node-Signature"
MAX_SKEW_S = 60  # nodes' clocks are NTP-synchronised; a replay later than this is refused


class NodeAuth:
    def __init__(self, secret_key: str, clock: Callable[[], float] = time.time) -> None:
        self._key = hmac.new(secret_key.encode(), b"callbridge node requests", "sha256").digest()
        self._clock = clock

    def sign(self, method: str, path: str, body: bytes) -> dict[str, str]:
        """The header that makes ``method path`` with ``body`` a node's request."""
        at = str(int(self._clock()))
        return {HEADER: f"t={at},v1={self._mac(at, method, path, body)}"}

    def verify(self, method: str, path: str, body: bytes, header: str | None) -> None:
        """``AuthenticationError`` unless ``header`` signs this request, recently."""
        fields = dict(part.split("=", 1) for part in (header or "").split(",") if "=" in part)
        at, mac = fields.get("t", ""), fields.get("v1", "")
        if not at.isdigit() or abs(self._clock() - int(at)) > MAX_SKEW_S:
            raise AuthenticationError("a node request needs a current X-Callbridge-Node-Signature")
        if not hmac.compare_digest(mac, self._mac(at, method, path, body)):
            raise AuthenticationError("the node request's signature does not match")

    def _mac(self, at: str, method: str, path: str, body: bytes) -> str:
        signed = f"{at}\n{method.upper()}\n{path}\n{hashlib.sha256(body).hexdigest()}"
        return hmac.new(self._key, signed.encode(), "sha256").hexdigest()
