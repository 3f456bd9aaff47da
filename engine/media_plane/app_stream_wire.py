"""Call Control v2's media-streaming messages as callbridge sends them to an application's
websocket, and what the application sends back. Pure: bytes and samples in, bytes and values
out.

The format is Telnyx's "Stream call media over WebSocket" (its AsyncAPI page,
developers.telnyx.com/api-reference/websockets/stream-call-media-over-websocket; PROTOCOLS.md
section 3):

- ``{"event": "connected", "version": "1.0.0"}`` first, then ``start``: ``sequence_number`` "1",
  a top-level ``stream_id``, and ``start`` with ``call_control_id``, ``call_session_id``,
  ``from``, ``to``, ``client_state``, ``custom_parameters`` (an object) and ``media_format``
  (``encoding``, ``sample_rate`` and ``channels`` as JSON numbers);
- ``media``: ``media.track`` ``inbound`` (what the leg says) or ``outbound`` (what it hears),
  ``chunk`` (per track, from 1), ``timestamp`` (milliseconds of audio since the stream started,
  per track: Telnyx leaves the unit undocumented) and ``payload`` (base64 of the codec bytes, no
  RTP header); numeric-looking fields are strings, as in Telnyx's examples;
- ``mark`` (a mark the application sent, once the audio before it has played), ``error``
  (``100003`` malformed_frame, ``100004`` invalid_media: PROTOCOLS.md 3.2), and ``stop`` last
  (``stop.call_control_id``).

With ``stream_auth_token``, the token is in the ``connected`` frame too (PROTOCOLS.md 3.1; the
runtime also sends it as the ``x-telnyx-streaming-auth-token`` handshake header).

From the application: ``{"event": "media", "media": {"payload": "<base64>"}}`` (raw audio in the
bidirectional codec, 20 ms to 30 s of it per message), ``{"event": "mark", "mark": {"name"}}``
and ``{"event": "clear"}``, JSON text only (PROTOCOLS.md 3.3).

``user_id`` (a Telnyx account id) and ``tags`` are not sent: callbridge has neither.
"""

from __future__ import annotations

import binascii
from base64 import b64decode, b64encode
from dataclasses import dataclass
from typing import Final

import numpy as np
import orjson
from numpy.typing import NDArray

from media.codecs import AudioFormat, decode, encode

__all__ = [
    "AUTH_TOKEN_HEADER",
    "AppClear",
    "AppMark",
    "AppMedia",
    "AppMessage",
    "StreamWire",
    "WireError",
    "parse_app_message",
]

AUTH_TOKEN_HEADER: Final = "x-telnyx-streaming-auth-token"
FRAME_MS: Final = 20
# What one media message from the application may hold (PROTOCOLS.md 3.3: 20 ms to 30 s).
MAX_MESSAGE_MS: Final = 30_000


class WireError(ValueError):
    """A message from the application that is refused with an ``error`` frame."""

    def __init__(self, code: str, title: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.title, self.detail = code, title, detail


def _malformed(detail: str) -> WireError:
    return WireError("100003", "malformed_frame", detail)


def _invalid(detail: str) -> WireError:
    return WireError("100004", "invalid_media", detail)


@dataclass(frozen=True, slots=True)
class AppMedia:
    samples: NDArray[np.int16]  # decoded, at the bidirectional format's rate


@dataclass(frozen=True, slots=True)
class AppMark:
    name: str


@dataclass(frozen=True, slots=True)
class AppClear:
    pass


AppMessage = AppMedia | AppMark | AppClear


def parse_app_message(data: str | bytes, played: AudioFormat | None) -> AppMessage:
    """One message of the application; ``played`` is the bidirectional format (None: the stream
    is one way, and media is refused)."""
    if isinstance(data, bytes):
        raise _malformed("binary frames are not accepted; send JSON text")
    try:
        frame = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise _malformed("frame is not valid JSON") from None
    event = frame.get("event") if isinstance(frame, dict) else None
    if event == "clear":
        return AppClear()
    if event == "mark":
        mark = frame.get("mark")
        name = mark.get("name") if isinstance(mark, dict) else None
        if not isinstance(name, str):
            raise _malformed("mark frame lacks mark.name")
        return AppMark(name)
    if event != "media":
        raise _malformed(f"unknown event {str(event)[:40]!r}")
    media = frame.get("media")
    payload = media.get("payload") if isinstance(media, dict) else None
    if not isinstance(payload, str):
        raise _malformed("media frame lacks media.payload")
    if played is None:
        raise _invalid("stream_bidirectional_mode is not rtp: audio sent back is not played")
    try:
        raw = b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("media.payload is not valid base64") from None
    most = played.frame_bytes(MAX_MESSAGE_MS)
    if not raw or len(raw) > most or len(raw) % played.bytes_per_sample:
        raise _invalid(f"media must hold up to 30 s of {played.encoding.value} audio")
    return AppMedia(decode(played, raw))


class StreamWire:
    """One stream's messages to the application, numbered in the order they are made (the
    runtime sends them in that order)."""

    def __init__(
        self,
        stream_id: str,
        fmt: AudioFormat,
        call_control_id: str,
        *,
        auth_token: str | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.fmt = fmt
        self.call_control_id = call_control_id
        self.auth_token = auth_token
        self._seq = 0
        self._chunks = {"inbound": 0, "outbound": 0}

    def _next(self) -> str:
        self._seq += 1
        return str(self._seq)

    def connected(self) -> bytes:
        message: dict[str, object] = {"event": "connected", "version": "1.0.0"}
        if self.auth_token:
            message["connected"] = {AUTH_TOKEN_HEADER: self.auth_token}
        return orjson.dumps(message)

    def start(self, fields: dict[str, str | None], custom: dict[str, str]) -> bytes:
        start: dict[str, object] = dict(fields)
        start["custom_parameters"] = custom
        start["media_format"] = {
            "encoding": self.fmt.encoding.value,
            "sample_rate": self.fmt.sample_rate,
            "channels": 1,
        }
        return self._framed("start", start)

    def media(self, track: str, samples: NDArray[np.int16]) -> bytes:
        """One 20 ms frame of ``track`` (``inbound`` or ``outbound``), encoded."""
        chunk = self._chunks[track] = self._chunks[track] + 1
        payload = b64encode(encode(self.fmt, samples)).decode("ascii")
        return self._framed(
            "media",
            {
                "track": track,
                "chunk": str(chunk),
                "timestamp": str((chunk - 1) * FRAME_MS),
                "payload": payload,
            },
        )

    def mark(self, name: str) -> bytes:
        return self._framed("mark", {"name": name})

    def dtmf(self, digit: str) -> bytes:
        """A key the leg pressed: ``dtmf.digit`` (what pipecat's Telnyx serializer reads)."""
        return self._framed("dtmf", {"digit": digit})

    def error(self, error: WireError) -> bytes:
        return self._framed(
            "error", {"title": error.title, "code": error.code, "detail": error.detail}
        )

    def stop(self) -> bytes:
        return self._framed("stop", {"call_control_id": self.call_control_id})

    def _framed(self, event: str, body: dict[str, object]) -> bytes:
        return orjson.dumps(
            {
                "event": event,
                "sequence_number": self._next(),
                "stream_id": self.stream_id,
                event: body,
            }
        )
