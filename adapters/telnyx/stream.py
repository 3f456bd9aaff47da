"""Telnyx media streaming wire format (bidirectional ``rtp`` mode), PROTOCOLS.md section 3.

Telnyx sends snake_case JSON text frames with decimal-string counters; ``stream_id`` is at the
top level, not inside ``start``. Outbound frames need no stream id (pipecat and the docs send
none), so the renderers ignore the one the ``StreamCodec`` interface passes.

Telnyx does not say whether L16 payloads are big- or little-endian (PROTOCOLS.md 3.4), so the byte
order is a per-leg setting of ``TelnyxStreamCodec``, big-endian (RTP's network order) by default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pybase64

from adapters.streams import (
    BadFrame,
    StreamConnected,
    StreamDtmf,
    StreamError,
    StreamMark,
    StreamMedia,
    StreamMessage,
    StreamStart,
    StreamStop,
    audio_format,
    loose_text,
    media_message,
    optional_text,
    read_frame,
    section,
    string_map,
    text_field,
    unknown,
)
from media.codecs import PCMU_8K, AudioFormat, ByteOrder

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

_CLEAR = orjson.dumps({"event": "clear"})


def parse_message(text: str | bytes, l16_byte_order: ByteOrder = "big") -> StreamMessage:
    """Parse one frame Telnyx sent on a media stream."""
    read = read_frame(text)
    if isinstance(read, StreamMedia):  # the usual media frame, ~50 a second per leg
        return read
    event, frame = read
    if event == "media":  # of another shape: checked, field by field
        return media_message(frame, "sequence_number")
    if event == "mark":
        # Shape unconfirmed by Telnyx (PROTOCOLS.md 3.2); read like Twilio's mark.name.
        return StreamMark(text_field(section(frame, "mark", event), "name", event))
    if event == "dtmf":
        return StreamDtmf(text_field(section(frame, "dtmf", event), "digit", event))
    if event == "start":
        return _parse_start(frame, l16_byte_order)
    if event == "connected":
        return _parse_connected(frame)
    if event == "stop":
        return StreamStop()
    if event == "error":
        return _parse_error(frame)
    # The AsyncAPI page (developers.telnyx.com/api-reference/websockets/
    # stream-call-media-over-websocket) lists connected, start, media, stop, mark, dtmf and
    # error; anything else is newer than us.
    return unknown(event)


def _parse_connected(frame: dict[str, Any]) -> StreamConnected:
    """The first frame; nothing in it is worth a frame, so odd shapes read as absent."""
    connected = frame.get("connected")
    token = connected.get(AUTH_TOKEN_HEADER) if isinstance(connected, dict) else None
    return StreamConnected(
        version=loose_text(frame.get("version")),
        # Only a string can be the token we issued; anything else is no token (find_leg says so).
        auth_token=token if isinstance(token, str) and token else None,
    )


def _parse_error(frame: dict[str, Any]) -> StreamError:
    """Error frames are diagnostics, read as far as they go and never refused: a code sent as a
    number, extra keys or a missing part must not hide the rest of the report."""
    error = frame.get("error")
    if not isinstance(error, dict):
        error = {}
    return StreamError(
        code=loose_text(error.get("code")) or "",
        title=loose_text(error.get("title")) or "",
        detail=loose_text(error.get("detail")) or "",
    )


def _parse_start(frame: dict[str, Any], l16_byte_order: ByteOrder) -> StreamStart:
    start = section(frame, "start", "start")
    stream_id = optional_text(frame, "stream_id", "start") or optional_text(
        start, "stream_id", "start"
    )
    if stream_id is None:
        raise BadFrame("missing_field", "start frame lacks the 'stream_id' string", "start")
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
                reason = "start frame has a malformed 'custom_parameters' entry"
                raise BadFrame("bad_field", reason, "start")
            pairs[item["name"]] = item["value"]
        return pairs
    return string_map(value, "custom_parameters", "start")


_MEDIA_HEAD = b'{"event":"media","media":{"payload":"'
_MEDIA_TAIL = b'"}}'


def render_media(payload: bytes) -> bytes:
    """Outbound audio in the leg's ``stream_bidirectional_codec``, 20 ms to 30 s per message.

    Joined from fixed parts rather than dumped (base64 needs no JSON escaping): one per frame
    per leg, and a third of the cost of ``orjson.dumps`` on a nested dict here.
    """
    return _MEDIA_HEAD + pybase64.b64encode(payload) + _MEDIA_TAIL


def render_mark(name: str) -> bytes:
    """A mark Telnyx returns once the media sent before it has played (or been cleared)."""
    return orjson.dumps({"event": "mark", "mark": {"name": name}})


def render_clear() -> bytes:
    """Stop playback and drop queued media; queued marks come back."""
    return _CLEAR


class TelnyxStreamCodec:
    """The ``StreamCodec`` for a Telnyx leg; ``l16_byte_order`` is the leg's L16 setting and
    ``outbound`` the format declared as the stream's ``stream_bidirectional_codec``."""

    __slots__ = ("_outbound", "l16_byte_order")

    def __init__(self, l16_byte_order: ByteOrder = "big", outbound: AudioFormat = PCMU_8K) -> None:
        # Checked here so a bad leg setting fails when the leg is set up, not on its first frame.
        if l16_byte_order not in ("big", "little"):
            raise ValueError(f"l16_byte_order must be 'big' or 'little', not {l16_byte_order!r}")
        self.l16_byte_order: ByteOrder = l16_byte_order
        self._outbound = outbound

    @property
    def outbound(self) -> AudioFormat:
        return self._outbound

    @property
    def provider(self) -> str:
        return "telnyx"

    def parse(self, text: str | bytes) -> StreamMessage:
        return parse_message(text, self.l16_byte_order)

    def media_renderer(self, stream_id: str) -> Callable[[bytes], bytes]:
        return render_media

    def render_mark(self, stream_id: str, name: str) -> bytes:
        return render_mark(name)

    def render_clear(self, stream_id: str) -> bytes:
        return render_clear()
