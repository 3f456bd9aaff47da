"""Prometheus metrics of one app, in a registry of its own (no process-global collectors)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
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
        # engine.media_recordings.FAILURE_REASONS (disk_stalled, write_failed, unsupported_format).
        self.recordings_failed = Counter(
            "callbridge_recordings_failed",
            "Recordings that ended with call.recording.error, by reason",
            ["reason"],
            registry=self.registry,
        )

    def recording_failed(self, reason: str) -> None:
        """Count one failed recording (the media plane's ``on_recording_failed``)."""
        self.recordings_failed.labels(reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
