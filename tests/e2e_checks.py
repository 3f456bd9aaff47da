"""What every end-to-end test checks the same way: the audio each caller received, judged per
20 ms frame by the load test's checker, and that no simulator recorded a protocol error.

Audio. Callers speak a ``Voice`` (``VoiceSource``: a tone on an exact DFT bin with phase
markers, see ``benchmarks/loadtest/checker.py``). ``tap(call)`` records every frame the
simulated provider received from callbridge for that call, in arrival order, while the call's
playout still runs as the provider's would. ``hearing(...)`` waits until the listener's room is
established (a frame holding every expected voice at its level) and ``LISTEN_FRAMES`` more
frames have arrived, then judges them all with ``judge``: each expected voice within 1.5 dB, no
own tone, no foreign audio, no frame duplicated, no silent frame once established (issue 10,
point 8), no voice missing beyond what a late arrival explains (``MAX_LATE_RUN``). Judging what
arrived rather than what the playout played at each tick keeps the check about identity, not
timing: a frame that arrives late on a busy machine is still the right frame.

Protocol errors. The harnesses pass every simulator they start to ``watch``; the autouse fixture
in ``conftest.py`` then fails the test at teardown if any call of those simulators recorded a
protocol error (a frame or document the provider would refuse), unless the test declares the
codes it provokes with ``@pytest.mark.expect_protocol_errors("31951", ...)``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from adapters.simulators import SimulatedCall, TelnyxSimulator, TwilioSimulator
from adapters.simulators.pacing import Playout, run_ticks
from benchmarks.loadtest.frames import FRAME_SAMPLES
from benchmarks.loadtest.judge import Hearing, Voice, VoiceSource, judge
from benchmarks.loadtest.plan import top_level_dbfs
from media.codecs import PCMU_8K, encode
from media.mix_results import SHED_AFTER_TICKS

__all__ = [
    "LISTEN_FRAMES",
    "Tap",
    "bot_hearing",
    "check_protocol_errors",
    "hearing",
    "speak_to_bot",
    "tap",
    "voices",
    "watch",
    "watched_protocol_errors",
]

LISTEN_FRAMES: Final = 60  # 1.2 s once established: three marker periods of every voice
# callbridge never sends a listener silence in place of late frames (media/mix_audible.py: a
# listener all of whose speakers are late is sent nothing that tick), so a silent frame once the
# room is established is never accepted: it can only be a routing or switching fault. A voice
# can still be missing from a frame that carries the others: the mixer starts each mixed leg
# with a one-frame cushion (media/mixer.py), but a frame more than 20 ms late is left out of the
# mix of a room of three or more, and after a burst the mixer drops one of two frames that stood
# SHED_AFTER_TICKS ticks. On a loaded machine, where the simulators share the event loop with the
# engine, that is timing, not identity (issue 10, point 9): a voice may miss up to MAX_LATE_RUN
# frames in a row (a 100 ms stall; an interrupted stream or a lost route is longer) and lose one
# frame per SHED_AFTER_TICKS. Misrouted, duplicated and silent frames are never accepted.
MAX_LATE_RUN: Final = 5
WAIT_S: Final = 5.0

Frame = npt.NDArray[np.int16]

# --- audio -------------------------------------------------------------------------------------


def voices(count: int, room_size: int | None = None) -> list[Voice]:
    """``count`` voices 300 Hz and more apart, loud enough that ``room_size - 1`` of them
    summed stay below full scale (as the load test's plan), markers staggered."""
    level = top_level_dbfs(room_size or count)
    return [Voice(bin=9 + 6 * i, level_dbfs=level, marker_offset=7 * i) for i in range(count)]


class Tap(Playout):
    """A provider's playout that also keeps every frame it was given, as given."""

    def __init__(self, max_queued_samples: int | None) -> None:
        super().__init__(max_queued_samples)
        self.frames: list[Frame] = []
        self._partial: Frame = np.zeros(0, dtype=np.int16)

    def queue_audio(self, samples: Frame) -> bool:
        accepted = super().queue_audio(samples)
        if accepted:
            # Frames are cut at 160 samples whatever the message size, as the playout hears them.
            pending = np.concatenate((self._partial, samples))
            whole = pending.size // FRAME_SAMPLES * FRAME_SAMPLES
            self.frames.extend(pending[:whole].reshape(-1, FRAME_SAMPLES))
            self._partial = pending[whole:]
        return accepted


def tap(call: SimulatedCall) -> Tap:
    """Record what ``call`` receives from now on; call it before its media stream starts."""
    assert not call.streams, "tap a call before its media starts, or frames go unrecorded"
    ear = Tap(call.playout.max_queued_samples)
    call.playout = ear
    return ear


class _Listener(Protocol):
    def frames(self) -> Sequence[Frame]: ...

    async def wait(self, check: Callable[[], bool]) -> None: ...


async def _hearing(ear: _Listener, hears: Sequence[Voice], own: Voice, listen: int) -> Hearing:
    scanned = 0
    established: int | None = None

    def room_established() -> bool:
        # Only frames not scanned yet are judged here: a wait costs one small FFT per change.
        nonlocal scanned, established
        got = ear.frames()
        if established is None and len(got) > scanned:
            found = judge(np.stack(got[scanned:]), hears, own).established_at
            established = None if found is None else scanned + found
            scanned = len(got)
        return established is not None

    await ear.wait(room_established)
    assert established is not None
    await ear.wait(lambda: len(ear.frames()) >= established + listen)
    return judge(np.stack(ear.frames()), hears, own)


def _assert_clean(result: Hearing, who: str, listen: int) -> None:
    # The mixer shares the machine with the simulators: what late arrivals explain is latency.
    problems = result.problems(
        max_gap_run=MAX_LATE_RUN, max_lost=len(result.markers) * (result.frames // SHED_AFTER_TICKS)
    )
    assert problems == [], f"{who}: {problems}"
    assert result.established_at is not None
    assert result.frames - result.established_at >= listen
    # At least two marker turns of each voice: duplication and loss were really counted.
    assert min(result.markers, default=2) >= 2, f"{who}: marker turns {result.markers}"


class _CallEar:
    def __init__(self, call: SimulatedCall, ear: Tap, timeout_s: float, start: int = 0) -> None:
        self.call, self.ear, self.timeout_s, self.start = call, ear, timeout_s, start

    def frames(self) -> Sequence[Frame]:
        return self.ear.frames[self.start :] if self.start else self.ear.frames

    async def wait(self, check: Callable[[], bool]) -> None:
        # The call changes at every playout tick, so the check runs at least every 20 ms.
        await self.call.wait_until(lambda _call: check(), self.timeout_s)


async def hearing(
    call: SimulatedCall,
    hears: Sequence[Voice],
    own: Voice,
    *,
    listen: int = LISTEN_FRAMES,
    timeout_s: float = WAIT_S,
) -> Hearing:
    """What ``call`` (tapped) received until ``listen`` frames after its room was established,
    asserted clean: ``hears`` exactly, at their levels, never ``own``, nothing missing."""
    assert isinstance(call.playout, Tap), "tap(call) before its media starts"
    result = await _hearing(_CallEar(call, call.playout, timeout_s), hears, own, listen)
    _assert_clean(result, f"{call.from_} -> {call.to}", listen)
    return result


async def hearing_since(
    call: SimulatedCall,
    start: int,
    hears: Sequence[Voice],
    own: Voice,
    *,
    listen: int = LISTEN_FRAMES,
    timeout_s: float = WAIT_S,
) -> Hearing:
    """``hearing`` on the frames the call received from frame ``start`` on: what it hears once
    something before (an engine restart, an outage) is over, judged as strictly."""
    assert isinstance(call.playout, Tap), "tap(call) before its media starts"
    ear = _CallEar(call, call.playout, timeout_s, start)
    result = await _hearing(ear, hears, own, listen)
    _assert_clean(result, f"{call.from_} -> {call.to} from frame {start}", listen)
    return result


# --- a websocket agent (tests/wsagent_bot.py) ---------------------------------------------------


class _Bot(Protocol):
    """What ``BotSession`` offers that is used here."""

    def heard(self, from_frame: int = 0, frames: int | None = None) -> npt.NDArray[Any]: ...

    def media(self) -> list[dict[str, Any]]: ...

    async def wait_for(self, check: Callable[[], bool]) -> None: ...

    async def send_media(self, payload: bytes) -> None: ...


class _BotEar:
    def __init__(self, session: _Bot) -> None:
        self.session = session
        self._frames: list[Frame] = []
        self._messages = 0  # media messages decoded so far
        self._partial: Frame = np.zeros(0, dtype=np.int16)

    def frames(self) -> Sequence[Frame]:
        # Decode only the media messages not decoded yet, cut at 160 samples whatever their size.
        count = len(self.session.media())
        if count > self._messages:
            fresh = self.session.heard(from_frame=self._messages, frames=count - self._messages)
            pending = np.concatenate((self._partial, fresh.astype(np.int16)))
            whole = pending.size // FRAME_SAMPLES * FRAME_SAMPLES
            self._frames.extend(pending[:whole].reshape(-1, FRAME_SAMPLES))
            self._partial, self._messages = pending[whole:], count
        return self._frames

    async def wait(self, check: Callable[[], bool]) -> None:
        await self.session.wait_for(check)


async def bot_hearing(
    session: _Bot, hears: Sequence[Voice], own: Voice, *, listen: int = LISTEN_FRAMES
) -> Hearing:
    """As ``hearing``, for what a websocket bot received from callbridge."""
    result = await _hearing(_BotEar(session), hears, own, listen)
    _assert_clean(result, "bot", listen)
    return result


def speak_to_bot(session: _Bot, voice: Voice) -> asyncio.Task[None]:
    """The bot speaks ``voice`` in real time (one mu-law frame per 20 ms tick, as Twilio
    Media Streams carry) until the task is cancelled or callbridge closes the socket."""
    source = VoiceSource(voice)

    async def tick(_k: int) -> None:
        await session.send_media(encode(PCMU_8K, source.next_frame()))

    async def run() -> None:
        try:
            await run_ticks(tick, origin=time.monotonic())
        except ConnectionResetError:  # callbridge closed the socket: the bot stops talking
            return

    return asyncio.ensure_future(run())


# --- protocol errors ---------------------------------------------------------------------------

Simulator = TwilioSimulator | TelnyxSimulator
_watched: list[Simulator] = []


def watch(*simulators: Simulator) -> None:
    """Have the test's teardown check these simulators' calls for protocol errors."""
    _watched.extend(simulators)


def check_protocol_errors(expected: Sequence[str] | None) -> None:
    """The teardown check: the watched simulators recorded no protocol error, or, when the test
    declared ``expected`` codes, at least one and only of those codes. Forgets the simulators."""
    errors = watched_protocol_errors()
    allowed = set(expected or ())
    unexpected = [error for error in errors if error[1] not in allowed]
    assert not unexpected, f"the simulators recorded protocol errors: {unexpected}"
    if expected is not None:
        assert errors, f"expected protocol errors {sorted(allowed)}, none were recorded"


def watched_protocol_errors() -> list[tuple[str, str, str]]:
    """(call, code, reason) of every protocol error the watched simulators' calls recorded;
    forgets the simulators (a test's teardown calls it once)."""
    found = [
        (f"{call.from_} -> {call.to}", error.code, error.reason)
        for simulator in _watched
        for call in simulator.calls.values()
        for error in call.protocol_errors
    ]
    _watched.clear()
    return found
