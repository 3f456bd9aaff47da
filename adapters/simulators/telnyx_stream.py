"""The Telnyx simulator's media stream: the stream options a command carries, and the websocket
frames Telnyx sends and accepts (PROTOCOLS.md section 3).

``StreamConfig.parse`` reads and checks the ``stream_*`` fields of dial, answer and
``streaming_start``, refusing with Telnyx's 422 shape what Telnyx refuses (values outside the
telnyx SDK's enums: ``types/stream_codec.py``, ``stream_bidirectional_codec.py``,
``stream_bidirectional_sampling_rate.py``, ``stream_bidirectional_target_legs.py``) and,
explicitly as the simulator's own limit, a bidirectional codec it cannot decode (Opus, AMR-WB)
or a rate it cannot play.

What the stream carries follows the call's negotiated codec (``TelnyxCall.codec``): Telnyx
streams the call's codec unless ``stream_codec`` asks for one it can transcode to, which is only
PCMU <-> PCMA (and linear L16 from either G.711 law); otherwise the call's codec is used and the
``start`` frame's ``media_format`` says so (PROTOCOLS.md 3.4). The two directions are
independent: what callbridge sends back is decoded as ``stream_bidirectional_codec`` (default
PCMU) whatever the stream carries, so A-law sent to a stream declared PCMU plays garbled, as on
Telnyx. ``stream_bidirectional_target_legs`` (default ``opposite``, Telnyx's OpenAPI) decides who
hears it: a simulated leg is a standalone call-control leg with no opposite leg, so with
``opposite`` the audio is accepted, counted and heard by nobody.

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

from adapters.simulators.audio import FRAME_MS, SAMPLE_RATE, Samples
from adapters.simulators.codecs import CODEC_RATES, ByteOrder, Resampler, decoder, encoder
from adapters.simulators.streaming import Inbound, InClear, InMark, InMedia, MediaStream, Refused
from adapters.simulators.wire import telnyx_time

if TYPE_CHECKING:
    from adapters.simulators.telnyx_calls import TelnyxCall

__all__ = [
    "AUTH_TOKEN_HEADER",
    "CALL_CODECS",
    "StreamConfig",
    "StreamConfigError",
    "TelnyxStream",
    "streamed_codec",
]

AUTH_TOKEN_HEADER: Final = "x-telnyx-streaming-auth-token"
TRACKS: Final = frozenset({"inbound_track", "outbound_track", "both_tracks"})
#: Codecs a simulated call can have negotiated with the caller's side.
CALL_CODECS: Final = frozenset({"PCMU", "PCMA", "G722", "OPUS"})
# The telnyx SDK's enums (types/stream_codec.py, stream_bidirectional_codec.py).
_CODECS: Final = frozenset({"PCMU", "PCMA", "G722", "OPUS", "AMR-WB", "L16"})
# What the simulator can decode from callbridge: Opus and AMR-WB it cannot.
_DECODABLE: Final = frozenset({"PCMU", "PCMA", "G722", "L16"})
_TARGET_LEGS: Final = frozenset({"self", "opposite", "both"})
_RATES: Final = frozenset({8000, 16000, 22050, 24000, 48000})
_MAX_AUTH_TOKEN: Final = 4000
# rtp mode takes 20 ms to 30 s of audio per media frame (PROTOCOLS.md 3.3).
_MIN_MS, _MAX_MS = 20, 30_000
_G711: Final = frozenset({"PCMU", "PCMA"})


class StreamConfigError(ValueError):
    """A command's stream fields that Telnyx (or the simulator) refuses: HTTP 422."""

    def __init__(self, code: str, title: str, detail: str, pointer: str) -> None:
        super().__init__(detail)
        self.code, self.title, self.detail, self.pointer = code, title, detail, pointer


def _bad(field_name: str, detail: str, code: str = "10015", title: str = "Bad Request") -> None:
    raise StreamConfigError(code, title, detail, f"/{field_name}")


def _codec(body: Mapping[str, Any], key: str, default: str, allow_default: bool) -> str:
    value = body.get(key, default)
    known = _CODECS | ({"default"} if allow_default else set())
    if not isinstance(value, str) or value not in known:
        _bad(key, f"{key} must be one of {sorted(known)}")
    return str(value)


def streamed_codec(call_codec: str, asked: str) -> str:
    """What Telnyx streams for a call in ``call_codec`` asked for ``stream_codec`` ``asked``:
    transcoding only between PCMU and PCMA (TeXML stream docs, PROTOCOLS.md 3.4), plus linear
    L16 from either G.711 law; otherwise the call's own codec."""
    if asked == "default" or asked == call_codec:
        return call_codec
    if call_codec in _G711 and (asked in _G711 or asked == "L16"):
        return asked
    return call_codec


