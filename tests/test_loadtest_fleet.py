"""``callbridge loadtest --generator-procs``: the legs spread over generator processes, their
results merged into one report.

The run is real time (a few seconds of audio through the engine from two child processes); as
in tests/test_loadtest_run.py, what is asserted is routing and audio identity, never timing.
The merging itself is checked on hand-made tallies.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.loadtest.checker import Misroute, Tally
from benchmarks.loadtest.fleet import Fleet, generator_cores, merge_steps, merge_tallies
from benchmarks.loadtest.generator import LoadConfig, StepResult
from benchmarks.loadtest.measures import EngineWindow, TickWindow

SECONDS = 2.5
slow_family = pytest.mark.slow_family


def tally(latencies_ms: list[float], **counts: int) -> Tally:
    values = (np.asarray(latencies_ms, dtype=np.float64) / 1000).astype(np.float32)
    found = Tally(latencies_s=[values], arrivals_s=[np.arange(values.size, dtype=np.float64)])
    for name, value in counts.items():
        setattr(found, name, value)
    return found


def share(
    latencies_ms: list[float], *, legs: int, realtime: float, lag_ms: list[float]
) -> StepResult:
    lag_s = [value / 1000 for value in lag_ms]
    p99 = float(np.percentile(lag_s, 99) * 1000)
    return StepResult(
        legs=legs, rooms=legs // 2, duration_s=2.0, setup_s=1.0,
        tally=tally(latencies_ms, legs=legs, frames_received=100 * legs,
                    speaker_frames_expected=100 * legs),
        engine_cpu_cores=None, engine_rss_bytes=None, generator_cpu_cores=0.25,
        loop_lag_ms={"p50": 0.0, "p99": p99, "max": max(lag_ms)}, realtime=realtime,
        loop_lag_s=lag_s,
    )  # fmt: skip


def test_merged_tallies_sum_counts_and_pool_latency_samples() -> None:
    first = tally([1.0] * 99 + [50.0], legs=4, misrouted_frames=1, speaker_frames_lost=2)
    first.misrouted_by_reason = {"own": 1}
    first.unarmed_legs = [6]
    first.examples = [Misroute(6, 1.0, "own", "")]
    second = tally([2.0] * 100, legs=4, speaker_frames_lost=3)
    second.misrouted_by_reason = {"own": 2, "level": 1}
    second.unarmed_legs = [1]
    merged = merge_tallies([first, second])
    assert merged.legs == 8
    assert merged.misrouted_frames == 1
    assert merged.speaker_frames_lost == 5
    assert merged.misrouted_by_reason == {"own": 3, "level": 1}
    assert merged.unarmed_legs == [1, 6]
    assert len(merged.examples) == 1
    assert merged.latencies().size == 200
    # The pooled p99 is the 198th of 200 samples (2 ms), not the mean of the two p99s (~26 ms).
    assert merged.percentiles_ms()["p99"] == pytest.approx(2.0, abs=0.01)
    assert merged.percentiles_ms()["max"] == pytest.approx(50.0)


def test_a_merged_step_takes_the_engine_window_and_the_worst_generator() -> None:
    config = LoadConfig(legs=8, generator_procs=2)
    ticks = TickWindow(ticks=100, duration_p50_ms=1.0, duration_p99_ms=3.0,
                       lateness_p99_ms=0.5, skipped=0)  # fmt: skip
    window = EngineWindow(wall_s=2.0, cpu_cores=0.4, rss_bytes=123, ticks=ticks)
    steady = share([1.0] * 50, legs=4, realtime=1.0, lag_ms=[0.1] * 100)
    behind = share([1.0] * 50, legs=4, realtime=0.9, lag_ms=[0.1] * 90 + [30.0] * 10)
    step = merge_steps(config, [steady, behind], window)
    assert (step.legs, step.rooms, step.generators) == (8, 4, 2)
    assert step.engine_cpu_cores == 0.4
    assert step.ticks is ticks
    assert step.generator_cpu_cores == pytest.approx(0.5)
    assert step.realtime == 0.9
    assert step.loop_lag_ms["p99"] == pytest.approx(30.0)
    assert len(step.loop_lag_s) == 200
    assert any("generator overloaded" in failure for failure in step.failures)
    clean = merge_steps(config, [steady, steady], None)
    assert clean.passed
    assert clean.ticks is None and clean.engine_cpu_cores is None


def test_generator_cores_leave_the_spawned_engine_its_core() -> None:
    assert generator_cores(LoadConfig(generator_cores=(3, 5))) == (3, 5)
    spawned = generator_cores(LoadConfig(spawn_engine=True, engine_core=0))
    assert spawned is None or 0 not in spawned


def test_every_generator_process_needs_a_room() -> None:
    with pytest.raises(ValueError, match="at least one room each"):
        LoadConfig(legs=4, room_size=2, generator_procs=3).steps()
    assert LoadConfig(legs=6, room_size=2, generator_procs=3).steps() == [6]


@slow_family
async def test_two_generator_processes_route_every_leg_to_its_room() -> None:
    config = LoadConfig(
        legs=12, room_size=2, provider="mixed", duration_s=SECONDS, settle_s=0.3,
        setup_rate=200.0, setup_timeout_s=20.0, generator_procs=2,
    )  # fmt: skip
    result = await Fleet(config, use_uvloop=False).run()
    (step,) = result.steps
    tally = step.tally
    assert step.generators == 2
    assert step.legs == 12
    assert tally.unarmed_legs == [], step.failures
    assert tally.misrouted_frames == 0, tally.examples
    assert tally.frames_checked >= 12 * SECONDS * 50 * 0.5
    assert tally.markers >= 12
    assert result.app_errors == []
    # Each child bridged its own pairs through its own application: every leg was bridged.
    bridged = {event.leg for event in result.events if event.event_type == "call.bridged"}
    assert bridged == set(range(12))
    assert not math.isnan(tally.percentiles_ms()["p99"])
