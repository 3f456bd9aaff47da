"""Twilio's side of Media Streams, for a websocket agent leg: a voice bot callbridge dials.

callbridge plays Twilio here (PROTOCOLS.md section 5, the mirror image of
``adapters.twilio.stream``): it sends ``connected``, ``start``, ``media``, ``dtmf`` (a peer's
key press), echoed ``mark`` and ``stop`` exactly as Twilio shapes them (camelCase, counters as
decimal strings, the ``mediaFormat`` numbers as numbers), and it reads the bot's ``media``,
``mark`` and ``clear`` as strictly as Twilio does: an unknown event, a missing or extra key, a
wrong ``streamSid`` or a payload that is not base64 is ``AgentProtocolError`` (Twilio's 31951
"Invalid Message").

Nothing here does I/O or reads a clock:

- ``AgentStream`` holds one stream's identity and counters and renders and parses its frames;
- ``Playout`` is the bot's audio on its way into the mix: queued in order, taken one 20 ms
  frame per tick, with each mark handed back once the audio queued before it has been taken,
  and ``clear`` flushing the audio and handing back every pending mark (as Twilio does).
"""

from __future__ import annotations

import binascii
import hashlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import orjson
import pybase64

__all__ = [
    "MAX_PENDING_MARKS",
    "AgentProtocolError",
    "AgentStream",
    "BotClear",
    "BotMark",
    "BotMedia",
    "BotMessage",
    "Playout",
    "StreamIds",
]

# What the bot may send: exactly these keys per event (PROTOCOLS.md 5.2).
_BOT_KEYS: Final[dict[str, frozenset[str]]] = {
    "media": frozenset({"event", "streamSid", "media"}),
    "mark": frozenset({"event", "streamSid", "mark"}),
    "clear": frozenset({"event", "streamSid"}),
}
# Twilio's error codes, kept on the error for logs: invalid message, binary frame.
INVALID_MESSAGE: Final = "31951"
BINARY_MESSAGE: Final = "31950"
# A bot that queues marks without end must not grow our memory without end either.
MAX_PENDING_MARKS: Final = 1000
MAX_MARK_NAME: Final = 256


@dataclass(frozen=True, slots=True)
class StreamIds:
    """The Twilio-shaped ids a bot sees: ``AC``/``CA``/``MZ`` followed by 32 hex digits."""

    account_sid: str
    call_sid: str
    stream_sid: str

    @classmethod
    def for_leg(cls, call_control_id: str, org_id: int, stream_hex: str) -> StreamIds:
        """Stable account and call SIDs derived from the organization and the leg; the stream
        SID from ``stream_hex`` (32 hex digits the caller draws at random)."""
        if len(stream_hex) != 32 or any(c not in "0123456789abcdef" for c in stream_hex):
            raise ValueError("stream_hex must be 32 lower-case hex digits")
        return cls(
            account_sid="AC" + _hex32(f"callbridge-org:{org_id}"),
            call_sid="CA" + _hex32(f"callbridge-leg:{call_control_id}"),
            stream_sid="MZ" + stream_hex,
        )


