"""Ed25519 webhook signatures in Telnyx's scheme, for the webhooks callbridge sends.

callbridge's Call Control API imitates Telnyx, so its webhooks are signed the way Telnyx signs
its own: ``telnyx-signature-ed25519`` is the base64 Ed25519 signature of
``f"{timestamp}|".encode() + body`` and ``telnyx-timestamp`` is the Unix time in seconds.
An application verifies them with Telnyx's SDK and callbridge's public key.

The signing key is derived from ``CALLBRIDGE_SECRET_KEY`` (HKDF-SHA256 into a 32-byte seed),
so it is stable across restarts and identical on every node that shares the secret, with no
key file to lose.
"""

from __future__ import annotations

import base64

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"


def signing_key_from_secret(secret_key: str) -> Ed25519PrivateKey:
    seed = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"callbridge/webhook-signing",
        info=b"ed25519-v1",
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
