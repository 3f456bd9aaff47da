"""What both provider simulators share: the local HTTP server and its request log, the callee
behaviour of dialled numbers, and ``SimulatedCall``, the handle a test holds for one call.

A ``SimulatedCall`` is one call leg as the provider sees it. Its state moves forward through
``CallState`` (RINGING -> ANSWERED -> STREAMING -> ENDED; ENDED can come from any state) and
``wait_for(state)`` returns once the call is in, or has passed through, that state. What the
caller heard is ``received_audio()``: one 20 ms frame per tick from the first media stream's
start, so sample ``i`` was heard ``i / 8000`` s after that start, the same origin as the frames
the caller sent (frame ``n`` of the sent audio has timestamp ``n * 20`` ms).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar
from urllib.parse import parse_qs

import numpy as np
from aiohttp import web

from adapters.simulators.audio import AudioSource, Samples, SilenceSource, dtmf_frames
from adapters.simulators.pacing import NO_IMPAIRMENTS, Impairments, Playout, run_ticks

if TYPE_CHECKING:
    from adapters.simulators.streaming import MediaStream

__all__ = [
    "JUNK_KINDS",
    "CallEnded",
    "CallState",
    "Callee",
    "LocalServer",
    "ProtocolError",
    "RecordedRequest",
    "SimulatedCall",
    "WebhookRecord",
    "record_request",
]

# Longest text kept of a refused frame: enough to recognise it in a failing test's output.
_FRAME_EXCERPT = 200

#: What ``SimulatedCall.inject_junk`` can send on a live stream (``binary`` only when asked).
JUNK_KINDS: tuple[str, ...] = (
    "bad_json", "bad_base64", "unknown_event", "mark_without_name", "error_extra_fields",
)  # fmt: skip


class CallState(enum.IntEnum):
    RINGING = 1
    ANSWERED = 2
    STREAMING = 3
    ENDED = 4


class CallEnded(RuntimeError):
    """``wait_for`` was waiting for a state the call will never reach: it has ended."""


@dataclass(frozen=True, slots=True)
class Callee:
    """How the far end of a number answers an outbound (REST-dialled) call.

    ``ring_ms`` is how long it rings before ``outcome``; a ``no-answer`` callee gives up after
    ``ring_ms`` or the dial's own timeout, whichever is first (carriers do end unanswered calls
    before the provider's timeout). ``source`` makes the callee's voice once it answers.
    """

    outcome: Literal["answer", "busy", "no-answer", "failed"] = "answer"
    ring_ms: int = 50
    source: Callable[[], AudioSource] = SilenceSource
    impairments: Impairments = NO_IMPAIRMENTS
    #: The codec the callee's side negotiates (Telnyx: PCMU, PCMA, G722 or OPUS; Twilio
    #: streams mu-law whatever it is).
    codec: str = "PCMU"


@dataclass(slots=True)
class WebhookRecord:
    """One webhook the simulator sent and what came back (``status`` None: no response)."""

    kind: str
    url: str
    method: str
    headers: dict[str, str]
    body: bytes
    sent_at: float
    status: int | None = None
    response: bytes = b""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """A frame the provider refused: ``code`` is the provider's (Twilio 31951, Telnyx 100003)."""

    code: str
    reason: str
    frame: str


@dataclass(slots=True)
class RecordedRequest:
    """One request to a simulator's REST API, as received. ``auth`` is ``("basic", user,
    password)``, ``("bearer", token)``, another scheme's raw header, or None."""

    method: str
    path: str
    query: dict[str, list[str]]
    form: dict[str, list[str]]
    json: Any
    auth: tuple[str, ...] | None
    headers: dict[str, str]
    body: bytes
    status: int | None = None


CallT = TypeVar("CallT")


