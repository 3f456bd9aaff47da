"""The media tick's metrics: names and buckets as ``callbridge loadtest`` scrapes them."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.metrics import TICK_BUCKETS, Metrics
from media.clock import TickClock, run_ticks


def samples(metrics: Metrics) -> dict[tuple[str, str], float]:
    """(sample name, its ``le`` label or "") -> value, from the rendered exposition."""
    text = metrics.render().decode()
    return {
        (sample.name, sample.labels.get("le", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_tick_metrics_are_exposed_under_their_names_with_tick_sized_buckets() -> None:
    metrics = Metrics()
    metrics.observe_tick(0.0015, 0.0004)
    metrics.observe_tick(0.0300, 0.0120)
    metrics.ticks_skipped(3)
    metrics.ticks_skipped(2)
    found = samples(metrics)
    assert found[("callbridge_tick_duration_seconds_count", "")] == 2
    assert found[("callbridge_tick_duration_seconds_sum", "")] == pytest.approx(0.0315)
    assert found[("callbridge_tick_duration_seconds_bucket", "0.0015")] == 1
    assert found[("callbridge_tick_duration_seconds_bucket", "0.025")] == 1
    assert found[("callbridge_tick_duration_seconds_bucket", "0.03")] == 2
    assert found[("callbridge_tick_lateness_seconds_bucket", "0.0005")] == 1
    assert found[("callbridge_tick_lateness_seconds_bucket", "0.0125")] == 2
    assert found[("callbridge_ticks_skipped_total", "")] == 5
    assert TICK_BUCKETS[0] == 0.0005 and TICK_BUCKETS[-1] == 1.0
    assert 0.02 in TICK_BUCKETS  # the tick's own budget is a bucket bound


def test_two_apps_keep_their_tick_metrics_apart() -> None:
    first, second = Metrics(), Metrics()
    first.observe_tick(0.001, 0.0)
    assert samples(second)[("callbridge_tick_duration_seconds_count", "")] == 0


async def test_the_tick_driver_feeds_the_metrics_as_its_observer() -> None:
    now = [100.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    clock = TickClock(0.020, lambda: now[0])
    metrics = Metrics()
    stop = asyncio.Event()

    def on_tick(tick: int) -> None:
        now[0] += 0.0025  # well inside (0.002, 0.003]: no float edge
        if tick == 9:
            stop.set()

    await run_ticks(clock, on_tick, stop, sleep=sleep, observe=metrics)
    found = samples(metrics)
    assert found[("callbridge_tick_duration_seconds_count", "")] == 10
    assert found[("callbridge_tick_duration_seconds_bucket", "0.002")] == 0
    assert found[("callbridge_tick_duration_seconds_bucket", "0.003")] == 10
    # The driver sleeps whole milliseconds (media/clock.py): 17.5 ms left becomes 18, so each
    # tick after the first starts 0.5 ms late, inside the 0.75 ms bucket and above 0.25 ms.
    assert found[("callbridge_tick_lateness_seconds_bucket", "0.00075")] == 10
    assert found[("callbridge_tick_lateness_seconds_bucket", "0.0005")] >= 1
