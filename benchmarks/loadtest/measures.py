"""What the load test reads off the engine and itself over a window: the engine's CPU and
memory, its media tick (from ``GET /metrics``), the generator's event-loop lag.

Tick statistics come from the engine's Prometheus histograms ``callbridge_tick_duration_seconds``
and ``callbridge_tick_lateness_seconds`` and the counter ``callbridge_ticks_skipped_total``
(engine/metrics.py): scraped before and after a window, the bucket counts are subtracted and the
quantiles read off the difference as Prometheus' ``histogram_quantile`` does (linear within the
bucket; a quantile in the +Inf bucket reads as the largest finite bound). They are as fine as
the buckets (0.25 ms around a 1-2 ms tick): a distribution, not exact samples. An engine that
does not export them (older, or its tick observer not wired) gives no tick figures, not zeros.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.loadtest.engine_host import Engine, ProcessStats

__all__ = [
    "EngineProbe",
    "EngineWindow",
    "LiveReadout",
    "MetricsSnapshot",
    "NodeWindow",
    "TickWindow",
    "engine_counters",
    "environment",
    "lag_summary",
    "node_windows",
    "parse_metrics",
    "quantile",
    "tick_window",
]

DURATION = "callbridge_tick_duration_seconds"
LATENESS = "callbridge_tick_lateness_seconds"
SKIPPED = "callbridge_ticks_skipped_total"
LEGS = "callbridge_legs"
PROCESS_CPU = "process_cpu_seconds_total"

Buckets = tuple[tuple[float, float], ...]  # (upper bound, cumulative count), +Inf last


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """The tick histograms' cumulative buckets and the skipped counter at one scrape, and the
    node's live legs and its process's CPU seconds (for each node of ``serve --workers``)."""

    histograms: dict[str, Buckets]
    skipped: float | None
    legs: float | None = None
    cpu_s: float | None = None


@dataclass(frozen=True, slots=True)
class TickWindow:
    """The engine's media tick over one window."""

    ticks: int
    duration_p50_ms: float
    duration_p99_ms: float
    lateness_p99_ms: float
    skipped: int

    def to_json(self) -> dict[str, float | int]:
        return {
            "ticks": self.ticks,
            "duration_p50_ms": round(self.duration_p50_ms, 3),
            "duration_p99_ms": round(self.duration_p99_ms, 3),
            "lateness_p99_ms": round(self.lateness_p99_ms, 3),
            "skipped": self.skipped,
        }


@dataclass(frozen=True, slots=True)
class EngineWindow:
    """The engine over one window: CPU (cores), memory at its end, its tick."""

    wall_s: float
    cpu_cores: float | None
    rss_bytes: int | None
    ticks: TickWindow | None
    nodes: tuple[NodeWindow, ...] = ()  # serve --workers: each worker's share, in port order


@dataclass(frozen=True, slots=True)
class NodeWindow:
    """One node of several over a window: its process's CPU (cores, from its own ``/metrics``)
    and its live legs at the window's end."""

    cpu_cores: float
    legs: int

    @property
    def cpu_per_leg_pct(self) -> float | None:
        """Its CPU per leg, in percent of a core; None with no leg."""
        return self.cpu_cores * 100 / self.legs if self.legs else None

    def to_json(self) -> dict[str, float | int | None]:
        per_leg = self.cpu_per_leg_pct
        return {
            "cpu_cores": round(self.cpu_cores, 4),
            "legs": self.legs,
            "cpu_per_leg_pct": None if per_leg is None else round(per_leg, 3),
        }


def parse_metrics(text: str) -> MetricsSnapshot:
    histograms: dict[str, list[tuple[float, float]]] = {}
    skipped = legs = cpu_s = None
    for family in text_string_to_metric_families(text):
        if family.name == LEGS:  # a node with no live leg exports the family with no sample
            legs = sum(sample.value for sample in family.samples)
        for sample in family.samples:
            if sample.name in (f"{DURATION}_bucket", f"{LATENESS}_bucket"):
                name = sample.name.removesuffix("_bucket")
                bound = float(sample.labels["le"])
                histograms.setdefault(name, []).append((bound, sample.value))
            elif sample.name == SKIPPED:
                skipped = sample.value
            elif sample.name == PROCESS_CPU:
                cpu_s = sample.value
    return MetricsSnapshot(
        {name: tuple(sorted(buckets)) for name, buckets in histograms.items()}, skipped, legs, cpu_s
    )


