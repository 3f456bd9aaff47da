"""Real-time audio in both directions of a simulated call.

``PacedSender`` is the caller's side: one 20 ms frame per tick, tick ``n`` due at
``origin + n * 20 ms`` computed from the origin each time, so a late wake-up never shifts the
later frames (no drift from summed sleeps). ``Impairments`` bend that for tests, each from its
own seeded generator so changing one does not change another's pattern:

- ``jitter_ms``: each frame leaves up to that much late (uniform); frames keep their order, as
  on one TCP connection, so late frames bunch up behind each other;
- ``loss``: the probability that a frame never leaves (its counters are not used, so the gap
  shows only in the timestamps, as for a packet lost before the provider);
- ``reorder``: the probability that a frame is held and sent after the next one (Telnyx only:
  Twilio's stream is one TCP connection and cannot reorder);
- ``disconnect_after_ms``: the websocket drops that long after the stream started.

``Playout`` is the provider's side: the queue of audio the server sent, played one 20 ms frame
per tick (silence when empty), with marks returned once the audio queued before them has played
and ``clear`` flushing the queue and returning pending marks. ``run_ticks`` drives it in real time
and never skips a tick, so frame ``k`` of what the caller heard is the frame of tick ``k``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from adapters.simulators.audio import FRAME_MS, FRAME_SAMPLES, AudioSource, Samples

__all__ = [
    "FRAME_S",
    "NO_IMPAIRMENTS",
    "Impairments",
    "PacedSender",
    "Playout",
    "SenderStats",
    "run_ticks",
]

FRAME_S: Final = FRAME_MS / 1000

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Impairments:
    jitter_ms: float = 0.0
    loss: float = 0.0
    reorder: float = 0.0
    disconnect_after_ms: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.jitter_ms < 0:
            raise ValueError("jitter_ms cannot be negative")
        for name in ("loss", "reorder"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} is a probability between 0 and 1")
        if self.disconnect_after_ms is not None and self.disconnect_after_ms < 0:
            raise ValueError("disconnect_after_ms cannot be negative")


NO_IMPAIRMENTS: Final = Impairments()


@dataclass(slots=True)
class SenderStats:
    generated: int = 0
    sent: int = 0
    lost: int = 0
    reordered: int = 0


async def _sleep_until(deadline: float, now: Clock, sleep: Sleep) -> None:
    delay = deadline - now()
    if delay > 0:
        await sleep(delay)


class PacedSender:
    """Sends ``source``'s frames in real time from ``origin`` (a ``now()`` reading).

    ``build(n, samples)`` turns frame ``n`` into a message when it is generated (so counters a
    provider stamps at capture time keep that order even if the frame is reordered); ``send``
    delivers it. ``run`` returns True when the scheduled disconnect is due, and runs until
    cancelled otherwise.
    """

    def __init__(
        self,
        source: AudioSource,
        build: Callable[[int, Samples], Any],
        send: Callable[[Any], Awaitable[None]],
        impairments: Impairments = NO_IMPAIRMENTS,
        *,
        origin: float,
        now: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.source = source
        self.impairments = impairments
        self.origin = origin
        self.stats = SenderStats()
        self._build = build
        self._send = send
        self._now = now
        self._sleep = sleep
        seed = impairments.seed
        self._loss_rng = random.Random(seed)
        self._reorder_rng = random.Random(seed + 1)
        self._jitter_rng = random.Random(seed + 2)

    def step_ahead(self, frames: int) -> None:
        """The sender's clock steps forward ``frames`` frames (a provider's media server
        catching up after a hiccup, or a clock that jumps): the next ``frames`` frames go back
        to back at once, and the stream stays that far ahead of real time."""
        if frames < 0:
            raise ValueError("a clock steps forward: frames cannot be negative")
        self.origin -= frames * FRAME_S

    async def run(self) -> bool:
        imp = self.impairments
        disconnect_at = (
            None
            if imp.disconnect_after_ms is None
            else self.origin + imp.disconnect_after_ms / 1000
        )
        last_sent = self.origin
        held: Any = None
        n = 0
        while True:
            due = self.origin + n * FRAME_S
            if disconnect_at is not None and due >= disconnect_at:
                await _sleep_until(disconnect_at, self._now, self._sleep)
                return True
            await _sleep_until(due, self._now, self._sleep)
            samples = self.source.next_frame()
            self.stats.generated += 1
            n += 1
            if imp.loss and self._loss_rng.random() < imp.loss:
                self.stats.lost += 1
                continue
            message = self._build(n - 1, samples)
            if held is None and imp.reorder and self._reorder_rng.random() < imp.reorder:
                held = message
                continue
            delay = self._jitter_rng.uniform(0, imp.jitter_ms) / 1000 if imp.jitter_ms else 0.0
            # Never before the previous frame: jitter delays frames, it does not reorder them.
            last_sent = max(due + delay, last_sent)
            await _sleep_until(last_sent, self._now, self._sleep)
            await self._send(message)
            self.stats.sent += 1
            if held is not None:
                await self._send(held)
                self.stats.sent += 1
                self.stats.reordered += 1
                held = None


class Playout:
    """The provider's playback queue for one call: audio and marks in the order received.

    ``tick()`` plays the next frame: up to 160 queued samples, padded with silence when fewer
    are queued (a provider plays silence on underrun rather than waiting). A mark is returned by
    the tick after the one that played the last of the audio queued before it, i.e. once that
    audio has finished playing; a mark with nothing before it comes back at once.
    """

    def __init__(self, max_queued_samples: int | None = None) -> None:
        self.max_queued_samples = max_queued_samples
        self._queue: deque[Samples | str] = deque()
        self._offset = 0  # samples of the head array already played
        self._queued = 0
        self._finishing: list[str] = []  # marks whose audio is in the frame playing now
        self._playing = False  # whether the frame playing now holds queued audio

    @property
    def queued_samples(self) -> int:
        return self._queued

    def queue_audio(self, samples: Samples) -> bool:
        """Queue audio; False (and nothing queued) if it would exceed ``max_queued_samples``."""
        limit = self.max_queued_samples
        if limit is not None and self._queued + len(samples) > limit:
            return False
        if len(samples):
            self._queue.append(samples)
            self._queued += len(samples)
        return True

    def queue_mark(self, name: str) -> list[str]:
        """Queue a mark; returns the marks to send back now (this one if nothing is ahead)."""
        if self._queue:
            self._queue.append(name)
        elif self._playing:
            self._finishing.append(name)
        else:
            return [name]
        return []

    def clear(self) -> list[str]:
        """Drop all queued audio; returns every pending mark, in order."""
        flushed = self._finishing + [item for item in self._queue if isinstance(item, str)]
        self._queue.clear()
        self._finishing = []
        self._offset = 0
        self._queued = 0
        return flushed

    def tick(self) -> tuple[Samples, list[str]]:
        """The frame that plays now, and the marks whose audio has finished playing."""
        done, self._finishing = self._finishing, []
        frame = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        filled = 0
        queue = self._queue
        while queue:
            head = queue[0]
            if isinstance(head, str):
                queue.popleft()
                # Audio before it is in this frame: it is done when this frame has played.
                (self._finishing if filled else done).append(head)
                continue
            if filled == FRAME_SAMPLES:
                break
            take = min(FRAME_SAMPLES - filled, len(head) - self._offset)
            frame[filled : filled + take] = head[self._offset : self._offset + take]
            filled += take
            self._offset += take
            self._queued -= take
            if self._offset == len(head):
                queue.popleft()
                self._offset = 0
        self._playing = filled > 0
        return frame, done


async def run_ticks(
    on_tick: Callable[[int], Awaitable[None]],
    *,
    origin: float,
    now: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
) -> None:
    """Call ``on_tick(k)`` at ``origin + k * 20 ms`` for k = 0, 1, ... until cancelled.

    Overdue ticks run back to back rather than being skipped: the caller's timeline must keep one
    frame per tick even after the event loop stalls.
    """
    k = 0
    while True:
        await _sleep_until(origin + k * FRAME_S, now, sleep)
        await on_tick(k)
        k += 1
