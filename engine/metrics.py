"""Prometheus metrics of one app, in a registry of its own (no process-global collectors).

The process's own CPU, memory and open files (``process_cpu_seconds_total``, ...; the standard
collector, read from ``/proc`` at each scrape) are in it too: with several engine processes on
one machine (``serve --workers``), each node's ``/metrics`` tells its own share.

``Metrics`` is also the media tick's ``TickObserver`` (media/clock.py): tick duration and
lateness histograms and a skipped-tick counter, which ``callbridge loadtest`` reads over each
measurement window (bucket deltas between two scrapes of ``GET /metrics``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "LAG_PROBE_S", "TICK_BUCKETS", "Metrics"]

LAG_PROBE_S = 0.25  # the event-loop lag probe's sleep: four samples a second, nothing to cost

# Seconds, for a 20 ms tick: fine below 5 ms (a healthy tick's duration and the loop's wake-up
# lateness live there, so p50 and p99 can be told apart), then around the budget, then past it
# up to a second, so that a stall reads as its length rather than as "over 100 ms".
TICK_BUCKETS = (
    0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01,
    0.0125, 0.015, 0.0175, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self.http_requests = Counter(
            "callbridge_http_requests",
            "HTTP requests handled, by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "callbridge_http_request_seconds",
            "HTTP request handling time",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        # Exposed as callbridge_media_frames_dropped_total (prometheus_client adds _total).
        # ``reason`` takes only adapters.streams.DROP_REASONS, so the label set stays bounded.
        self.media_frames_dropped = Counter(
            "callbridge_media_frames_dropped",
            "Media-stream frames dropped unread (unknown events included), by provider and reason",
            ["provider", "reason"],
            registry=self.registry,
        )
        # Exposed as callbridge_recordings_failed_total. ``reason`` takes only
        # engine.media_plane.recordings.FAILURE_REASONS (disk_stalled, write_failed,
        # unsupported_format).
        self.recordings_failed = Counter(
            "callbridge_recordings_failed",
            "Recordings that ended with call.recording.error, by reason",
            ["reason"],
            registry=self.registry,
        )

        self.tick_duration = Histogram(
            "callbridge_tick_duration_seconds",
            "Time one 20 ms media tick took to run (mix, send, DTMF, recordings)",
            registry=self.registry,
            buckets=TICK_BUCKETS,
        )
        self.tick_lateness = Histogram(
            "callbridge_tick_lateness_seconds",
            "How long after its due time a media tick started",
            registry=self.registry,
            buckets=TICK_BUCKETS,
        )
        # Exposed as callbridge_ticks_skipped_total: ticks dropped after a stall longer than the
        # clock's catch-up (media/clock.py), every leg's audio lost for each.
        self.ticks_skipped_total = Counter(
            "callbridge_ticks_skipped",
            "Media ticks skipped because the loop fell too far behind",
            registry=self.registry,
        )

        # Exposed as callbridge_admission_refusals_total; ``reason`` is one of
        # engine.admission.gate.REFUSALS (shutting_down, overloaded, live_legs_unavailable,
        # database_unavailable).
        self.admission_refusals = Counter(
            "callbridge_admission_refusals",
            "New calls refused (inbound busy, dial 503 or 429), by reason",
            ["reason"],
            registry=self.registry,
        )

        self.provider_request_seconds = Histogram(
            "callbridge_provider_request_seconds",
            "Provider REST requests (each attempt), by provider, operation and outcome",
            ["provider", "operation", "outcome"],
            registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.store_commit_seconds = Histogram(
            "callbridge_store_commit_seconds",
            "Time to store one input's state changes and webhooks (before it is acknowledged)",
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
        )
        self.event_loop_lag_seconds = Histogram(
            "callbridge_event_loop_lag_seconds",
            f"How late the loop woke from a {LAG_PROBE_S:g} s sleep (all else waited as long)",
            registry=self.registry,
            buckets=TICK_BUCKETS,
        )
        self._refreshers: list[Callable[[], Awaitable[None]]] = []

    def admission_refused(self, reason: str) -> None:
        self.admission_refusals.labels(reason).inc()

    def watch_media(self, totals: Callable[[], Mapping[str, int]]) -> None:
        """Export the media plane's per-leg statistics summed over every leg
        (engine/media_plane/stats.py ``TOTALS``), read at each scrape: no per-leg series."""
        self.registry.register(_MediaTotals(totals))

    def observe_tick(self, duration_s: float, lateness_s: float) -> None:
        """One media tick ran (``media.clock.TickObserver``)."""
        self.tick_duration.observe(duration_s)
        self.tick_lateness.observe(lateness_s)

    def ticks_skipped(self, count: int) -> None:
        """``count`` media ticks were skipped (``media.clock.TickObserver``)."""
        self.ticks_skipped_total.inc(count)

    def recording_failed(self, reason: str) -> None:
        """Count one failed recording (the media plane's ``on_recording_failed``)."""
        self.recordings_failed.labels(reason).inc()

    def provider_attempt(self, provider: str, operation: str, seconds: float, outcome: str) -> None:
        """One provider REST attempt (``engine.providers.calls.AttemptObserver``)."""
        self.provider_request_seconds.labels(provider, operation, outcome).observe(seconds)

    def watch(self, collector: Collector, refresh: Callable[[], Awaitable[None]]) -> None:
        """Export ``collector``; ``refresh`` runs before each scrape (reads that must await)."""
        self.registry.register(collector)
        self._refreshers.append(refresh)

    async def watch_loop_lag(self, stop: asyncio.Event) -> None:
        """Until ``stop``: sleep ``LAG_PROBE_S`` again and again and record how late each sleep
        ended: the time every callback, media frame and request waits behind whatever runs."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            asked = loop.time()
            await asyncio.sleep(LAG_PROBE_S)
            self.event_loop_lag_seconds.observe(max(loop.time() - asked - LAG_PROBE_S, 0.0))

    async def refresh(self) -> None:
        """What the watched collectors read by awaiting, read now (before ``render``)."""
        for refresh in self._refreshers:
            await refresh()

    def render(self) -> bytes:
        return generate_latest(self.registry)


#: The media totals exported, by ``engine.media_plane.stats.TOTALS`` key: (metric name, help).
MEDIA_TOTALS = {
    "frames_in": ("callbridge_media_frames_received", "Inbound media frames handed to the mixer"),
    "frames_out": ("callbridge_media_frames_sent", "Media frames written to legs' sockets"),
    "lost": ("callbridge_media_frames_lost", "Inbound frames numbered and never played"),
    "late": ("callbridge_media_frames_late", "Inbound frames that came too late to play"),
    "reordered": ("callbridge_media_frames_reordered", "Inbound frames put back in order"),
    "concealed": ("callbridge_media_frames_concealed", "Mixer ticks with silence for a leg"),
    "output_dropped": ("callbridge_media_output_dropped", "Outbound frames dropped, socket behind"),
    "reconnects": ("callbridge_media_stream_reconnects", "Media streams after a leg's first"),
}


class _MediaTotals(Collector):
    def __init__(self, totals: Callable[[], Mapping[str, int]]) -> None:
        self._totals = totals

    def collect(self) -> Iterator[CounterMetricFamily]:
        totals = self._totals()
        for key, (name, text) in MEDIA_TOTALS.items():
            yield CounterMetricFamily(name, text, value=totals.get(key, 0))

    def describe(self) -> Iterator[CounterMetricFamily]:
        for name, text in MEDIA_TOTALS.values():
            yield CounterMetricFamily(name, text)
