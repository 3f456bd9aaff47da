"""The Twilio simulator's media stream: Media Streams frames as Twilio sends them, and Twilio's
strictness about what comes back (PROTOCOLS.md section 5).

``TwilioStream`` refuses, as Twilio does, everything but text frames holding exactly the
documented outbound shapes with this stream's ``streamSid``: error 31950 for binary frames and
31951 ("Invalid Message") for anything else, including an extra key. Twilio says nothing on the
socket about either (the errors show in its console), so the refusal is only recorded on the call.
Media counters are stamped when a frame leaves, since one TCP connection cannot reorder.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import orjson
import pybase64

from adapters.simulators.audio import FRAME_MS, Samples
from adapters.simulators.codecs import decoder, encoder
from adapters.simulators.streaming import Inbound, InClear, InMark, InMedia, MediaStream, Refused
from adapters.simulators.wire import twilio_signature

if TYPE_CHECKING:
    from adapters.simulators.twilio_calls import TwilioCall

__all__ = ["MAX_QUEUED_SAMPLES", "TwilioStream"]

# Twilio discards media once about 10 minutes of audio are queued (warning 31931).
MAX_QUEUED_SAMPLES: Final = 10 * 60 * 8000
_OUTBOUND_KEYS: Final = {
    "media": {"event", "streamSid", "media"},
    "mark": {"event", "streamSid", "mark"},
    "clear": {"event", "streamSid"},
}


class TwilioStream(MediaStream):
    seq_key = "sequenceNumber"
    user_agent = "Twilio.TmeWs/1.0"

    def __init__(
        self, call: TwilioCall, url: str, stream_sid: str, parameters: Mapping[str, str]
    ) -> None:
        # Twilio signs the upgrade over the stream URL with no parameters (PROTOCOLS.md 4.3).
        signature = twilio_signature(call.account.auth_token, url, None)
        super().__init__(call, url, {"X-Twilio-Signature": signature}, stream_sid)
        self.twilio_call = call
        self.parameters = dict(parameters)
        self._chunk = 0
        # Media Streams carry mu-law at 8 kHz both ways (PROTOCOLS.md 5.1, 5.2).
        self._encoder = encoder("PCMU")
        self._decoder = decoder("PCMU")

    def connected_message(self) -> dict[str, Any]:
        return {"event": "connected", "protocol": "Call", "version": "1.0.0"}

    def start_message(self) -> dict[str, Any]:
        call = self.twilio_call
        return {
            "event": "start",
            "start": {
                "accountSid": call.account.account_sid,
                "streamSid": self.stream_id,
                "callSid": call.sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": self.parameters,
            },
            "streamSid": self.stream_id,
        }

    def media_message(self, n: int, samples: Samples) -> dict[str, Any]:
        self._chunk += 1
        # No sequenceNumber yet: it is stamped when sent, since Twilio's one TCP stream numbers
        # messages in the order they leave.
        return {
            "event": "media",
            "streamSid": self.stream_id,
            "media": {
                "track": "inbound",
                "chunk": str(self._chunk),
                "timestamp": str(n * FRAME_MS),
                "payload": pybase64.b64encode_as_string(self._encoder.encode(samples)),
            },
        }

    def mark_message(self, name: str) -> dict[str, Any]:
        return {"event": "mark", "streamSid": self.stream_id, "mark": {"name": name}}

    def dtmf_message(self, digit: str) -> dict[str, Any]:
        return {
            "event": "dtmf",
            "streamSid": self.stream_id,
            "dtmf": {"track": "inbound_track", "digit": digit},
        }

    def id_fields(self) -> dict[str, str]:
        return {"streamSid": self.stream_id}

    def stop_message(self) -> dict[str, Any]:
        call = self.twilio_call
        return {
            "event": "stop",
            "streamSid": self.stream_id,
            "stop": {"accountSid": call.account.account_sid, "callSid": call.sid},
        }

    def parse_inbound(self, data: str | bytes) -> Inbound:
        if isinstance(data, bytes):
            raise Refused("31950", "Media Stream Binary Message", "binary frames are ignored")
        try:
            frame = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise _invalid("not valid JSON") from None
        if not isinstance(frame, dict):
            raise _invalid("not a JSON object")
        event = frame.get("event")
        expected = _OUTBOUND_KEYS.get(event) if isinstance(event, str) else None
        if expected is None:
            raise _invalid(f"unknown event {str(event)[:40]!r}")
        if set(frame) != expected:
            extra, missing = set(frame) - expected, expected - set(frame)
            raise _invalid(f"{event}: extra keys {sorted(extra)}, missing {sorted(missing)}")
        if frame["streamSid"] != self.stream_id:
            raise _invalid(f"{event}: streamSid does not name this stream")
        if event == "clear":
            return InClear()
        body = frame[event]
        if event == "mark":
            if not (isinstance(body, dict) and set(body) == {"name"}):
                keys = sorted(body) if isinstance(body, dict) else type(body).__name__
                raise _invalid(f"mark must hold exactly 'name', not {keys}")
            if not isinstance(body["name"], str):
                raise _invalid("mark name must be a string")
            return InMark(body["name"])
        if not (isinstance(body, dict) and set(body) == {"payload"}):
            keys = sorted(body) if isinstance(body, dict) else type(body).__name__
            raise _invalid(f"media must hold exactly 'payload', not {keys}")
        payload = body["payload"]
        if not isinstance(payload, str) or not payload:
            raise _invalid("media payload must be a non-empty base64 string")
        try:
            raw = pybase64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise _invalid("media payload is not valid base64") from None
        return InMedia(self._decoder.decode(raw))

    async def refused(self, error: Refused) -> None:
        # Twilio sends nothing back on the socket: errors show only in its console.
        return

    def queue_audio(self, samples: Samples) -> None:
        if not self.call.playout.queue_audio(samples):
            self.call.add_protocol_error(
                "31931", "Media Discarded: more than 10 minutes of audio queued", ""
            )


def _invalid(detail: str) -> Refused:
    return Refused("31951", "Invalid Message", detail)
