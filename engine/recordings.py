"""Saved recordings: each is kept in the store with its organization, and fetched through
signed, expiring callbridge URLs instead of paths on the engine host.

A download URL is ``<public url>/v2/recordings/<id>/download?format=&expires=&signature=``:
``signature`` is an HMAC-SHA256 (base64url) over the id, format and expiry, keyed by a key
derived from ``CALLBRIDGE_SECRET_KEY`` (as the media tokens in adapters/leg_tokens.py are). It
works without an API token until ``expires`` (epoch seconds) and never after, as Telnyx's
``recording_urls`` do (valid 10 minutes by default: ``CALLBRIDGE_RECORDING_URL_TTL_S``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from engine.errors import NotFound, PermissionDenied
from engine.store.base import RecordingRecord, Store

CONTENT_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg"}


class LinkRefused(PermissionDenied):
    """A download link that is malformed, forged, tampered with or expired (403)."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class RecordingUrls:
    """Mints and checks signed download URLs.

    ``clock`` is the time the expiry is measured against (epoch seconds); tests replace it to
    cross an expiry without waiting."""

    def __init__(
        self,
        secret_key: str,
        public_url: str,
        *,
        ttl_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=b"callbridge/recording-urls", info=b"v1"
        ).derive(secret_key.encode())
        self._base = public_url.rstrip("/")
        self.ttl_s = ttl_s
        self.clock = clock

    def download_url(self, recording_id: str, fmt: str) -> str:
        expires = str(int(self.clock() + self.ttl_s))
        query = urlencode(
            {"format": fmt, "expires": expires, "signature": self._mac(recording_id, fmt, expires)}
        )
        return f"{self._base}/v2/recordings/{recording_id}/download?{query}"

    def check(self, recording_id: str, fmt: str, expires: str, signature: str) -> None:
        """``LinkRefused`` unless the link was minted here for this recording and format and
        has not expired."""
        # ASCII only: str.isdigit also takes digits such as "²" that int() refuses.
        if not (expires.isascii() and expires.isdigit() and len(expires) <= 20) or not signature:
            raise LinkRefused("the download link is incomplete: it needs expires and signature")
        # compare_digest refuses non-ASCII text, and no link minted here holds any.
        if not (signature + recording_id + fmt).isascii() or not hmac.compare_digest(
            signature, self._mac(recording_id, fmt, expires)
        ):
            raise LinkRefused("the download link's signature does not match")
        if int(expires) < self.clock():
            raise LinkRefused(
                "the download link has expired; GET /v2/recordings/{id} gives a new one"
            )

    def _mac(self, recording_id: str, fmt: str, expires: str) -> str:
        message = f"{recording_id}|{fmt}|{expires}".encode()
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest())


@dataclass(frozen=True, slots=True)
class FinishedRecording:
    """What the runtime knows of a recording whose file was just completed."""

    org_id: int
    call_control_id: str
    call_leg_id: str
    call_session_id: str
    connection_id: str
    from_: str
    to: str
    format: str
    channels: str
    started_at: float
    ended_at: float
    duration_s: float
    path: Path  # under the recordings directory
    conference_id: str | None = None  # a conference's recording (call ids: its creator's)


class RecordingCatalog:
    """Keeps each finished recording in the store and says where to download it."""

    def __init__(self, store: Store, urls: RecordingUrls, recordings_dir: Path) -> None:
        self.store = store
        self.urls = urls
        self.recordings_dir = recordings_dir

    async def add(self, finished: FinishedRecording) -> tuple[str, str]:
        """Store the recording under a new id; return that id and its signed download URL.
        Raises the store's errors (nothing is kept then)."""
        record = RecordingRecord(
            id=str(uuid.uuid4()),
            org_id=finished.org_id,
            call_control_id=finished.call_control_id,
            call_leg_id=finished.call_leg_id,
            call_session_id=finished.call_session_id,
            connection_id=finished.connection_id,
            from_=finished.from_,
            to=finished.to,
            format=finished.format,
            channels=finished.channels,
            started_at=finished.started_at,
            ended_at=finished.ended_at,
            duration_ms=round(finished.duration_s * 1000),
            # Relative, so that the rows survive a move of the recordings directory.
            path=finished.path.resolve().relative_to(self.recordings_dir.resolve()).as_posix(),
            conference_id=finished.conference_id,
        )
        await self.store.add_recording(record)
        return record.id, self.urls.download_url(record.id, record.format)

    def file_of(self, record: RecordingRecord) -> Path:
        """The recording's file. A stored path that would leave the directory (callbridge never
        writes one) is NotFound rather than served."""
        root = self.recordings_dir.resolve()
        path = (root / record.path).resolve()
        if not path.is_relative_to(root):
            raise NotFound(f"recording {record.id} points outside the recordings directory")
        return path
