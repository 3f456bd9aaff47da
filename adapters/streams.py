"""Provider-neutral media-stream messages and the one codec seam the engine talks through.

Each provider's stream module (``adapters.twilio.stream``, ``adapters.telnyx.stream``) turns its
JSON text frames into the messages below and renders outbound frames; the engine holds a
``StreamCodec`` per leg and never names a provider. Parsing is strict: anything malformed raises
``StreamProtocolError``, whose ``reason`` and ``close_code`` are ready to close the websocket with.

The small helpers at the bottom (``load_frame``, ``counter``, ...) are the shared toolkit of the
provider codecs; they sit on the media hot path, so they avoid anything slower than a dict lookup
besides the orjson parse and the pybase64 decode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

import orjson
import pybase64

from media.codecs import AudioFormat, ByteOrder, parse_format
from media.errors import UnsupportedEncoding

__all__ = [
    "CLOSE_INVALID_DATA",
    "CLOSE_UNSUPPORTED_DATA",
    "StreamCodec",
    "StreamConnected",
    "StreamDtmf",
    "StreamError",
    "StreamMark",
    "StreamMedia",
    "StreamMessage",
    "StreamProtocolError",
    "StreamStart",
    "StreamStop",
]

# RFC 6455 close codes: 1007 = frame content inconsistent with the message type (bad JSON, bad
# fields), 1003 = data the endpoint cannot accept (a media format we cannot mix).
CLOSE_INVALID_DATA = 1007
CLOSE_UNSUPPORTED_DATA = 1003

# A close frame's reason must fit in 123 bytes (125-byte control payload minus the 2-byte code).
_MAX_REASON_BYTES = 119


@dataclass(frozen=True, slots=True)
class StreamConnected:
    """First frame of every stream. ``auth_token`` is Telnyx's echo of ``stream_auth_token``."""

    version: str | None = None
    auth_token: str | None = None


@dataclass(frozen=True, slots=True)
class StreamStart:
    """The stream's identity and audio format; arrives once, before any media."""

    stream_id: str
    call_id: str
    fmt: AudioFormat
    custom_parameters: dict[str, str]
    client_state: str | None
    tracks: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StreamMedia:
    """One chunk of audio in the stream's format. Counters are None when the provider omits them."""

    payload: bytes
    sequence: int | None
    chunk: int | None
    timestamp: int | None
    track: str


@dataclass(frozen=True, slots=True)
class StreamDtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class StreamMark:
    """A mark echoed back: the audio sent before it has played, or a ``clear`` flushed it."""

    name: str


@dataclass(frozen=True, slots=True)
class StreamStop:
    """The provider ended the stream; no further frames follow."""


@dataclass(frozen=True, slots=True)
class StreamError:
    """An error the provider reports in-band (Telnyx only), e.g. code ``"100005"``."""

    code: str
    title: str
    detail: str


StreamMessage: TypeAlias = (
    StreamConnected | StreamStart | StreamMedia | StreamDtmf | StreamMark | StreamStop | StreamError
)


class StreamProtocolError(ValueError):
    """A frame that breaks the provider's stream protocol.

    ``reason`` is short enough for a websocket close frame; ``close_code`` is the RFC 6455 code
    to close with (1007 malformed data, 1003 unsupported media format).
    """

    def __init__(self, reason: str, close_code: int = CLOSE_INVALID_DATA) -> None:
        encoded = reason.encode("utf-8")
        if len(encoded) > _MAX_REASON_BYTES:
            # Cut on a character boundary so the close frame stays valid UTF-8.
            reason = encoded[:_MAX_REASON_BYTES].decode("utf-8", "ignore")
        super().__init__(reason)
        self.reason = reason
        self.close_code = close_code


class StreamCodec(Protocol):
    """One provider's stream wire format: the engine's only dispatch point for media frames."""

    def parse(self, text: str | bytes) -> StreamMessage: ...

    def render_media(self, stream_id: str, payload: bytes) -> str: ...

    def render_mark(self, stream_id: str, name: str) -> str: ...

    def render_clear(self, stream_id: str) -> str: ...


