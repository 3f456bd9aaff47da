"""The call side of the Telnyx simulator: one ``TelnyxCall`` per leg, incoming or dialled.

An incoming call sends ``call.initiated`` (``direction: incoming``, ``state: parked``) to the
webhook URL of its number's connection and then waits for commands, as Telnyx does; a dialled
call sends ``call.initiated`` (``outgoing``, ``bridging``) and rings its callee per the
configured ``Callee``. Commands arrive through the REST server as ``answer``, ``hangup``,
``reject``, ``streaming_start`` and ``streaming_stop``; each checks the leg's state first and
raises ``CommandError`` with Telnyx's status and code (422 ``90018`` once the leg has ended).

A call has a negotiated ``codec`` (PCMU by default, PCMA, G722 or OPUS) that its streams carry
unless transcoded (see ``telnyx_stream``), and a ``stream_fault`` can make its streams fail:
``streaming.failed`` instead of a connection, or no connection and no word at all.

This module owns the leg: its state, its commands, its streams' lifecycle and what each of its
webhooks says (``emit``). Their delivery (signing, order, ``WebhookFaults``) is
``telnyx_webhooks``'s; ``replay_webhook`` re-sends a delivered one later.

``hangup_source`` follows Telnyx's meaning, the party that ended the call: the remote party
hanging up is the ``caller`` of an incoming leg and the ``callee`` of a dialled one; a hangup
the application commands over the API comes from our side of the leg, so the opposite.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.simulators.audio import AudioSource
from adapters.simulators.codecs import ByteOrder
from adapters.simulators.common import Callee, CallState, SimulatedCall, WebhookRecord
from adapters.simulators.pacing import Impairments
from adapters.simulators.streaming import StreamEnd, StreamOpenError
from adapters.simulators.telnyx_stream import (
    CALL_CODECS,
    StreamConfig,
    StreamConfigError,
    TelnyxStream,
)
from adapters.simulators.telnyx_webhooks import NO_FAULTS, WebhookFaults, WebhookOutbox
from adapters.simulators.wire import telnyx_time

__all__ = [
    "NO_FAULTS",
    "CommandError",
    "StreamFault",
    "TelnyxAccount",
    "TelnyxCall",
    "TelnyxConnection",
    "WebhookFaults",
]

#: How a call's media streams fail: ``fail`` sends ``streaming.failed`` instead of connecting;
#: ``never`` never connects and sends nothing (a stream lost inside Telnyx).
StreamFault = Literal["fail", "never"]

DTMF_DIGITS: Final = frozenset("0123456789*#ABCD")
# Events whose SDK payload models carry ``start_time`` (telnyx types/call_initiated.py,
# call_answered.py, call_hangup.py).
_TIMED_EVENTS: Final = frozenset({"call.initiated", "call.answered", "call.hangup"})
# Telnyx ignores a repeated command_id on one leg within this window (PROTOCOLS.md 1.4).
COMMAND_ID_WINDOW_S: Final = 60.0
_REJECT_CAUSES: Final = {
    "CALL_REJECTED": ("call_rejected", "603"),
    "USER_BUSY": ("user_busy", "486"),
    "NOT_FOUND": ("not_found", "404"),
    "TEMPORARILY_UNAVAILABLE": ("unspecified", "480"),
}
# How a dialled call ends when the callee does not answer: (hangup_cause, source, SIP code).
_UNANSWERED: Final = {
    "busy": ("user_busy", "callee", "486"),
    "no-answer": ("no_answer", "callee", "480"),
    "failed": ("unspecified", "unknown", "503"),
    "timeout": ("timeout", "unknown", "487"),
}


class CommandError(Exception):
    """A command Telnyx refuses; rendered as ``{"errors": [{code, title, detail}]}``."""

    def __init__(
        self, status: int, code: str, title: str, detail: str, pointer: str | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.title, self.detail = status, code, title, detail
        #: JSON pointer to the offending field (Telnyx's ``source.pointer``), if one is.
        self.pointer = pointer


def _not_answered() -> CommandError:
    return CommandError(422, "10015", "Bad Request", "Call must be answered first")


@dataclass(slots=True)
class TelnyxConnection:
    """A Call Control application: where its legs' webhooks go."""

    id: str
    webhook_event_url: str | None = None
    application_name: str = "callbridge-sim"
    # Where a webhook the primary URL did not take (no 2xx) is sent again.
    webhook_event_failover_url: str | None = None


