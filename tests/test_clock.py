from __future__ import annotations

import asyncio
import random

import pytest

from media.clock import TickClock, run_ticks, whole_ms

INTERVAL = 0.020


class FakeTime:
    """A monotonic clock that only moves when a test (or a fake sleep) moves it."""

    def __init__(self, start: float = 5000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


def started_clock(
    *, max_catch_up: int = 5, late_threshold: float | None = None
) -> tuple[TickClock, FakeTime]:
    fake = FakeTime()
    clock = TickClock(INTERVAL, fake, max_catch_up=max_catch_up, late_threshold=late_threshold)
    clock.start()
    return clock, fake


def run_due(clock: TickClock) -> list[int]:
    return [clock.advance() for _ in range(clock.due())]


def test_tick_zero_is_due_at_start_and_the_next_one_interval_later() -> None:
    clock, fake = started_clock()
    assert run_due(clock) == [0]
    assert clock.due() == 0
    assert clock.delay_until_next() == pytest.approx(INTERVAL)
    fake.now += 0.005
    assert clock.delay_until_next() == pytest.approx(0.015)
    fake.now += 0.015
    assert run_due(clock) == [1]


def test_no_drift_over_ten_thousand_jittery_sleeps() -> None:
    # Every sleep overshoots by up to 3 ms. A clock that added each sleep to the last tick time
    # would be about 15 s behind after 10,000 ticks; this one must stay on start + n * interval.
    clock, fake = started_clock()
    origin = fake.now
    rng = random.Random(3)
    ticks: list[int] = []
    while len(ticks) < 10_000:
        for _ in range(clock.due()):
            tick = clock.advance()
            assert fake.now - (origin + tick * INTERVAL) < 0.003 + 1e-9
            ticks.append(tick)
        fake.now += clock.delay_until_next() + rng.uniform(0, 0.003)
    assert ticks == list(range(len(ticks)))
    assert fake.now - origin == pytest.approx(len(ticks) * INTERVAL, abs=0.025)
    stats = clock.stats
    assert stats.ticks == len(ticks)
    assert stats.late == 0
    assert stats.skipped == 0
    assert 0.002 < stats.max_lateness < 0.003 + 1e-9


def test_a_tick_run_past_the_threshold_is_reported_late() -> None:
    clock, fake = started_clock(late_threshold=0.005)
    run_due(clock)
    fake.now += INTERVAL + 0.004
    run_due(clock)
    fake.now = clock.due_time(2) + 0.012
    run_due(clock)
    stats = clock.stats
    assert stats.ticks == 3
    assert stats.late == 1
    assert stats.max_lateness == pytest.approx(0.012)


def test_overdue_ticks_run_back_to_back_and_keep_the_grid() -> None:
    clock, fake = started_clock()
    run_due(clock)
    fake.now += 3 * INTERVAL + 0.001
    assert run_due(clock) == [1, 2, 3]
    # The wake-up after the burst is on the original grid, not 20 ms after the burst.
    assert clock.delay_until_next() == pytest.approx(INTERVAL - 0.001)


def test_a_long_stall_skips_ahead_instead_of_bursting() -> None:
    clock, fake = started_clock(max_catch_up=5)
    run_due(clock)
    fake.now += 1.0 + 0.001
    # Ticks 1..50 are overdue; only the last five run, numbered by their place on the grid.
    assert run_due(clock) == [46, 47, 48, 49, 50]
    assert clock.stats.skipped == 45
    assert run_due(clock) == []
    assert clock.delay_until_next() == pytest.approx(INTERVAL - 0.001)


def test_a_clock_must_be_started_before_it_is_asked() -> None:
    clock = TickClock(INTERVAL, FakeTime())
    assert not clock.started
    with pytest.raises(RuntimeError, match="start"):
        clock.due()


def test_impossible_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="interval"):
        TickClock(0.0)
    with pytest.raises(ValueError, match="max_catch_up"):
        TickClock(max_catch_up=0)


async def test_driver_runs_every_tick_on_time_with_a_fake_sleep() -> None:
    fake = FakeTime()
    clock = TickClock(INTERVAL, fake)
    stop = asyncio.Event()
    rng = random.Random(5)
    seen: list[tuple[int, float]] = []

    async def jittery_sleep(seconds: float) -> None:
        await fake.sleep(seconds + rng.uniform(0, 0.004))

    def on_tick(tick: int) -> None:
        seen.append((tick, fake.now))
        if tick == 499:
            stop.set()

    await run_ticks(clock, on_tick, stop, sleep=jittery_sleep)
    origin = seen[0][1]
    assert [tick for tick, _ in seen] == list(range(500))
    # Late by at most the sleep's jitter and its rounding up to a whole millisecond.
    assert all(0 <= at - (origin + tick * INTERVAL) < 0.005 + 1e-9 for tick, at in seen)
    assert clock.stats.ticks == 500


