"""Twilio Media Streams wire format (bidirectional ``<Connect><Stream>``), PROTOCOLS.md section 5.

Twilio sends camelCase JSON text frames whose counters are decimal strings. What we send back
must have exactly the documented keys: Twilio answers any extra key with error 31951 and drops
the message, so the renderers build fixed shapes and nothing else.
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
from media.codecs import PCMU_8K, AudioFormat

__all__ = ["TwilioStreamCodec", "parse_message", "render_clear", "render_mark", "render_media"]


def parse_message(text: str | bytes) -> StreamMessage:
    """Parse one frame Twilio sent on a media stream."""
    read = read_frame(text)
    if isinstance(read, StreamMedia):  # the usual media frame, ~50 a second per leg
        return read
    event, frame = read
    if event == "media":  # of another shape: checked, field by field
        return media_message(frame, "sequenceNumber")
    if event == "mark":
        return StreamMark(text_field(section(frame, "mark", event), "name", event))
    if event == "dtmf":
        return StreamDtmf(text_field(section(frame, "dtmf", event), "digit", event))
    if event == "start":
        return _parse_start(frame)
    if event == "connected":
        # Informative only: an odd "version" must not cost the stream its first frame.
        return StreamConnected(version=loose_text(frame.get("version")))
    if event == "stop":
        return StreamStop()
    # Twilio documents connected, start, media, dtmf, stop and mark
    # (twilio.com/docs/voice/media-streams/websocket-messages); anything else is newer than us.
    return unknown(event)


def _parse_start(frame: dict[str, Any]) -> StreamStart:
    start = section(frame, "start", "start")
    # Twilio repeats streamSid at the top level; the copy inside ``start`` is the documented one.
    stream_id = optional_text(start, "streamSid", "start") or optional_text(
        frame, "streamSid", "start"
    )
    if stream_id is None:
        raise BadFrame("missing_field", "start frame lacks the 'streamSid' string", "start")
    tracks = start.get("tracks", ["inbound"])
    if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
        reason = "start frame has 'tracks' that is not a list of strings"
        raise BadFrame("bad_field", reason, "start")
    return StreamStart(
        stream_id=stream_id,
        call_id=text_field(start, "callSid", "start"),
        fmt=audio_format(section(start, "mediaFormat", "start"), "sampleRate", "start"),
        custom_parameters=string_map(start.get("customParameters"), "customParameters", "start"),
        client_state=None,
        tracks=tuple(tracks),
    )


_MEDIA_HEAD = b'{"event":"media","streamSid":'
_MEDIA_PAYLOAD = b',"media":{"payload":"'
_MEDIA_TAIL = b'"}}'


def render_media(stream_sid: str, payload: bytes) -> bytes:
    """Outbound audio: raw mu-law 8 kHz bytes, no header, any length.

    Joined from fixed parts (one per frame per leg): the stream id through orjson for its JSON
    escaping, the payload as base64, which needs none; the keys are exactly Twilio's.
    """
    return (
        _MEDIA_HEAD
        + orjson.dumps(stream_sid)
        + _MEDIA_PAYLOAD
        + pybase64.b64encode(payload)
        + _MEDIA_TAIL
    )


def render_mark(stream_sid: str, name: str) -> bytes:
    """A mark Twilio echoes once the audio sent before it has played (or been cleared)."""
    return orjson.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def render_clear(stream_sid: str) -> bytes:
    """Flush Twilio's playback queue at once; pending marks come back."""
    return orjson.dumps({"event": "clear", "streamSid": stream_sid})


class TwilioStreamCodec:
    """The ``StreamCodec`` for a Twilio leg; stateless, one instance can serve every leg."""

    __slots__ = ()

    @property
    def provider(self) -> str:
        return "twilio"

    @property
    def outbound(self) -> AudioFormat:
        # Twilio plays what a bidirectional stream sends as mu-law at 8 kHz, whatever it streams
        # to us (twilio.com/docs/voice/media-streams/websocket-messages, "media" message sent to
        # Twilio: "audio/x-mulaw with a sample rate of 8000"; PROTOCOLS.md 5.2). callbridge never
        # sets <Stream audio_format>, the "HD codec" attribute of twilio 9.13.
        return PCMU_8K

    def parse(self, text: str | bytes) -> StreamMessage:
        return parse_message(text)

    def media_renderer(self, stream_id: str) -> Callable[[bytes], bytes]:
        head = _MEDIA_HEAD + orjson.dumps(stream_id) + _MEDIA_PAYLOAD

        def render(payload: bytes) -> bytes:
            return head + pybase64.b64encode(payload) + _MEDIA_TAIL

        return render

    def render_mark(self, stream_id: str, name: str) -> bytes:
        return render_mark(stream_id, name)

    def render_clear(self, stream_id: str) -> bytes:
        return render_clear(stream_id)