@dataclass(slots=True)
class TelnyxAccount:
    private_key: Ed25519PrivateKey
    session: aiohttp.ClientSession
    connections: dict[str, TelnyxConnection]
    webhook_timeout_s: float = 10.0
    l16_byte_order: ByteOrder = "big"


class TelnyxCall(SimulatedCall):
    def __init__(
        self,
        account: TelnyxAccount,
        *,
        direction: Literal["inbound", "outbound"],
        from_: str,
        to: str,
        connection_id: str,
        source: AudioSource,
        impairments: Impairments,
        faults: WebhookFaults = NO_FAULTS,
        webhook_url: str | None = None,
        client_state: str | None = None,
        timeout_secs: int = 30,
        callee: Callee | None = None,
        stream: StreamConfig | None = None,
        codec: str = "PCMU",
        stream_fault: StreamFault | None = None,
    ) -> None:
        if codec not in CALL_CODECS:
            raise ValueError(f"a simulated Telnyx call negotiates one of {sorted(CALL_CODECS)}")
        super().__init__(
            direction=direction, from_=from_, to=to, source=source, impairments=impairments
        )
        self.account = account
        self.call_control_id = "v3:" + secrets.token_urlsafe(24)
        self.call_leg_id = str(uuid.uuid4())
        self.call_session_id = str(uuid.uuid4())
        self.connection_id = connection_id
        self.faults = faults
        self.webhook_url = webhook_url
        self.client_state = client_state
        self.timeout_secs = timeout_secs
        self.callee = callee
        self.dial_stream = stream
        #: The codec negotiated with the caller's side; streams carry it unless transcoded.
        self.codec = codec
        #: While set, every stream this call opens fails this way (tests may change it).
        self.stream_fault: StreamFault | None = stream_fault
        #: Media frames callbridge sent that nobody heard (target legs ``opposite``).
        self.media_frames_discarded = 0
        #: Streams this call set out to open (faulted or not).
        self.streams_attempted = 0
        self.start_time = datetime.now(UTC)
        self.hangup: tuple[str, str, str] | None = None  # (hangup_cause, source, SIP code)
        self._commands: dict[str, float] = {}
        self._outbox = WebhookOutbox(self)
        self._ringing_over = asyncio.Event()
        self._media: TelnyxStream | None = None
        self._stopped: set[TelnyxStream] = set()  # streams told to stop by streaming_stop
        self._media_task: asyncio.Task[None] | None = None
        self.spawn(self._outbox.run())

    @property
    def id(self) -> str:
        return self.call_control_id

    @property
    def telnyx_direction(self) -> str:
        return "incoming" if self.direction == "inbound" else "outgoing"

    def start(self) -> None:
        if self.direction == "inbound":
            self.emit("call.initiated", direction="incoming", state="parked")
        else:
            self.spawn(self._run_outbound())

    # --- test controls ---------------------------------------------------------------------------

    async def hang_up(self) -> None:
        """The remote party hangs up: the caller of an incoming leg, the callee of a dialled one."""
        answered = self.state >= CallState.ANSWERED
        if self.direction == "inbound":
            await self.end(*(("normal_clearing", "caller", "200") if answered
                             else ("originator_cancel", "caller", "487")))  # fmt: skip
        else:
            await self.end(*(("normal_clearing", "callee", "200") if answered
                             else ("call_rejected", "callee", "603")))  # fmt: skip

    async def send_dtmf(self, digit: str, *, tones_ms: int | None = None) -> None:
        """The caller presses ``digit``: a ``dtmf`` frame on the stream and
        ``call.dtmf.received``, plus, with ``tones_ms``, the key's tones in its audio."""
        if digit not in DTMF_DIGITS:
            raise ValueError(f"not a DTMF digit: {digit!r}")
        if self.state is CallState.ENDED or self.state < CallState.ANSWERED:
            raise RuntimeError("DTMF needs an answered, live call")
        if tones_ms is not None:
            self.press_tones(digit, tones_ms)
        if self.stream is not None:
            await self.stream.send_dtmf(digit)
        self.emit("call.dtmf.received", digit=digit)

    async def replay_webhook(
        self, record: WebhookRecord, *, age_s: int = 600, corrupt_signature: bool = False
    ) -> WebhookRecord:
        """Send a delivered webhook's exact body again, signed ``age_s`` seconds in the past
        (a captured request replayed), or with a signature that does not verify."""
        return await self._outbox.post(
            f"replay:{record.kind}", record.url, record.body, int(time.time()) - age_s,
            corrupt=corrupt_signature,
        )  # fmt: skip

    # --- commands (from the REST server) -------------------------------------------------------

    def repeated_command(self, command_id: object) -> bool:
        """True if ``command_id`` was already used on this leg within the last 60 s."""
        if not isinstance(command_id, str):
            return False
        now = time.monotonic()
        seen = self._commands.get(command_id)
        if seen is not None and now - seen < COMMAND_ID_WINDOW_S:
            return True
        self._commands[command_id] = now
        return False

    def answer(self, body: Mapping[str, Any]) -> None:
        if self.direction != "inbound":
            raise CommandError(422, "10015", "Bad Request", "Only incoming calls can be answered")
        if self.state >= CallState.ANSWERED:
            raise CommandError(422, "10015", "Bad Request", "Call has already been answered")
        config = _stream_config(body, with_token=False)
        self._answered()
        if config is not None:
            self.open_stream(config)

    def api_hangup(self) -> None:
        answered = self.state >= CallState.ANSWERED
        if self.direction == "inbound":
            ended = self.mark_ended("normal_clearing", "callee", "200")
        elif answered:
            ended = self.mark_ended("normal_clearing", "caller", "200")
        else:
            ended = self.mark_ended("originator_cancel", "caller", "487")
        if ended:
            self.spawn(self.tear_down())

    def reject(self, body: Mapping[str, Any]) -> None:
        if self.direction != "inbound" or self.state >= CallState.ANSWERED:
            raise CommandError(422, "10015", "Bad Request", "Only unanswered incoming calls")
        cause = _REJECT_CAUSES.get(str(body.get("cause")))
        if cause is None:
            raise CommandError(422, "10004", "Missing required parameter",
                               f"cause must be one of {sorted(_REJECT_CAUSES)}")  # fmt: skip
        if self.mark_ended(cause[0], "callee", cause[1]):
            self.spawn(self.tear_down())

    def streaming_start(self, body: Mapping[str, Any]) -> None:
        if self.state < CallState.ANSWERED:
            raise _not_answered()
        config = _stream_config(body, with_token=True)
        if config is None:
            raise CommandError(422, "10004", "Missing required parameter", "stream_url")
        previous = self._media_task
        if previous is not None and not previous.done() and self._media not in self._stopped:
            raise CommandError(
                422,
                "10015",
                "Bad Request",
                "A stream is already active (the simulator runs one at a time)",
            )
        # A stream told to stop finishes closing (``stop`` frame, ``streaming.stopped``) first.
        self._media_task = self.spawn(self._run_stream(config, after=previous))

    def streaming_stop(self, body: Mapping[str, Any]) -> None:
        if self.state < CallState.ANSWERED:
            raise _not_answered()
        stream = self._media
        wanted = body.get("stream_id")
        if stream is not None and wanted in (None, stream.stream_id):
            self._stopped.add(stream)
            self.spawn(stream.stop())

    # --- the leg's life --------------------------------------------------------------------------

    async def _run_outbound(self) -> None:
        self.emit("call.initiated", direction="outgoing", state="bridging")
        callee = self.callee or Callee()
        ring_s, outcome = callee.ring_ms / 1000, str(callee.outcome)
        if ring_s >= self.timeout_secs and outcome in ("answer", "no-answer"):
            ring_s, outcome = float(self.timeout_secs), "timeout"
        try:
            await asyncio.wait_for(self._ringing_over.wait(), ring_s)
            return  # ended while ringing
        except TimeoutError:
            pass
        if outcome != "answer":
            await self.end(*_UNANSWERED[outcome])
            return
        self.source = callee.source()
        self.impairments = callee.impairments
        self._answered()
        if self.dial_stream is not None:
            self.open_stream(self.dial_stream)

    def _answered(self) -> None:
        self.set_state(CallState.ANSWERED)
        self.emit("call.answered", state="answered")

    def open_stream(self, config: StreamConfig) -> None:
        self._media_task = self.spawn(self._run_stream(config))

    async def _run_stream(
        self, config: StreamConfig, after: asyncio.Task[None] | None = None
    ) -> None:
        if after is not None:
            with contextlib.suppress(Exception):
                await after
            if self.state is CallState.ENDED:
                return
        stream = TelnyxStream(self, config, self.account.l16_byte_order)
        self._media = stream
        self.streams_attempted += 1
        self.notify()
        if self.stream_fault == "never":
            return
        if self.stream_fault == "fail":
            self.emit("streaming.failed", failure_reason="simulated: stream could not connect",
                      stream_id=stream.stream_id, stream_type="websocket",
                      stream_params={"stream_url": config.url, "track": config.track})  # fmt: skip
            return
        try:
            await stream.open()
        except StreamOpenError as exc:
            self.emit("streaming.failed", failure_reason=exc.reason, stream_id=stream.stream_id,
                      stream_type="websocket",
                      stream_params={"stream_url": config.url, "track": config.track})  # fmt: skip
            return
        if self.state is CallState.ENDED:
            await stream.abort()
            return
        self.emit("streaming.started", stream_url=config.url)
        end = await stream.run()
        if end is StreamEnd.DROPPED:
            self.emit("streaming.failed", failure_reason="websocket connection lost",
                      stream_id=stream.stream_id, stream_type="websocket",
                      stream_params={"stream_url": config.url, "track": config.track})  # fmt: skip
        else:
            self.emit("streaming.stopped", stream_url=config.url)

    async def end(self, cause: str, source: str, sip: str) -> None:
        if self.mark_ended(cause, source, sip):
            await self.tear_down()

    def mark_ended(self, cause: str, source: str, sip: str) -> bool:
        """The call is over from now on (False if it already was); ``tear_down`` follows."""
        if not self.finish(cause):
            return False
        self.hangup = (cause, source, sip)
        self._ringing_over.set()
        return True

    async def tear_down(self) -> None:
        """Stop the stream (``stop`` frame, ``streaming.stopped``), then send ``call.hangup``."""
        if self._media is not None:
            await self._media.stop()
        task = self._media_task
        if task is not None and task is not asyncio.current_task():
            with contextlib.suppress(Exception):
                await task
        assert self.hangup is not None
        cause, source, sip = self.hangup
        # Telnyx's "inbound" is what came from the caller: the frames the simulator sent.
        stats = {
            "inbound": {"packet_count": str(self.media_frames_sent), "skip_packet_count": "0"},
            "outbound": {"packet_count": str(self.media_frames_received), "skip_packet_count": "0"},
        }
        self.emit("call.hangup", hangup_cause=cause, hangup_source=source, sip_hangup_cause=sip,
                  state="hangup", call_quality_stats=stats)  # fmt: skip

    # --- webhooks --------------------------------------------------------------------------------

    def emit(self, event_type: str, **extra: Any) -> None:
        """``event_type`` happened: its payload as Telnyx sends it, queued for delivery."""
        payload: dict[str, Any] = {
            "call_control_id": self.call_control_id,
            "call_leg_id": self.call_leg_id,
            "call_session_id": self.call_session_id,
            "connection_id": self.connection_id,
            "client_state": self.client_state,
        }
        if event_type.startswith("call."):
            # The SDK's streaming.* payloads have no parties or start time
            # (types/call_streaming_started.py and siblings); call.* payloads do.
            payload.update({"from": self.from_, "to": self.to})
        if event_type in _TIMED_EVENTS:
            payload["start_time"] = telnyx_time(self.start_time)
        payload.update(extra)
        self._outbox.put(event_type, payload)

    def to_json(self) -> dict[str, Any]:
        return {
            "call_control_id": self.call_control_id,
            "call_leg_id": self.call_leg_id,
            "call_session_id": self.call_session_id,
            "client_state": self.client_state,
            "is_alive": self.state is not CallState.ENDED and self.state >= CallState.ANSWERED,
            "record_type": "call",
            "start_time": telnyx_time(self.start_time),
        }


def _stream_config(body: Mapping[str, Any], *, with_token: bool) -> StreamConfig | None:
    try:
        return StreamConfig.parse(body, with_token=with_token)
    except StreamConfigError as exc:
        raise CommandError(422, exc.code, exc.title, exc.detail, exc.pointer) from None
