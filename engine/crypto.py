"""Secrets at rest and API tokens.

Provider auth tokens are encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from the
``cryptography`` package) under a key derived with HKDF-SHA256 from ``CALLBRIDGE_SECRET_KEY``.
API tokens are random and stored only as their SHA-256 digest: they carry 256 bits of entropy,
so a fast hash is enough and lets a lookup be one indexed query.
"""

from __future__ import annotations

import base64
import hashlib
import secrets

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from engine.errors import StorageError

TOKEN_PREFIX = "cbt_"


class SecretBox:
    """Encrypts and decrypts provider secrets for storage."""

    def __init__(self, secret_key: str) -> None:
        derived = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=b"callbridge/provider-secrets",
            info=b"fernet-v1",
        ).derive(secret_key.encode())
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode("ascii")).decode()
        except (InvalidToken, ValueError):
            # A different CALLBRIDGE_SECRET_KEY than the one the row was written with.
            raise StorageError(
                "a stored provider secret cannot be decrypted: was CALLBRIDGE_SECRET_KEY changed?"
            ) from None

    def __repr__(self) -> str:
        return "SecretBox(<hidden>)"


def new_api_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