async def test_driver_catches_up_after_a_slow_tick() -> None:
    fake = FakeTime()
    clock = TickClock(INTERVAL, fake)
    stop = asyncio.Event()
    seen: list[int] = []

    def on_tick(tick: int) -> None:
        seen.append(tick)
        if tick == 1:
            fake.now += 0.050  # a mixer pass that overran two and a half ticks
        if tick == 6:
            stop.set()

    await run_ticks(clock, on_tick, stop, sleep=fake.sleep)
    assert seen == list(range(7))
    assert clock.stats.late >= 1
    assert clock.stats.skipped == 0


async def test_driver_sleeps_whole_milliseconds_and_stays_on_the_grid() -> None:
    fake = FakeTime(start=5000.0004)  # a start off the millisecond grid
    clock = TickClock(INTERVAL, fake)
    stop = asyncio.Event()
    slept: list[float] = []
    seen: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await fake.sleep(seconds)

    def on_tick(tick: int) -> None:
        seen.append(fake.now)
        fake.now += 0.0031  # a tick's work, not a whole millisecond
        if tick == 20:
            stop.set()

    await run_ticks(clock, on_tick, stop, sleep=sleep)
    assert all(round(s * 1000) == pytest.approx(s * 1000, abs=1e-6) for s in slept)
    assert len(slept) == 20, "one sleep per tick: none ends short of its tick"
    origin = seen[0]
    assert all(0 <= at - (origin + n * INTERVAL) < 0.001 for n, at in enumerate(seen))


def test_whole_ms_rounds_up_and_keeps_whole_values() -> None:
    assert whole_ms(0.0196) == pytest.approx(0.020)
    assert whole_ms(0.019) == pytest.approx(0.019)
    assert whole_ms(0.0190000000001) == pytest.approx(0.019)  # float noise is not a millisecond
    assert whole_ms(0.0) == 0.0


def test_under_uvloop_the_driver_wakes_once_per_tick() -> None:
    """libuv fires timers up to a millisecond early: an exact sleep woke the loop ten times a
    tick (2,237 sleeps for 200 ticks, measured) with nothing due."""
    uvloop = pytest.importorskip("uvloop")
    sleeps = 0

    async def counted(seconds: float) -> None:
        nonlocal sleeps
        sleeps += 1
        await asyncio.sleep(seconds)

    async def main() -> int:
        clock, stop = TickClock(INTERVAL), asyncio.Event()
        ticks = 0

        def on_tick(_: int) -> None:
            nonlocal ticks
            ticks += 1
            if ticks == 25:
                stop.set()

        await run_ticks(clock, on_tick, stop, sleep=counted)
        return ticks

    ticks = uvloop.run(main())
    assert sleeps <= ticks + 2


async def test_driver_does_nothing_once_stopped() -> None:
    fake = FakeTime()
    stop = asyncio.Event()
    stop.set()
    calls: list[int] = []
    await run_ticks(TickClock(INTERVAL, fake), calls.append, stop, sleep=fake.sleep)
    assert calls == []


class RecordingObserver:
    """A ``TickObserver`` that keeps what it was told."""

    def __init__(self) -> None:
        self.ticks: list[tuple[float, float]] = []
        self.skipped: list[int] = []

    def observe_tick(self, duration_s: float, lateness_s: float) -> None:
        self.ticks.append((duration_s, lateness_s))

    def ticks_skipped(self, count: int) -> None:
        self.skipped.append(count)


async def test_observer_hears_each_ticks_duration_and_lateness_on_the_clock() -> None:
    fake = FakeTime()
    clock = TickClock(INTERVAL, fake)
    stop = asyncio.Event()
    observer = RecordingObserver()
    work = {0: 0.004, 1: 0.030, 2: 0.001, 3: 0.002}  # tick 1 overruns: tick 2 starts 10 ms late

    def on_tick(tick: int) -> None:
        fake.now += work[tick]
        if tick == 3:
            stop.set()

    await run_ticks(clock, on_tick, stop, sleep=fake.sleep, observe=observer)
    durations = [d for d, _ in observer.ticks]
    lateness = [late for _, late in observer.ticks]
    assert durations == pytest.approx([0.004, 0.030, 0.001, 0.002])
    # Tick 2 was due at 40 ms and started at 20 + 30 = 50 ms; tick 3, due at 60 ms, at 60 ms.
    assert lateness == pytest.approx([0.0, 0.0, 0.010, 0.0], abs=1e-9)
    assert min(lateness) >= 0.0
    assert observer.skipped == []


async def test_observer_hears_skipped_ticks_after_a_stall() -> None:
    fake = FakeTime()
    clock = TickClock(INTERVAL, fake, max_catch_up=5)
    stop = asyncio.Event()
    observer = RecordingObserver()
    seen: list[int] = []

    def on_tick(tick: int) -> None:
        seen.append(tick)
        if tick == 0:
            fake.now += 1.0 + 0.001  # a one-second stall: ticks 1..50 overdue
        if tick == 50:
            stop.set()

    await run_ticks(clock, on_tick, stop, sleep=fake.sleep, observe=observer)
    assert seen == [0, 46, 47, 48, 49, 50]
    assert observer.skipped == [45]
    assert sum(observer.skipped) == clock.stats.skipped
    assert len(observer.ticks) == len(seen)
    assert observer.ticks[1][1] == pytest.approx(0.001 + 4 * INTERVAL)  # tick 46, 81 ms late
