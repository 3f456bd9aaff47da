"""The drift-free 20 ms media tick.

``TickClock`` is pure: it reads an injected time source and counts. Tick ``n`` is due at
``start + n * interval``, computed from the start each time rather than by adding up sleeps, so
sleep overshoot never accumulates: a loop that wakes late runs the overdue ticks back to back and
stays on the grid. A loop that falls more than ``max_catch_up`` ticks behind (a long stall) skips
the excess instead of bursting through it; skipped tick numbers are never run, so the numbers
``on_tick`` sees stay aligned with time.

``run_ticks`` is the thin asyncio driver: run the due ticks, sleep until the next one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

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

    @property
    def started(self) -> bool:
        return self._start is not None

    @property
    def stats(self) -> TickStats:
        return dataclasses.replace(self._stats)

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
        lateness = self._now() - self.due_time(tick)
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
) -> None:
    """Call ``on_tick(n)`` for every tick until ``stop`` is set; starts the clock if needed."""
    if not clock.started:
        clock.start()
    while not stop.is_set():
        for _ in range(clock.due()):
            on_tick(clock.advance())
            if stop.is_set():
                return
        await sleep(clock.delay_until_next())