# --- shared parse toolkit -------------------------------------------------------------------


def _short(value: object) -> str:
    """A bounded repr for error reasons, so a hostile frame cannot inflate them."""
    text = repr(value)
    return text if len(text) <= 32 else text[:29] + "..."


def load_frame(text: str | bytes) -> tuple[str, dict[str, Any]]:
    """Parse one JSON text frame into (event name, object)."""
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise StreamProtocolError("frame is not valid JSON") from None
    if not isinstance(frame, dict):
        raise StreamProtocolError("frame is not a JSON object")
    event = frame.get("event")
    if not isinstance(event, str):
        raise StreamProtocolError("frame has no 'event' string")
    return event, frame


def section(frame: dict[str, Any], key: str, event: str) -> dict[str, Any]:
    """The nested object ``frame[key]`` that an event of this kind must carry."""
    value = frame.get(key)
    if not isinstance(value, dict):
        raise StreamProtocolError(f"{event} frame lacks the '{key}' object")
    return value


def text_field(obj: dict[str, Any], key: str, event: str) -> str:
    """A required string field."""
    value = obj.get(key)
    if not isinstance(value, str):
        raise StreamProtocolError(f"{event} frame lacks the '{key}' string")
    return value


def optional_text(obj: dict[str, Any], key: str, event: str) -> str | None:
    """An optional string field; empty strings count as absent (Telnyx sends ``""`` for unset)."""
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise StreamProtocolError(f"{event} frame has a non-string '{key}'")
    return value


def counter(obj: dict[str, Any], key: str, event: str) -> int | None:
    """A counter the providers send as a decimal string ("12"); absent -> None."""
    value = obj.get(key)
    if value is None:
        return None
    # isascii() first: str.isdigit() alone accepts digits like "²" that int() refuses.
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    # Tolerate a JSON number too, but never a bool (bool is an int subclass).
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise StreamProtocolError(f"{event} frame has a non-numeric '{key}': {_short(value)}")


def payload_bytes(media: dict[str, Any], event: str) -> bytes:
    """The base64 ``payload`` of a media object, strictly decoded."""
    encoded = media.get("payload")
    if not isinstance(encoded, str):
        raise StreamProtocolError(f"{event} frame lacks the 'payload' string")
    try:
        return pybase64.b64decode(encoded, validate=True)
    except ValueError:
        raise StreamProtocolError(f"{event} payload is not valid base64") from None


def string_map(value: object, key: str, event: str) -> dict[str, str]:
    """A flat string->string object such as ``customParameters``; absent -> empty."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise StreamProtocolError(f"{event} frame has a '{key}' that is not a string map")
    return value


def audio_format(
    media_format: dict[str, Any], rate_key: str, event: str, byte_order: ByteOrder = "big"
) -> AudioFormat:
    """Turn a start frame's media-format object into an AudioFormat, or refuse the stream.

    ``byte_order`` applies to L16 only and comes from the leg's settings, not the wire.
    """
    encoding = media_format.get("encoding")
    # Both providers always send rate and channels; if one is ever omitted, the classic
    # telephony defaults (8 kHz mono) are the only reading that makes sense.
    sample_rate = media_format.get(rate_key, 8000)
    channels = media_format.get("channels", 1)
    if not isinstance(encoding, str):
        raise StreamProtocolError(f"{event} media format lacks the 'encoding' string")
    for name, number in ((rate_key, sample_rate), ("channels", channels)):
        if not isinstance(number, int) or isinstance(number, bool):
            raise StreamProtocolError(f"{event} media format has a non-integer '{name}'")
    try:
        return parse_format(encoding, sample_rate, channels, byte_order=byte_order)
    except UnsupportedEncoding as exc:
        # The media error already names the encoding, rate or channel count at fault.
        raise StreamProtocolError(str(exc), CLOSE_UNSUPPORTED_DATA) from None
