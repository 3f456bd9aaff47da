"""The Telnyx simulator's media stream: the stream options a command carries, and the websocket
frames Telnyx sends and accepts (PROTOCOLS.md section 3).

``StreamConfig.parse`` reads and checks the ``stream_*`` fields of dial, answer and
``streaming_start``, refusing with Telnyx's 422 shape what Telnyx refuses and, explicitly, what
the simulator cannot play (G.722, Opus, AMR-WB, rates other than 8 kHz, or 16 kHz L16).

``TelnyxStream`` stamps ``sequence_number`` on media when the frame is captured, so a reordered
frame arrives with its original number, as Telnyx's unordered delivery does. Received frames
Telnyx would refuse get an ``error`` frame back (100003 malformed_frame for a frame it cannot
read, 100004 invalid_media for audio it cannot play) and are ignored.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import orjson
import pybase64

from adapters.simulators.audio import FRAME_MS, Samples
from adapters.simulators.streaming import Inbound, InClear, InMark, InMedia, MediaStream, Refused
from adapters.telnyx.webhooks import format_occurred_at
from media.codecs import AudioFormat, ByteOrder, Encoding, Resampler, decode, encode

if TYPE_CHECKING:
    from adapters.simulators.telnyx_calls import TelnyxCall

__all__ = ["AUTH_TOKEN_HEADER", "StreamConfig", "StreamConfigError", "TelnyxStream"]

AUTH_TOKEN_HEADER: Final = "x-telnyx-streaming-auth-token"
TRACKS: Final = frozenset({"inbound_track", "outbound_track", "both_tracks"})
# Codecs Telnyx offers that the simulator cannot encode or decode (no G.722/Opus/AMR-WB codec).
_UNPLAYABLE: Final = frozenset({"G722", "OPUS", "AMR-WB"})
_RATES: Final = frozenset({8000, 16000, 22050, 24000, 48000})
_MAX_AUTH_TOKEN: Final = 4000
# rtp mode takes 20 ms to 30 s of audio per media frame (PROTOCOLS.md 3.3).
_MIN_MS, _MAX_MS = 20, 30_000


class StreamConfigError(ValueError):
    """A command's stream fields that Telnyx (or the simulator) refuses: HTTP 422."""

    def __init__(self, code: str, title: str, detail: str, pointer: str) -> None:
        super().__init__(detail)
        self.code, self.title, self.detail, self.pointer = code, title, detail, pointer


def _bad(field_name: str, detail: str, code: str = "10015", title: str = "Bad Request") -> None:
    raise StreamConfigError(code, title, detail, f"/{field_name}")


def _codec(body: Mapping[str, Any], key: str, default: str, allow_default: bool) -> str:
    value = body.get(key, default)
    known = {"PCMU", "PCMA", "L16"} | _UNPLAYABLE | ({"default"} if allow_default else set())
    if not isinstance(value, str) or value not in known:
        _bad(key, f"{key} must be one of {sorted(known)}")
    if value in _UNPLAYABLE:
        _bad(key, f"the simulator cannot play {value}; use PCMU, PCMA or L16")
    # "default" is the call's own codec, which is PCMU for every simulated call.
    return "PCMU" if value == "default" else str(value)


@dataclass(frozen=True, slots=True)
class StreamConfig:
    url: str
    track: str = "inbound_track"
    codec: str = "PCMU"
    bidirectional_mode: str | None = None
    bidirectional_codec: str = "PCMU"
    bidirectional_rate: int = 8000
    auth_token: str | None = None
    custom_parameters: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, body: Mapping[str, Any], *, with_token: bool) -> StreamConfig | None:
        """The stream a command asks for; None without ``stream_url``. ``with_token``: the
        command takes ``stream_auth_token`` and ``custom_parameters`` (answer does not, and
        Telnyx ignores fields a command does not take)."""
        url = body.get("stream_url")
        if url is None:
            return None
        split = urlsplit(url) if isinstance(url, str) else None
        if split is None or split.scheme not in ("ws", "wss") or not split.netloc:
            _bad("stream_url", "stream_url must be a ws:// or wss:// URL", "10003", "Invalid URL")
        track = body.get("stream_track", "inbound_track")
        if track not in TRACKS:
            _bad("stream_track", f"stream_track must be one of {sorted(TRACKS)}")
        mode = body.get("stream_bidirectional_mode")
        if mode not in (None, "rtp", "mp3"):
            _bad("stream_bidirectional_mode", "stream_bidirectional_mode must be rtp or mp3")
        rate = body.get("stream_bidirectional_sampling_rate", 8000)
        if rate not in _RATES:
            _bad("stream_bidirectional_sampling_rate", f"must be one of {sorted(_RATES)}")
        bidi_codec = _codec(body, "stream_bidirectional_codec", "PCMU", allow_default=False)
        if rate != 8000 and not (rate == 16000 and bidi_codec == "L16"):
            _bad("stream_bidirectional_sampling_rate", "the simulator plays 8 kHz, or 16 kHz L16")
        token = body.get("stream_auth_token") if with_token else None
        if token is not None and (not isinstance(token, str) or len(token) > _MAX_AUTH_TOKEN):
            _bad("stream_auth_token", "stream_auth_token is a string of at most 4000 characters")
        parameters: dict[str, str] = {}
        items = (body.get("custom_parameters") or []) if with_token else []
        if not isinstance(items, list):
            _bad("custom_parameters", "custom_parameters is a list of {name, value}")
        for item in items:
            if not (isinstance(item, dict) and isinstance(item.get("name"), str)):
                _bad("custom_parameters", "custom_parameters is a list of {name, value}")
            parameters[item["name"]] = str(item.get("value", ""))
        return cls(
            url=str(url),
            track=str(track),
            codec=_codec(body, "stream_codec", "default", allow_default=True),
            bidirectional_mode=mode,
            bidirectional_codec=bidi_codec,
            bidirectional_rate=int(rate),
            auth_token=token,
            custom_parameters=parameters,
        )