def _hex32(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class BotMedia:
    """Audio from the bot: raw mu-law 8 kHz bytes, any length."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class BotMark:
    name: str


@dataclass(frozen=True, slots=True)
class BotClear:
    pass


BotMessage: TypeAlias = BotMedia | BotMark | BotClear


class AgentProtocolError(ValueError):
    """A frame from the bot that Twilio would refuse; ``code`` is Twilio's error code."""

    def __init__(self, reason: str, code: str = INVALID_MESSAGE) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


def _dumps(frame: dict[str, Any]) -> str:
    return orjson.dumps(frame).decode()


class AgentStream:
    """One stream's identity, counters, renderers and parser.

    ``sequenceNumber`` counts every message after ``connected`` (``start`` is "1"); ``chunk``
    counts media messages from "1". Render in the order the messages go on the wire.
    """

    __slots__ = ("_chunk", "_sequence", "ids")

    def __init__(self, ids: StreamIds) -> None:
        self.ids = ids
        self._sequence = 0
        self._chunk = 0

    @property
    def stream_sid(self) -> str:
        return self.ids.stream_sid

    def _next(self) -> str:
        self._sequence += 1
        return str(self._sequence)

    # -- what callbridge sends, as Twilio -------------------------------------------------
    def connected(self) -> str:
        return _dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start(self, custom_parameters: Mapping[str, str]) -> str:
        ids = self.ids
        return _dumps(
            {
                "event": "start",
                "sequenceNumber": self._next(),
                "start": {
                    "accountSid": ids.account_sid,
                    "streamSid": ids.stream_sid,
                    "callSid": ids.call_sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": dict(custom_parameters),
                },
                "streamSid": ids.stream_sid,
            }
        )

    def media(self, payload: bytes, timestamp_ms: int) -> str:
        """What the caller side says: raw mu-law bytes, ``timestamp_ms`` since the start."""
        self._chunk += 1
        return _dumps(
            {
                "event": "media",
                "sequenceNumber": self._next(),
                "streamSid": self.ids.stream_sid,
                "media": {
                    "track": "inbound",
                    "chunk": str(self._chunk),
                    "timestamp": str(max(0, timestamp_ms)),
                    "payload": pybase64.b64encode_as_string(payload),
                },
            }
        )

    def dtmf(self, digit: str) -> str:
        """A key press on the caller side, as Twilio reports one on a bidirectional stream
        (PROTOCOLS.md 5.1: ``{"event", "streamSid", "sequenceNumber", "dtmf": {"track":
        "inbound_track", "digit"}}``). Bot frameworks read the digit from here and only here:
        pipecat's ``TwilioFrameSerializer.deserialize`` turns ``message["dtmf"]["digit"]`` into
        an ``InputDTMFFrame`` and ignores tones in the audio."""
        return _dumps(
            {
                "event": "dtmf",
                "streamSid": self.ids.stream_sid,
                "sequenceNumber": self._next(),
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    def mark(self, name: str) -> str:
        """The echo of a mark the bot sent: its audio has played (or was cleared)."""
        return _dumps(
            {
                "event": "mark",
                "sequenceNumber": self._next(),
                "streamSid": self.ids.stream_sid,
                "mark": {"name": name},
            }
        )

    def stop(self) -> str:
        ids = self.ids
        return _dumps(
            {
                "event": "stop",
                "sequenceNumber": self._next(),
                "streamSid": ids.stream_sid,
                "stop": {"accountSid": ids.account_sid, "callSid": ids.call_sid},
            }
        )

    # -- what the bot sends, read as strictly as Twilio does ------------------------------
    def parse(self, text: str) -> BotMessage:
        try:
            frame = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise AgentProtocolError("frame is not valid JSON") from None
        if not isinstance(frame, dict):
            raise AgentProtocolError("frame is not a JSON object")
        event = frame.get("event")
        expected = _BOT_KEYS.get(event) if isinstance(event, str) else None
        if expected is None:
            raise AgentProtocolError(f"unknown event {_short(event)}")
        keys = frame.keys()
        if keys != expected:
            extra, missing = sorted(keys - expected), sorted(expected - keys)
            problems = [f"extra keys {extra}"] if extra else []
            problems += [f"missing {missing}"] if missing else []
            raise AgentProtocolError(f"{event} frame: {', '.join(problems)}"[:119])
        if frame["streamSid"] != self.ids.stream_sid:
            raise AgentProtocolError(f"{event} frame: streamSid does not name this stream")
        if event == "clear":
            return BotClear()
        body = frame[event]
        inner = "name" if event == "mark" else "payload"
        if not isinstance(body, dict) or body.keys() != {inner}:
            raise AgentProtocolError(f"{event} object must hold exactly '{inner}'")
        value = body[inner]
        if not isinstance(value, str) or not value:
            raise AgentProtocolError(f"{event} {inner} must be a non-empty string")
        if event == "mark":
            if len(value) > MAX_MARK_NAME:
                raise AgentProtocolError(f"mark name longer than {MAX_MARK_NAME} characters")
            return BotMark(value)
        try:
            return BotMedia(pybase64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            raise AgentProtocolError("media payload is not valid base64") from None


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Playout:
    """The bot's audio queued on its way into the mix, with the marks between it.

    Positions count bytes since the stream started: a mark waits for the position the audio
    before it ends at. ``take`` returns up to one frame and the marks that are now due.
    """

    __slots__ = ("_buffer", "_marks", "_taken", "frame_bytes", "max_bytes")

    def __init__(self, *, frame_bytes: int = 160, max_bytes: int) -> None:
        self.frame_bytes = frame_bytes
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._taken = 0  # bytes handed to the mix so far
        self._marks: deque[tuple[int, str]] = deque()

    @property
    def queued_bytes(self) -> int:
        return len(self._buffer)

    @property
    def pending_marks(self) -> int:
        return len(self._marks)

    def queue_audio(self, payload: bytes) -> bool:
        """Queue audio; False (nothing queued) when it would pass ``max_bytes``, as Twilio
        discards media past its own limit."""
        if len(self._buffer) + len(payload) > self.max_bytes:
            return False
        self._buffer += payload
        return True

    def queue_mark(self, name: str) -> list[str]:
        """Queue a mark behind the audio; returns it at once if no audio is ahead of it."""
        if not self._buffer and not self._marks:
            return [name]
        if len(self._marks) >= MAX_PENDING_MARKS:
            raise AgentProtocolError(f"more than {MAX_PENDING_MARKS} marks pending")
        self._marks.append((self._taken + len(self._buffer), name))
        return []

    def clear(self) -> list[str]:
        """Drop the queued audio; returns every pending mark, in order."""
        self._taken += len(self._buffer)
        self._buffer.clear()
        flushed = [name for _, name in self._marks]
        self._marks.clear()
        return flushed

    def take(self) -> tuple[bytes, list[str]]:
        """Up to one frame of audio (less if less is queued), and the marks now due."""
        size = min(self.frame_bytes, len(self._buffer))
        frame = bytes(self._buffer[:size])
        del self._buffer[:size]
        self._taken += size
        done: list[str] = []
        marks = self._marks
        while marks and marks[0][0] <= self._taken:
            done.append(marks.popleft()[1])
        return frame, done
