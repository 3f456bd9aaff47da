"""Provider-neutral media-stream messages and the one codec seam the engine talks through.

Each provider's stream module (``adapters.twilio.stream``, ``adapters.telnyx.stream``) turns its
JSON text frames into the messages below and renders outbound frames; the engine holds a
``StreamCodec`` per leg and never names a provider.

Parsing is forward compatible, because both providers add events and fields over time
(PROTOCOLS.md gotcha 13): unknown fields are ignored and an unknown event becomes
``StreamUnknown``. A frame that cannot be read raises ``BadFrame``, which names one of the fixed
``DROP_REASONS`` and the frame's event; the media session drops such a frame and carries on
(``adapters.stream_drops``), except a bad ``start``, without which the stream cannot be bound to
a leg. ``StreamProtocolError`` is the stream-level refusal: its ``reason`` and ``close_code`` are
ready to close the websocket with.

The small helpers at the bottom (``read_frame``, ``counter``, ...) are the shared toolkit of the
provider codecs; they sit on the media hot path, so they avoid anything slower than a dict lookup
besides the orjson parse and the pybase64 decode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeAlias, get_args

import orjson
import pybase64

from media.codecs import AudioFormat, ByteOrder
from media.inbound import MediaFormat

__all__ = [
    "CLOSE_INVALID_DATA",
    "CLOSE_UNSUPPORTED_DATA",
    "DROP_REASONS",
    "BadFrame",
    "DropReason",
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
    "StreamUnknown",
    "media_message",
    "read_frame",
]

# RFC 6455 close codes: 1007 = frame content inconsistent with the message type (bad JSON, bad
# fields), 1003 = data the endpoint cannot accept (a media format we cannot mix).
CLOSE_INVALID_DATA = 1007
CLOSE_UNSUPPORTED_DATA = 1003

# A close frame's reason must fit in 123 bytes (125-byte control payload minus the 2-byte code).
_MAX_REASON_BYTES = 119

# Why a frame was dropped: a fixed set, because each is a Prometheus label value (raw frame text
# never is). ``before_start`` and ``repeated_start`` are readable frames at the wrong moment.
DropReason: TypeAlias = Literal[
    "bad_json",  # not JSON at all (or not UTF-8)
    "not_object",  # JSON, but not an object
    "missing_event",  # an object without an "event" string
    "missing_field",  # a field this event needs is absent or of the wrong type
    "bad_field",  # a field is present but unusable (a counter that is not a number, ...)
    "bad_base64",  # a media payload that is not base64
    "unknown_event",  # an event this version does not know (not an error: newer protocol)
    "before_start",  # media before the stream's start frame
    "repeated_start",  # a second start frame on one stream
    "backlog_full",  # waited too long behind a start being bound (adapters/stream_session.py)
]
DROP_REASONS: tuple[DropReason, ...] = get_args(DropReason)


@dataclass(frozen=True, slots=True)
class StreamConnected:
    """First frame of every stream. ``auth_token`` is Telnyx's echo of ``stream_auth_token``."""

    version: str | None = None
    auth_token: str | None = None


@dataclass(frozen=True, slots=True)
class StreamStart:
    """The stream's identity and announced audio format; arrives once, before any media.

    ``fmt`` is what the provider says it streams, not yet judged: a codec callbridge cannot take
    must not stop the stream from being bound to its leg, or nobody would end that leg.
    """

    stream_id: str
    call_id: str
    fmt: MediaFormat
    custom_parameters: dict[str, str]
    client_state: str | None
    tracks: tuple[str, ...]


# Not frozen, unlike the other messages: a frozen dataclass's __init__ sets each field through
# object.__setattr__, 1.3 us more per media frame (50 a second per leg) on this machine.
@dataclass(slots=True)
class StreamMedia:
    """One chunk of audio in the stream's format.

    ``chunk`` is the media's own counter (None when the provider omits it); ``sequence`` the
    message counter, read only when there is no ``chunk`` (it is the fallback that puts media back
    in order, ``adapters/media_order.py``). The media ``timestamp`` is not read: nothing uses it
    (Telnyx leaves its units undocumented, PROTOCOLS.md 3.2), so a value we would not use cannot
    cost a frame.
    """

    payload: bytes
    chunk: int | None
    sequence: int | None
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


