"""Telnyx media streaming wire format (bidirectional ``rtp`` mode), PROTOCOLS.md section 3.

Telnyx sends snake_case JSON text frames with decimal-string counters; ``stream_id`` is at the
top level, not inside ``start``. Outbound frames need no stream id (pipecat and the docs send
none), so the renderers ignore the one the ``StreamCodec`` interface passes.

Telnyx does not say whether L16 payloads are big- or little-endian (PROTOCOLS.md 3.4), so the byte
order is a per-leg setting of ``TelnyxStreamCodec``, big-endian (RTP's network order) by default.
"""

from __future__ import annotations

from typing import Any

import orjson
import pybase64

from adapters.streams import (
    StreamConnected,
    StreamDtmf,
    StreamError,
    StreamMark,
    StreamMedia,
    StreamMessage,
    StreamProtocolError,
    StreamStart,
    StreamStop,
    audio_format,
    counter,
    load_frame,
    optional_text,
    payload_bytes,
    section,
    string_map,
    text_field,
)
from media.codecs import ByteOrder

__all__ = [
    "AUTH_TOKEN_HEADER",
    "TelnyxStreamCodec",
    "parse_message",
    "render_clear",
    "render_mark",
    "render_media",
]

# Header (and key inside the connected frame) carrying the dial/streaming_start stream_auth_token.
AUTH_TOKEN_HEADER = "x-telnyx-streaming-auth-token"

_CLEAR = orjson.dumps({"event": "clear"}).decode()


def parse_message(text: str | bytes, l16_byte_order: ByteOrder = "big") -> StreamMessage:
    """Parse one frame Telnyx sent on a media stream."""
    event, frame = load_frame(text)
    # Media is ~50 frames a second per leg, everything else a handful per call: test it first.
    if event == "media":
        media = section(frame, "media", event)
        return StreamMedia(
            payload=payload_bytes(media, event),
            sequence=counter(frame, "sequence_number", event),
            chunk=counter(media, "chunk", event),
            timestamp=counter(media, "timestamp", event),
            track=optional_text(media, "track", event) or "inbound",
        )
    if event == "mark":
        # Shape unconfirmed by Telnyx (PROTOCOLS.md 3.2); read like Twilio's mark.name.
        return StreamMark(text_field(section(frame, "mark", event), "name", event))
    if event == "dtmf":
        return StreamDtmf(text_field(section(frame, "dtmf", event), "digit", event))
    if event == "start":
        return _parse_start(frame, l16_byte_order)
    if event == "connected":
        connected = frame.get("connected")
        token = (
            optional_text(connected, AUTH_TOKEN_HEADER, event)
            if isinstance(connected, dict)
            else None
        )
        return StreamConnected(version=optional_text(frame, "version", event), auth_token=token)
    if event == "stop":
        return StreamStop()
    if event == "error":
        error = section(frame, "error", event)
        # Error frames are diagnostics: a missing part should not hide the rest of the report.
        return StreamError(
            code=optional_text(error, "code", event) or "",
            title=optional_text(error, "title", event) or "",
            detail=optional_text(error, "detail", event) or "",
        )
    raise StreamProtocolError(f"unknown Telnyx stream event {event[:40]!r}")


def _parse_start(frame: dict[str, Any], l16_byte_order: ByteOrder) -> StreamStart:
    start = section(frame, "start", "start")
    stream_id = optional_text(frame, "stream_id", "start") or optional_text(
        start, "stream_id", "start"
    )
    if stream_id is None:
        raise StreamProtocolError("start frame lacks the 'stream_id' string")
    return StreamStart(
        stream_id=stream_id,
        call_id=text_field(start, "call_control_id", "start"),
        fmt=audio_format(
            section(start, "media_format", "start"), "sample_rate", "start", l16_byte_order
        ),
        custom_parameters=_custom_parameters(start.get("custom_parameters")),
        client_state=optional_text(start, "client_state", "start"),
        tracks=(),
    )


def _custom_parameters(value: object) -> dict[str, str]:
    """``custom_parameters`` as a flat map.

    The start frame documents an object; streaming_start takes a list of ``{name, value}``. Which
    of the two the frame carries in practice is unconfirmed, so both are read.
    """
    if isinstance(value, list):
        pairs: dict[str, str] = {}
        for item in value:
            if not (
                isinstance(item, dict)
                and isinstance(item.get("name"), str)
                and isinstance(item.get("value"), str)
            ):
                raise StreamProtocolError("start frame has a malformed 'custom_parameters' entry")
            pairs[item["name"]] = item["value"]
        return pairs
    return string_map(value, "custom_parameters", "start")


def render_media(payload: bytes) -> str:
    """Outbound audio in the leg's ``stream_bidirectional_codec``, 20 ms to 30 s per message."""
    return orjson.dumps(
        {"event": "media", "media": {"payload": pybase64.b64encode_as_string(payload)}}
    ).decode()


def render_mark(name: str) -> str:
    """A mark Telnyx returns once the media sent before it has played (or been cleared)."""
    return orjson.dumps({"event": "mark", "mark": {"name": name}}).decode()


def render_clear() -> str:
    """Stop playback and drop queued media; queued marks come back."""
    return _CLEAR


class TelnyxStreamCodec:
    """The ``StreamCodec`` for a Telnyx leg; ``l16_byte_order`` is the leg's L16 setting."""

    __slots__ = ("l16_byte_order",)

    def __init__(self, l16_byte_order: ByteOrder = "big") -> None:
        # Checked here so a bad leg setting fails when the leg is set up, not on its first frame.
        if l16_byte_order not in ("big", "little"):
            raise ValueError(f"l16_byte_order must be 'big' or 'little', not {l16_byte_order!r}")
        self.l16_byte_order: ByteOrder = l16_byte_order

    def parse(self, text: str | bytes) -> StreamMessage:
        return parse_message(text, self.l16_byte_order)

    def render_media(self, stream_id: str, payload: bytes) -> str:
        return render_media(payload)

    def render_mark(self, stream_id: str, name: str) -> str:
        return render_mark(name)

    def render_clear(self, stream_id: str) -> str:
        return render_clear()
