"""Ed25519 webhook signatures in Telnyx's scheme, one key per organization, rotatable.

callbridge's Call Control API imitates Telnyx, so its webhooks are signed the way Telnyx signs
its own: ``telnyx-signature-ed25519`` is the base64 Ed25519 signature of
``f"{timestamp}|".encode() + body`` and ``telnyx-timestamp`` is the Unix time in seconds.
An application verifies them with Telnyx's SDK and its organization's public key.

Each organization has its own key, so an event captured at one tenant's endpoint does not
verify at another's. Keys are derived, never stored: HKDF-SHA256 of ``CALLBRIDGE_SECRET_KEY``
with the organization id and a key version into a 32-byte seed. They are stable across
restarts, identical on every node that shares the secret, and a database leak reveals no
private key. The store keeps only each organization's version and when earlier versions were
retired; rotating bumps the version. Webhooks are signed with the current key from then on, and
a retired key stays published for a grace period so that receivers can switch without
rejecting anything.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from engine.store.base import Store

SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"
DEFAULT_GRACE_S = 24 * 3600.0


def org_signing_key(secret_key: str, org_id: int, version: int) -> Ed25519PrivateKey:
    """Organization ``org_id``'s key at ``version``: distinct for every (org, version) pair."""
    seed = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"callbridge/webhook-signing",
        info=f"ed25519-org-v1|{org_id}|{version}".encode(),
    ).derive(secret_key.encode())
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key_b64(private_key: Ed25519PrivateKey) -> str:
    raw = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return base64.b64encode(raw).decode("ascii")


def signed_message(timestamp: str, body: bytes) -> bytes:
    return timestamp.encode("ascii") + b"|" + body


def sign(private_key: Ed25519PrivateKey, body: bytes, timestamp: int) -> dict[str, str]:
    """The two headers that sign ``body`` at ``timestamp``."""
    stamp = str(int(timestamp))
    signature = private_key.sign(signed_message(stamp, body))
    return {
        SIGNATURE_HEADER: base64.b64encode(signature).decode("ascii"),
        TIMESTAMP_HEADER: stamp,
    }


def verify(public_key: bytes, body: bytes, signature: bytes, timestamp: str) -> bool:
    """Whether ``signature`` signs ``timestamp|body`` under the raw 32-byte ``public_key``."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            signature, signed_message(timestamp, body)
        )
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class PublishedKey:
    """One public key an organization's receivers should accept, and for how long."""

    version: int
    public_key: str  # base64 of the raw 32 bytes
    retired_at: float | None  # when it stopped signing; None for the current key
    valid_until: float | None  # when its grace period ends; None for the current key


class OrgSigningKeys:
    """Each organization's webhook-signing keys, derived from the secret key and the version
    the store keeps. ``grace_s`` is how long a retired key stays published."""

    def __init__(
        self,
        secret_key: str,
        store: Store,
        *,
        grace_s: float = DEFAULT_GRACE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if grace_s < 0:
            raise ValueError(f"grace_s must not be negative, got {grace_s}")
        self._secret = secret_key
        self._store = store
        self._grace = grace_s
        self._clock = clock

    async def signing_key(self, org_id: int) -> Ed25519PrivateKey:
        """The key that signs the organization's webhooks now."""
        # Read per use rather than cached: another node may have rotated since.
        keys = await self._store.signing_keys(org_id, retired_since=self._clock())
        return org_signing_key(self._secret, org_id, keys.version)

    async def published(self, org_id: int) -> list[PublishedKey]:
        """The current key first, then the retired keys still in their grace period, newest
        first."""
        now = self._clock()
        keys = await self._store.signing_keys(org_id, retired_since=now - self._grace)
        listed = [self._published(org_id, keys.version, None)]
        # A key retired exactly grace_s ago has just left its grace period.
        listed += [
            self._published(org_id, key.version, key.retired_at)
            for key in keys.retired
            if key.retired_at + self._grace > now
        ]
        return listed

    async def rotate(self, org_id: int) -> list[PublishedKey]:
        """Make a new key current; the one it replaces stays published for the grace period.
        NotFound for an unknown organization."""
        await self._store.rotate_signing_key(org_id, self._clock())
        return await self.published(org_id)

    def _published(self, org_id: int, version: int, retired_at: float | None) -> PublishedKey:
        return PublishedKey(
            version=version,
            public_key=public_key_b64(org_signing_key(self._secret, org_id, version)),
            retired_at=retired_at,
            valid_until=None if retired_at is None else retired_at + self._grace,
        )