@dataclass(frozen=True, slots=True)
class StreamUnknown:
    """A frame whose event this version does not know; ignored, because providers add events.

    ``event`` is cut to 40 characters so a hostile frame cannot inflate what is logged.
    """

    event: str


StreamMessage: TypeAlias = (
    StreamConnected
    | StreamStart
    | StreamMedia
    | StreamDtmf
    | StreamMark
    | StreamStop
    | StreamError
    | StreamUnknown
)


class StreamProtocolError(ValueError):
    """A stream callbridge closes: a ``start`` it cannot bind, a flood of unusable frames.

    One unusable frame is a ``BadFrame``, which the session drops instead. ``reason`` is short
    enough for a websocket close frame; ``close_code`` is the RFC 6455 code to close with (1007
    malformed data, 1003 unsupported media format).
    """

    def __init__(self, reason: str, close_code: int = CLOSE_INVALID_DATA) -> None:
        encoded = reason.encode("utf-8")
        if len(encoded) > _MAX_REASON_BYTES:
            # Cut on a character boundary so the close frame stays valid UTF-8.
            reason = encoded[:_MAX_REASON_BYTES].decode("utf-8", "ignore")
        super().__init__(reason)
        self.reason = reason
        self.close_code = close_code


class BadFrame(StreamProtocolError):
    """One frame that cannot be read: the session drops it, and closes only for a flood.

    ``kind`` is one of ``DROP_REASONS`` (a metric label); ``event`` is the frame's event name
    when the frame got that far (``None`` for bad JSON), so a bad ``start`` can stay fatal.
    """

    def __init__(self, kind: DropReason, reason: str, event: str | None = None) -> None:
        super().__init__(reason, CLOSE_INVALID_DATA)
        self.kind: DropReason = kind
        self.event = event


class StreamCodec(Protocol):
    """One provider's stream wire format: the engine's only dispatch point for media frames.

    ``outbound`` is the format the provider decodes what we send in. It is declared by us (Telnyx's
    ``stream_bidirectional_codec``) or fixed by the provider (Twilio: mu-law), and it is
    independent of the format the provider streams to us, which the ``start`` frame announces.
    """

    @property
    def outbound(self) -> AudioFormat: ...

    @property
    def provider(self) -> str:
        """The provider's catalog slug (``"twilio"``, ``"telnyx"``): a bounded metric label."""
        ...

    def parse(self, text: str | bytes) -> StreamMessage: ...

    # Rendered as UTF-8 bytes: a server writes them as a text frame without another copy.
    def media_renderer(self, stream_id: str) -> Callable[[bytes], bytes]:
        """The stream's outbound media frames, payload -> frame; made once per stream, because
        it runs once per frame (whatever depends on the stream alone is done here)."""
        ...

    def render_mark(self, stream_id: str, name: str) -> bytes: ...

    def render_clear(self, stream_id: str) -> bytes: ...


# --- shared parse toolkit -------------------------------------------------------------------


def _short(value: object) -> str:
    """A bounded repr for error reasons, so a hostile frame cannot inflate them."""
    text = repr(value)
    return text if len(text) <= 32 else text[:29] + "..."


def read_frame(text: str | bytes) -> StreamMedia | tuple[str, dict[str, Any]]:
    """Parse one JSON text frame: a ``media`` frame of the usual shape as its message, anything
    else as (event name, object) for the provider's parser (``media_message`` for other media).

    The hot path of every leg (one frame per 20 ms), so the usual media frame (a string
    ``payload``, a string ``chunk`` of ASCII digits, a non-empty string ``track``) is read here in
    one call, with plain type checks: exactly what ``media_message`` makes of it. A frame that
    is not of that shape, or whose payload is not valid base64, goes the checked way and is
    accepted or refused there as before.
    """
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        # orjson also refuses bytes that are not UTF-8 with this error.
        raise BadFrame("bad_json", "frame is not valid JSON") from None
    try:
        # Subscripts, not .get: cheaper, and only a dict (orjson makes no other mapping) takes a
        # string subscript; anything missing or of another type is a KeyError or a TypeError.
        if frame["event"] == "media":
            media = frame["media"]
            encoded, chunk, track = media["payload"], media["chunk"], media["track"]
            if (
                type(encoded) is str
                and type(chunk) is str
                and chunk.isdigit()
                and chunk.isascii()
                and type(track) is str
                and track
            ):
                # (altchars, validate) by position: keyword parsing costs more than the decode.
                payload = pybase64.b64decode(encoded, None, True)
                return StreamMedia(payload, int(chunk), None, track)
    except (KeyError, TypeError, ValueError):
        pass  # not the usual shape, or not base64 (ValueError): the checked way says which
    return _event_of(frame)