@dataclass(frozen=True, slots=True)
class StreamConfig:
    url: str
    track: str = "inbound_track"
    #: ``stream_codec`` as asked (``default``: the call's codec); see ``streamed_codec``.
    codec: str = "default"
    bidirectional_mode: str | None = None
    bidirectional_codec: str = "PCMU"
    bidirectional_rate: int = 8000
    target_legs: str = "opposite"
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
        legs = body.get("stream_bidirectional_target_legs", "opposite")
        if legs not in _TARGET_LEGS:
            _bad("stream_bidirectional_target_legs", f"must be one of {sorted(_TARGET_LEGS)}")
        bidi_codec, rate = _bidirectional(body)
        token = body.get("stream_auth_token") if with_token else None
        if token is not None and (not isinstance(token, str) or len(token) > _MAX_AUTH_TOKEN):
            _bad("stream_auth_token", "stream_auth_token is a string of at most 4000 characters")
        return cls(
            url=str(url),
            track=str(track),
            codec=_codec(body, "stream_codec", "default", allow_default=True),
            bidirectional_mode=mode,
            bidirectional_codec=bidi_codec,
            bidirectional_rate=rate,
            target_legs=str(legs),
            auth_token=token,
            custom_parameters=_parameters(body) if with_token else {},
        )


def _bidirectional(body: Mapping[str, Any]) -> tuple[str, int]:
    rate = body.get("stream_bidirectional_sampling_rate", 8000)
    if rate not in _RATES:
        _bad("stream_bidirectional_sampling_rate", f"must be one of {sorted(_RATES)}")
    codec = _codec(body, "stream_bidirectional_codec", "PCMU", allow_default=False)
    if codec not in _DECODABLE:
        _bad("stream_bidirectional_codec",
             f"the simulator cannot decode {codec} (a limit of the simulator, not of Telnyx); "
             f"use one of {sorted(_DECODABLE)}")  # fmt: skip
    # G.711 is 8 kHz audio and G.722 16 kHz whatever the field says; L16 is played at 8 or 16.
    playable = {8000, 16000} if codec in ("L16", "G722") else {8000}
    if rate not in playable:
        _bad("stream_bidirectional_sampling_rate",
             f"the simulator plays {codec} at {sorted(playable)} Hz only (its limit)")  # fmt: skip
    return codec, int(rate)


def _parameters(body: Mapping[str, Any]) -> dict[str, str]:
    parameters: dict[str, str] = {}
    items = body.get("custom_parameters") or []
    if not isinstance(items, list):
        _bad("custom_parameters", "custom_parameters is a list of {name, value}")
    for item in items:
        if not (isinstance(item, dict) and isinstance(item.get("name"), str)):
            _bad("custom_parameters", "custom_parameters is a list of {name, value}")
        parameters[item["name"]] = str(item.get("value", ""))
    return parameters


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
        #: What this stream carries to callbridge, and at what rate.
        self.codec = streamed_codec(call.codec, config.codec)
        self.sample_rate = CODEC_RATES.get(self.codec, SAMPLE_RATE)
        # Per stream: G.722 is a stateful (ADPCM) codec in both directions.
        self._encoder = encoder(self.codec, l16_byte_order)
        self._upsampler = Resampler(SAMPLE_RATE, 16000) if self.codec == "G722" else None
        self._decoder = decoder(config.bidirectional_codec, l16_byte_order)
        receive_rate = 16000 if config.bidirectional_codec == "G722" else config.bidirectional_rate
        self._receive_bytes_per_ms = _bytes_per_ms(config.bidirectional_codec, receive_rate)
        self._resampler = Resampler(receive_rate, SAMPLE_RATE)
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
                # UNCONFIRMED for G722 and OPUS: the docs found show media_format only for
                # G.711; the simulator reports each codec's audio rate (G.722 16000, Opus 48000).
                "media_format": {
                    "encoding": self.codec,
                    "sample_rate": self.sample_rate,
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
                "payload": pybase64.b64encode_as_string(self._encode(samples)),
            },
        }

    def _encode(self, samples: Samples) -> bytes:
        if self._upsampler is not None:
            samples = self._upsampler.process(samples)
        return self._encoder.encode(samples)

    def mark_message(self, name: str) -> dict[str, Any]:
        return {"event": "mark", "stream_id": self.stream_id, "mark": {"name": name}}

    def dtmf_message(self, digit: str) -> dict[str, Any]:
        return {
            "event": "dtmf",
            "stream_id": self.stream_id,
            "occurred_at": telnyx_time(datetime.now(UTC)),
            "dtmf": {"digit": digit},
        }

    def id_fields(self) -> dict[str, str]:
        return {"stream_id": self.stream_id}

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
        per_ms = self._receive_bytes_per_ms
        codec = self.config.bidirectional_codec
        whole = len(raw) % 2 == 0 if codec == "L16" else True
        if not whole or not _MIN_MS * per_ms <= len(raw) <= _MAX_MS * per_ms:
            raise _refuse_media(f"media must hold 20 ms to 30 s of {codec} audio")
        return InMedia(self._resampler.process(self._decoder.decode(raw)))

    def queue_audio(self, samples: Samples) -> None:
        if self.config.target_legs == "opposite":
            # A standalone call-control leg has no opposite leg: the audio reaches nobody.
            self.telnyx_call.media_frames_discarded += 1
            return
        super().queue_audio(samples)


def _bytes_per_ms(codec: str, rate: int) -> int:
    # G.711: 8 bits at 8 kHz; G.722: 64 kbit/s (ITU-T G.722 mode 1); L16: 2 bytes a sample.
    return 2 * rate // 1000 if codec == "L16" else 8