class Observatory(Generic[CallT]):
    """What a simulator has seen (its calls and REST requests) and waiting for the next one."""

    def __init__(self) -> None:
        self.calls: dict[str, CallT] = {}
        self.requests: list[RecordedRequest] = []
        #: REST requests the provider refused as invalid (400/422), frame = "METHOD path".
        #: Not the benign races (a command to a call that has just ended).
        self.protocol_errors: list[ProtocolError] = []
        self._changed = asyncio.Event()

    def record_refusal(self, request: RecordedRequest, code: str, detail: str) -> None:
        frame = f"{request.method} {request.path}"
        self.protocol_errors.append(ProtocolError(code, detail, frame[:_FRAME_EXCERPT]))

    async def wait_for_call(
        self, predicate: Callable[[CallT], bool] | None = None, timeout_s: float = 5.0
    ) -> CallT:
        """The first call (oldest first) matching ``predicate``, waiting for one to appear."""
        async with asyncio.timeout(timeout_s):
            while True:
                for call in self.calls.values():
                    if predicate is None or predicate(call):
                        return call
                await self._next_change()

    async def wait_for_request(
        self, predicate: Callable[[RecordedRequest], bool], timeout_s: float = 5.0
    ) -> RecordedRequest:
        """The first recorded REST request matching ``predicate``, waiting for one to come."""
        async with asyncio.timeout(timeout_s):
            while True:
                for request in self.requests:
                    if predicate(request):
                        return request
                await self._next_change()

    async def _next_change(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    def _record_call(self, key: str, call: CallT) -> None:
        self.calls[key] = call
        self._changed.set()


def _auth(header: str | None) -> tuple[str, ...] | None:
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return ("bearer", value.strip())
    if scheme.lower() == "basic":
        try:
            login, colon, password = (
                base64.b64decode(value.strip(), validate=True).decode().partition(":")
            )
        except (binascii.Error, ValueError):
            return ("basic-invalid", value)
        return ("basic", login, password) if colon else ("basic-invalid", value)
    return (header,)


async def record_request(request: web.Request) -> RecordedRequest:
    body = await request.read()
    form: dict[str, list[str]] = {}
    payload: Any = None
    if request.content_type == "application/x-www-form-urlencoded":
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    elif request.content_type == "application/json" and body:
        try:
            payload = await request.json()
        except ValueError:
            payload = None
    query = {key: request.query.getall(key) for key in request.query}
    return RecordedRequest(
        method=request.method,
        path=request.path,
        query=query,
        form=form,
        json=payload,
        auth=_auth(request.headers.get("Authorization")),
        headers=dict(request.headers),
        body=body,
    )


class LocalServer:
    """An aiohttp app served on 127.0.0.1 at an ephemeral port."""

    def __init__(self, app: web.Application) -> None:
        self._runner = web.AppRunner(app, access_log=None)
        self.base_url = ""

    async def start(self) -> str:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        return self.base_url

    async def close(self) -> None:
        await self._runner.cleanup()


class SimulatedCall:
    """One simulated call leg. Provider subclasses add ids, webhooks and commands."""

    def __init__(
        self,
        *,
        direction: Literal["inbound", "outbound"],
        from_: str,
        to: str,
        source: AudioSource,
        impairments: Impairments,
        max_queued_samples: int | None = None,
    ) -> None:
        self.direction = direction
        self.from_ = from_
        self.to = to
        self.source = source
        self.impairments = impairments
        self.state = CallState.RINGING
        self.history: list[CallState] = [CallState.RINGING]
        self.end_reason: str | None = None
        self.events: list[WebhookRecord] = []
        self.protocol_errors: list[ProtocolError] = []
        # Every non-media frame the server sent on a media stream, decoded, in arrival order.
        self.received_messages: list[dict[str, Any]] = []
        self.media_frames_received = 0
        self.media_frames_sent = 0
        self.marks_returned: list[tuple[str, int]] = []  # (name, playout tick it left at)
        self.streams: list[MediaStream] = []
        self.playout = Playout(max_queued_samples)
        self.created_at = time.monotonic()
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.audio_origin: float | None = None
        self._heard: list[Samples] = []
        self.playout_tick = 0  # the playout tick running now
        self._stream: MediaStream | None = None
        self._playout_task: asyncio.Task[None] | None = None
        # Frames that replace the caller's voice next (a key press's tones), oldest first.
        self._overlay: deque[Samples] = deque()
        self.voice = _CallVoice(self)
        self.junk_frames_sent = 0
        # Exceptions that ended a background task: a simulator bug, surfaced by ``wait_until``.
        self.failures: list[BaseException] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Event()

    # --- for tests ------------------------------------------------------------------------------

    @property
    def stream(self) -> MediaStream | None:
        """The media stream open now, if any."""
        return self._stream

    def received_audio(self) -> Samples:
        """What the caller heard, 8 kHz int16, one 20 ms frame per tick since media started."""
        if not self._heard:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self._heard)

    async def wait_for(self, state: CallState, timeout_s: float = 5.0) -> None:
        """Return once the call is in or has passed ``state``; ``CallEnded`` if it never will."""
        await self.wait_until(
            lambda call: state in call.history or call.state is CallState.ENDED, timeout_s
        )
        if state not in self.history:
            raise CallEnded(f"call ended ({self.end_reason}) before reaching {state.name}")

    async def wait_until(self, predicate: Callable[[Any], bool], timeout_s: float = 5.0) -> None:
        """Return once ``predicate(call)`` holds; re-checked whenever the call changes."""
        async with asyncio.timeout(timeout_s):
            while not predicate(self):
                if self.failures:
                    raise RuntimeError("a simulator task failed") from self.failures[0]
                self._changed.clear()
                await self._changed.wait()

    async def send_dtmf(self, digit: str) -> None:
        raise RuntimeError("this call type cannot send DTMF")

    def next_voice_frame(self) -> Samples:
        """The caller's next 20 ms: its source, or a key press's tones while one is down."""
        voice = self.source.next_frame()
        # The source advances even under a key press, so the voice resumes in real time.
        return self._overlay.popleft() if self._overlay else voice

    def press_tones(self, digit: str, duration_ms: int = 100) -> None:
        """Put ``digit``'s DTMF tones in the caller's audio for ``duration_ms``, replacing its
        voice from the next frame (a handset mutes the microphone while a key is down)."""
        self._overlay.extend(dtmf_frames(digit, duration_ms))

    async def inject_junk(
        self, kinds: Sequence[str] = JUNK_KINDS, *, count: int | None = None,
        within_s: float = 0.0,
    ) -> int:  # fmt: skip
        """Send junk frames on the live media stream, between the media frames (which keep
        flowing): ``count`` frames (default one of each kind) cycling through ``kinds``, spread
        evenly over ``within_s`` seconds (0: back to back). Returns how many were sent."""
        stream = self._stream
        if stream is None:
            raise RuntimeError("junk goes on a media stream, and none is open")
        unknown = set(kinds) - {*JUNK_KINDS, "binary"}
        if unknown or not kinds:
            raise ValueError(f"junk kinds are {(*JUNK_KINDS, 'binary')}, not {sorted(unknown)}")
        if (count is not None and count < 0) or within_s < 0:
            raise ValueError("count and within_s cannot be negative")
        total = len(kinds) if count is None else count
        loop = asyncio.get_running_loop()
        origin = loop.time()
        for i in range(total):
            delay = origin + within_s * i / total - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await stream.send_junk(kinds[i % len(kinds)])
            self.junk_frames_sent += 1
        self.notify()
        return total

    def stall_reading(self, stalled: bool = True) -> None:
        """Stop reading the live media stream (``stalled=False``: read again). What the server
        sends then backs up in the socket's buffers, as with a provider side that is stuck."""
        self._open_stream("stall reading").stall_reading(stalled)

    def step_ahead(self, frames: int) -> None:
        """The live stream's sender jumps ``frames`` frames ahead of real time: those frames go
        at once, back to back, and the stream stays that far ahead (a burst)."""
        stream = self._open_stream("step ahead")
        if stream.sender is None:
            raise RuntimeError("the stream has not started sending")
        stream.sender.step_ahead(frames)

    def drop_stream(self) -> None:
        """Cut the live media stream as a network failure would (the provider then reports it
        as it does a lost stream: Telnyx ``streaming.failed``)."""
        self._open_stream("drop the stream").drop()

    def _open_stream(self, what: str) -> MediaStream:
        stream = self._stream
        if stream is None:
            raise RuntimeError(f"cannot {what}: no media stream is open")
        return stream

    async def hang_up(self) -> None:
        raise RuntimeError("this call type cannot hang up")

    # --- for the simulators ---------------------------------------------------------------------

    def notify(self) -> None:
        self._changed.set()

    def set_state(self, state: CallState) -> None:
        if self.state is CallState.ENDED or state <= self.state:
            return
        self.state = state
        self.history.append(state)
        now = time.monotonic()
        if state is CallState.ANSWERED:
            self.answered_at = now
        elif state is CallState.ENDED:
            self.ended_at = now
        self.notify()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in the background for as long as the call's simulator lives."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            self.failures.append(error)
            self.notify()

    def stream_started(self, stream: MediaStream, origin: float) -> None:
        self._stream = stream
        self.streams.append(stream)
        self.set_state(CallState.STREAMING)
        if self._playout_task is None:
            # The caller's ear runs from the first stream to the end of the call, on the same
            # origin as the first stream's sent frames.
            self.audio_origin = origin
            self._playout_task = self.spawn(run_ticks(self._on_tick, origin=origin))

    def stream_ended(self, stream: MediaStream) -> None:
        if self._stream is stream:
            self._stream = None
            # Audio queued on a closed stream never plays; its marks have nobody to go to.
            self.playout.clear()
        self.notify()

    def add_protocol_error(self, code: str, reason: str, frame: str | bytes) -> None:
        text = frame if isinstance(frame, str) else repr(frame[:_FRAME_EXCERPT])
        self.protocol_errors.append(ProtocolError(code, reason, text[:_FRAME_EXCERPT]))
        self.notify()

    def finish(self, reason: str) -> bool:
        """End the call; False if it had already ended."""
        if self.state is CallState.ENDED:
            return False
        self.end_reason = reason
        self.set_state(CallState.ENDED)
        if self._playout_task is not None:
            self._playout_task.cancel()
        return True

    async def close(self) -> None:
        """Stop every background task (the simulator is shutting down)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _on_tick(self, k: int) -> None:
        frame, marks = self.playout.tick()
        self._heard.append(frame)
        self.playout_tick = k
        stream = self._stream
        if marks and stream is not None:
            for name in marks:
                self.marks_returned.append((name, k))
            await stream.send_marks(marks)
        self.notify()


class _CallVoice:
    """What the caller says next: a key press's tones while one is down, else its source."""

    def __init__(self, call: SimulatedCall) -> None:
        self._call = call

    def next_frame(self) -> Samples:
        return self._call.next_voice_frame()