def quantile(q: float, buckets: Buckets) -> float:
    """The ``q`` quantile of a histogram's cumulative ``buckets`` (NaN when empty)."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower  # beyond the last finite bound: all that can be said
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


def _delta(before: Buckets, after: Buckets) -> Buckets | None:
    if [b for b, _ in before] != [b for b, _ in after]:
        return None  # the engine restarted, or its buckets changed: no window to speak of
    return tuple((bound, a - b) for (bound, a), (_, b) in zip(after, before, strict=True))


def tick_window(before: MetricsSnapshot | None, after: MetricsSnapshot | None) -> TickWindow | None:
    """The tick between two scrapes, or None when the engine does not export it."""
    if before is None or after is None:
        return None
    parts = {}
    for name in (DURATION, LATENESS):
        if name not in before.histograms or name not in after.histograms:
            return None
        delta = _delta(before.histograms[name], after.histograms[name])
        if delta is None:
            return None
        parts[name] = delta
    ticks = int(parts[DURATION][-1][1])
    if ticks <= 0:
        return None
    skipped = 0
    if before.skipped is not None and after.skipped is not None:
        skipped = int(after.skipped - before.skipped)
    return TickWindow(
        ticks=ticks,
        duration_p50_ms=quantile(0.50, parts[DURATION]) * 1000,
        duration_p99_ms=quantile(0.99, parts[DURATION]) * 1000,
        lateness_p99_ms=quantile(0.99, parts[LATENESS]) * 1000,
        skipped=skipped,
    )


async def scrape(session: aiohttp.ClientSession, base_url: str) -> MetricsSnapshot | None:
    """The engine's tick metrics now; None when ``/metrics`` cannot be read."""
    try:
        async with session.get(f"{base_url}/metrics") as reply:
            if reply.status != 200:
                return None
            return parse_metrics(await reply.text())
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class _Reading:
    at: float  # monotonic
    stats: ProcessStats | None
    metrics: MetricsSnapshot | None
    nodes: tuple[MetricsSnapshot | None, ...] = ()


class EngineProbe:
    """Reads the engine at the start and at the end of a window."""

    def __init__(self, engine: Engine, session: aiohttp.ClientSession) -> None:
        self.engine = engine
        self.session = session
        self._start: _Reading | None = None

    async def _read(self) -> _Reading:
        metrics = await scrape(self.session, self.engine.base_url)
        nodes = await asyncio.gather(*(scrape(self.session, u) for u in self.engine.node_urls))
        return _Reading(time.monotonic(), self.engine.stats(), metrics, tuple(nodes))

    async def begin(self) -> None:
        self._start = await self._read()

    async def end(self) -> EngineWindow:
        """The engine since ``begin`` (or since the last ``end``, for the live display)."""
        start, end = self._start, await self._read()
        if start is None:
            raise RuntimeError("EngineProbe.end() before begin()")
        self._start = end
        wall = end.at - start.at
        cpu = rss = None
        if start.stats is not None and end.stats is not None:
            cpu = (end.stats.cpu_s - start.stats.cpu_s) / wall
            rss = end.stats.rss_bytes
        nodes = node_windows(start.nodes, end.nodes, wall)
        return EngineWindow(wall, cpu, rss, tick_window(start.metrics, end.metrics), nodes)


def node_windows(
    start: Sequence[MetricsSnapshot | None], end: Sequence[MetricsSnapshot | None], wall_s: float
) -> tuple[NodeWindow, ...]:
    """Each node's CPU over the window and legs at its end; none when a node could not be read
    (a partial view would pass for the whole)."""
    windows = []
    for before, after in zip(start, end, strict=True):
        if before is None or after is None or before.cpu_s is None or after.cpu_s is None:
            return ()
        legs = 0 if after.legs is None else round(after.legs)
        windows.append(NodeWindow((after.cpu_s - before.cpu_s) / wall_s, legs))
    return tuple(windows)


class LiveReadout:
    """For the live display: the engine's CPU, memory and tick since the last reading (one
    scrape of ``/metrics`` a reading)."""

    def __init__(self, probe: EngineProbe) -> None:
        self.probe = probe
        self._began = False

    async def read(self) -> dict[str, Any]:
        if not self._began:
            await self.probe.begin()
            self._began = True
            return {"engine_cpu": None, "engine_rss": None, "tick": None}
        window = await self.probe.end()
        return {
            "engine_cpu": window.cpu_cores,
            "engine_rss": window.rss_bytes,
            "tick": window.ticks.to_json() if window.ticks is not None else None,
        }


def lag_summary(samples: Sequence[float]) -> dict[str, float]:
    if not samples:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}
    p50, p99 = np.percentile(samples, [50, 99]) * 1000
    return {"p50": float(p50), "p99": float(p99), "max": float(max(samples) * 1000)}


def engine_counters(engine: Engine) -> dict[str, Any]:
    """In-process only: what the engine's mixer and tick clock saw."""
    if engine.app is None:
        return {}
    from engine.api.keys import RUNTIME

    runtime = engine.app[RUNTIME]
    mixer = runtime.plane.mixer.counters
    ticks = runtime.tick.clock.stats
    return {
        "mixer_frames_mixed": mixer.frames_mixed,
        "mixer_frames_missing": mixer.frames_missing,
        "mixer_bytes_dropped": mixer.bytes_dropped,
        "ticks": ticks.ticks,
        "ticks_late": ticks.late,
        "ticks_skipped": ticks.skipped,
        "tick_max_lateness_ms": ticks.max_lateness * 1000,
    }


def environment(generator_procs: int, generator_cores: Sequence[int] | None) -> dict[str, Any]:
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    affinity = None
    with contextlib.suppress(AttributeError, OSError):
        affinity = sorted(os.sched_getaffinity(0))
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "affinity": affinity,
        "load_average": os.getloadavg(),
        "generator_loop": loop,
        "generator_procs": generator_procs,
        "generator_cores": list(generator_cores) if generator_cores is not None else None,
    }