def _event_of(frame: object) -> tuple[str, dict[str, Any]]:
    """(event name, object) of a parsed frame that must be an object with an event string."""
    if type(frame) is not dict:
        raise BadFrame("not_object", "frame is not a JSON object")
    event = frame.get("event")
    if not isinstance(event, str):
        raise BadFrame("missing_event", "frame has no 'event' string")
    return event, frame


def section(frame: dict[str, Any], key: str, event: str) -> dict[str, Any]:
    """The nested object ``frame[key]`` that an event of this kind must carry."""
    value = frame.get(key)
    if not isinstance(value, dict):
        raise BadFrame("missing_field", f"{event} frame lacks the '{key}' object", event)
    return value


def text_field(obj: dict[str, Any], key: str, event: str) -> str:
    """A required string field."""
    value = obj.get(key)
    if not isinstance(value, str):
        raise BadFrame("missing_field", f"{event} frame lacks the '{key}' string", event)
    return value


def optional_text(obj: dict[str, Any], key: str, event: str) -> str | None:
    """An optional string field; empty strings count as absent (Telnyx sends ``""`` for unset)."""
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadFrame("bad_field", f"{event} frame has a non-string '{key}'", event)
    return value


def loose_text(value: object, limit: int = 200) -> str | None:
    """A string from a frame that is only informative (a version, an error's title): anything
    but a string or a number reads as absent, and it is cut to ``limit`` characters, so an
    unexpected shape never costs the frame and a hostile one cannot inflate the logs."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str) or not value:
        return None
    return value[:limit]


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
    raise BadFrame("bad_field", f"{event} frame has a non-numeric '{key}': {_short(value)}", event)


def media_message(frame: dict[str, Any], sequence_key: str) -> StreamMedia:
    """A ``media`` frame of either provider: ``{"media": {"payload", "chunk", "track", ...}}``
    with the message counter under ``sequence_key`` at the top level.

    ``read_frame`` reads the usual shape itself; this reads any shape, accepting or refusing
    each field with the checked helpers.
    """
    media = frame.get("media")
    if type(media) is not dict:
        media = section(frame, "media", "media")  # raises
    payload = payload_bytes(media, "media")
    chunk: int | None
    raw_chunk = media.get("chunk")
    if type(raw_chunk) is str and raw_chunk.isdigit() and raw_chunk.isascii():
        chunk = int(raw_chunk)
    else:
        chunk = counter(media, "chunk", "media")
    track = media.get("track")
    if type(track) is not str or not track:
        track = optional_text(media, "track", "media") or "inbound"
    sequence = None if chunk is not None else counter(frame, sequence_key, "media")
    return StreamMedia(payload, chunk, sequence, track)


def payload_bytes(media: dict[str, Any], event: str) -> bytes:
    """The base64 ``payload`` of a media object, strictly decoded."""
    encoded = media.get("payload")
    if not isinstance(encoded, str):
        raise BadFrame("missing_field", f"{event} frame lacks the 'payload' string", event)
    try:
        return pybase64.b64decode(encoded, validate=True)
    except ValueError:
        # binascii.Error, what a bad alphabet or padding raises, is a ValueError.
        raise BadFrame("bad_base64", f"{event} payload is not valid base64", event) from None


def string_map(value: object, key: str, event: str) -> dict[str, str]:
    """A flat string->string object such as ``customParameters``; absent -> empty."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise BadFrame("bad_field", f"{event} frame has a '{key}' that is not a string map", event)
    return value


def unknown(event: str) -> StreamUnknown:
    """The message for an event this version does not know."""
    return StreamUnknown(event[:40])


def audio_format(
    media_format: dict[str, Any], rate_key: str, event: str, byte_order: ByteOrder = "big"
) -> MediaFormat:
    """A start frame's media-format object as announced; whether callbridge can decode it is
    decided after the stream is bound to its leg (``media.inbound.inbound_decoder``).

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
    return MediaFormat(encoding[:40], sample_rate, channels, byte_order)
