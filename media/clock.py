"""The drift-free 20 ms media tick.

``TickClock`` is pure: it reads an injected time source and counts. Tick ``n`` is due at
``start + n * interval``, computed from the start each time rather than by adding up sleeps, so
sleep overshoot never accumulates: a loop that wakes late runs the overdue ticks back to back and
stays on the grid. A loop that falls more than ``max_catch_up`` ticks behind (a long stall) skips
the excess instead of bursting through it; skipped tick numbers are never run, so the numbers
``on_tick`` sees stay aligned with time.

``run_ticks`` is the thin asyncio driver: run the due ticks, sleep until the next one, the sleep
rounded up to a whole millisecond: libuv (uvloop, the engine's loop) keeps timers in whole
milliseconds and fires one up to a millisecond early, so an exact sleep woke the loop about ten
times per tick under uvloop for nothing (measured: 2,237 sleeps for 200 ticks, 200 rounded; the
median lateness stays under a millisecond either way). Given a
``TickObserver`` (the app's metrics), it reports each tick's duration and lateness, and skipped
ticks, as they happen: one extra clock read per tick, since the read that dated the tick's start
(its lateness) also starts its duration.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

# Slack for float rounding when comparing a time with a due time: tick n's due time
# start + n * interval can land a few ulps past the "now" of a fake clock that slept exactly
# until it, and must still count as due.
_EPSILON = 1e-9


@dataclass(slots=True)
class TickStats:
    ticks: int = 0
    late: int = 0
    skipped: int = 0
    max_lateness: float = 0.0


class TickObserver(Protocol):
    """Told about every tick ``run_ticks`` runs, and about ticks it skips."""

    def observe_tick(self, duration_s: float, lateness_s: float) -> None:
        """One tick ran: ``on_tick`` took ``duration_s``, starting ``lateness_s`` after due."""

    def ticks_skipped(self, count: int) -> None:
        """``count`` ticks fell beyond ``max_catch_up`` and were skipped."""


class TickClock:
    def __init__(
        self,
        interval: float = 0.020,
        now: Callable[[], float] = time.monotonic,
        *,
        max_catch_up: int = 5,
        late_threshold: float | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, not {interval}")
        if max_catch_up < 1:
            raise ValueError(f"max_catch_up must be at least 1, not {max_catch_up}")
        self.interval = interval
        self.max_catch_up = max_catch_up
        self.late_threshold = interval / 2 if late_threshold is None else late_threshold
        self._now = now
        self._start: float | None = None
        self._next_tick = 0
        self._stats = TickStats()
        self.last_started = 0.0  # when the last tick was advanced (its duration starts here)
        self.last_lateness = 0.0  # how late after its due time it was advanced

    @property
    def started(self) -> bool:
        return self._start is not None

    @property
    def stats(self) -> TickStats:
        return dataclasses.replace(self._stats)

    @property
    def skipped(self) -> int:
        """Ticks skipped so far (``stats.skipped`` without copying the stats)."""
        return self._stats.skipped

    def now(self) -> float:
        """The clock's time source (what ``run_ticks`` times a tick's duration with)."""
        return self._now()

    def start(self) -> None:
        """Put tick 0 due now."""
        self._start = self._now()
        self._next_tick = 0

    def due_time(self, tick: int) -> float:
        return self._origin() + tick * self.interval

    def due(self) -> int:
        """How many ticks to run now, after skipping any beyond ``max_catch_up``."""
        elapsed = self._now() - self._origin()
        reached = math.floor((elapsed + _EPSILON) / self.interval) + 1
        pending = reached - self._next_tick
        if pending > self.max_catch_up:
            skip = pending - self.max_catch_up
            self._next_tick += skip
            self._stats.skipped += skip
            pending = self.max_catch_up
        return max(pending, 0)

    def advance(self) -> int:
        """Mark the next tick as run now; returns its number."""
        tick = self._next_tick
        now = self._now()
        lateness = now - self.due_time(tick)
        self.last_started, self.last_lateness = now, lateness
        stats = self._stats
        stats.ticks += 1
        if lateness > self.late_threshold:
            stats.late += 1
        stats.max_lateness = max(stats.max_lateness, lateness)
        self._next_tick = tick + 1
        return tick

    def delay_until_next(self) -> float:
        """Seconds until the next tick is due; 0 if it already is."""
        return max(self.due_time(self._next_tick) - self._now(), 0.0)

    def _origin(self) -> float:
        if self._start is None:
            raise RuntimeError("TickClock.start() was not called")
        return self._start


async def run_ticks(
    clock: TickClock,
    on_tick: Callable[[int], None],
    stop: asyncio.Event,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    observe: TickObserver | None = None,
) -> None:
    """Call ``on_tick(n)`` for every tick until ``stop`` is set; starts the clock if needed.

    ``observe`` hears each tick's duration and lateness (on the clock's time source) and the
    ticks skipped."""
    if not clock.started:
        clock.start()
    while not stop.is_set():
        skipped = clock.skipped
        due = clock.due()
        if observe is not None and clock.skipped != skipped:
            observe.ticks_skipped(clock.skipped - skipped)
        for _ in range(due):
            on_tick(clock.advance())
            if observe is not None:
                # Lateness can read a few ulps below zero (see _EPSILON): not early, on time.
                lateness = max(clock.last_lateness, 0.0)
                observe.observe_tick(clock.now() - clock.last_started, lateness)
            if stop.is_set():
                return
        await sleep(whole_ms(clock.delay_until_next()))


def whole_ms(seconds: float) -> float:
    """``seconds`` rounded up to a whole millisecond (the finest timer libuv keeps)."""
    return math.ceil(seconds * 1000.0 - _EPSILON) / 1000.0