def _refuse_frame(detail: str) -> Refused:
    return Refused("100003", "malformed_frame", detail)


def _refuse_media(detail: str) -> Refused:
    return Refused("100004", "invalid_media", detail)


class TelnyxStream(MediaStream):
    seq_key = "sequence_number"
    user_agent = "Telnyx-Media-Streaming/1.0"

    def __init__(self, call: TelnyxCall, config: StreamConfig, l16_byte_order: ByteOrder) -> None:
        headers = {AUTH_TOKEN_HEADER: config.auth_token} if config.auth_token else {}
        super().__init__(call, config.url, headers, str(uuid.uuid4()))
        self.telnyx_call = call
        self.config = config
        self.user_id = str(uuid.uuid4())
        self.send_format = AudioFormat(Encoding(config.codec), 8000, l16_byte_order)
        self.receive_format = AudioFormat(
            Encoding(config.bidirectional_codec), config.bidirectional_rate, l16_byte_order
        )
        self._resampler = Resampler(config.bidirectional_rate, 8000)
        self._chunk = 0

    def connected_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"event": "connected", "version": "1.0.0"}
        if self.config.auth_token:
            message["connected"] = {AUTH_TOKEN_HEADER: self.config.auth_token}
        return message

    def start_message(self) -> dict[str, Any]:
        call = self.telnyx_call
        return {
            "event": "start",
            "stream_id": self.stream_id,
            "start": {
                "user_id": self.user_id,
                "call_control_id": call.call_control_id,
                "call_session_id": call.call_session_id,
                "from": call.from_,
                "to": call.to,
                "tags": [],
                "client_state": call.client_state,
                "custom_parameters": self.config.custom_parameters,
                "media_format": {
                    "encoding": self.config.codec,
                    "sample_rate": 8000,
                    "channels": 1,
                },
            },
        }

    def media_message(self, n: int, samples: Samples) -> dict[str, Any]:
        self._chunk += 1
        return {
            "event": "media",
            "sequence_number": self.next_seq(),
            "stream_id": self.stream_id,
            "media": {
                "track": "inbound",
                "chunk": str(self._chunk),
                # Units are not documented by Telnyx; the simulator uses milliseconds.
                "timestamp": str(n * FRAME_MS),
                "payload": pybase64.b64encode_as_string(encode(self.send_format, samples)),
            },
        }

    def mark_message(self, name: str) -> dict[str, Any]:
        return {"event": "mark", "stream_id": self.stream_id, "mark": {"name": name}}

    def dtmf_message(self, digit: str) -> dict[str, Any]:
        return {
            "event": "dtmf",
            "stream_id": self.stream_id,
            "occurred_at": format_occurred_at(datetime.now(UTC)),
            "dtmf": {"digit": digit},
        }

    def stop_message(self) -> dict[str, Any]:
        return {
            "event": "stop",
            "stream_id": self.stream_id,
            "stop": {"user_id": self.user_id, "call_control_id": self.telnyx_call.call_control_id},
        }

    async def refused(self, error: Refused) -> None:
        await self.send(
            {
                "event": "error",
                "stream_id": self.stream_id,
                "error": {"title": error.title, "code": error.code, "detail": error.detail},
            }
        )

    def parse_inbound(self, data: str | bytes) -> Inbound:
        if isinstance(data, bytes):
            raise _refuse_frame("binary frames are not accepted; send JSON text")
        try:
            frame = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise _refuse_frame("frame is not valid JSON") from None
        event = frame.get("event") if isinstance(frame, dict) else None
        if event == "clear":
            return InClear()
        if event == "mark":
            mark = frame.get("mark")
            if not (isinstance(mark, dict) and isinstance(mark.get("name"), str)):
                raise _refuse_frame("mark frame lacks mark.name")
            return InMark(mark["name"])
        if event != "media":
            raise _refuse_frame(f"unknown event {str(event)[:40]!r}")
        media = frame.get("media")
        payload = media.get("payload") if isinstance(media, dict) else None
        if not isinstance(payload, str):
            raise _refuse_frame("media frame lacks media.payload")
        if self.config.bidirectional_mode != "rtp":
            raise _refuse_media("stream_bidirectional_mode is not rtp: raw audio is not played")
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise _refuse_media("media.payload is not valid base64") from None
        fmt = self.receive_format
        per_ms = fmt.frame_bytes(1)
        if len(raw) % fmt.bytes_per_sample or not _MIN_MS * per_ms <= len(raw) <= _MAX_MS * per_ms:
            raise _refuse_media(f"media must hold 20 ms to 30 s of {fmt.encoding.value} audio")
        return InMedia(self._resampler.process(decode(fmt, raw)))
