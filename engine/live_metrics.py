"""What the running engine is doing, read at each scrape of ``GET /metrics`` (issue 15, point 1).

Counters that code increments as things happen live in ``engine.metrics``; this collector reads
state instead: live legs by state and provider, rooms by kind and size, the mixer's counters,
webhook delivery outcomes, and the outbox's depth and age (a store query, so it is refreshed by
``refresh`` before each scrape rather than queried inside the synchronous ``collect``). Every
label set is bounded: leg states and providers are closed sets, room sizes are bucketed, and
nothing is labelled per leg, room or organization.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from engine.machine.model import LIVE_STATES

if TYPE_CHECKING:
    from engine.runtime.runtime import CallRuntime

__all__ = ["LiveMetrics", "room_size_bucket"]

#: Room sizes as a label: a bounded set, however large a conference grows.
_SIZE_BUCKETS = ((1, "1"), (2, "2"), (5, "3-5"), (10, "6-10"), (50, "11-50"))


def room_size_bucket(members: int) -> str:
    for most, label in _SIZE_BUCKETS:
        if members <= most:
            return label
    return "51+"


class LiveMetrics(Collector):
    def __init__(self, runtime: CallRuntime, clock: Callable[[], float] = time.time) -> None:
        self._runtime = runtime
        self._clock = clock
        self._backlog: tuple[int, float | None] = (0, None)

    async def refresh(self) -> None:
        """Read what only the store knows (the outbox's backlog) for the next ``collect``."""
        self._backlog = await self._runtime.store.webhook_backlog()

    def collect(self) -> Iterator[Metric]:
        yield from self._legs_and_rooms()
        yield from self._mixer()
        yield from self._webhooks()

    def describe(self) -> Iterator[Metric]:
        return iter(())  # families are built at each collect; nothing to check up front

    def _legs_and_rooms(self) -> Iterator[Metric]:
        runtime = self._runtime
        checkpoint = runtime.machine.checkpoint()
        legs = GaugeMetricFamily(
            "callbridge_legs", "Live legs by state and provider", labels=["state", "provider"]
        )
        by_state: Counter[tuple[str, str]] = Counter(
            (leg.state.value, runtime.lanes.provider_of(leg.call_control_id) or "none")
            for leg in checkpoint.legs.values()
            if leg.state in LIVE_STATES
        )
        for (state, provider), count in sorted(by_state.items()):
            legs.add_metric([state, provider], count)
        yield legs
        rooms = GaugeMetricFamily(
            "callbridge_rooms",
            "Rooms with media by kind (forwarded: two legs' frames passed through; mixed) and "
            "size in legs",
            labels=["kind", "size"],
        )
        mixer = runtime.plane.mixer
        by_kind: Counter[tuple[str, str]] = Counter()
        for room_id in checkpoint.rooms:
            ears = runtime.plane.listeners  # a recording's listener is no participant
            members = sum(not ears.is_ear(m) for m in mixer.members(room_id))
            if members:
                kind = "forwarded" if mixer.is_passthrough(room_id) else "mixed"
                by_kind[kind, room_size_bucket(members)] += 1
        for (kind, size), count in sorted(by_kind.items()):
            rooms.add_metric([kind, size], count)
        yield rooms

    def _mixer(self) -> Iterator[Metric]:
        counters = self._runtime.plane.mixer.counters
        yield CounterMetricFamily(
            "callbridge_mixer_frames_missing",
            "Leg-ticks mixed without the leg's frame (played as silence)",
            value=counters.frames_missing,
        )
        yield CounterMetricFamily(
            "callbridge_mixer_frames_shed",
            "Queued input frames dropped because they stood too long (latency)",
            value=counters.frames_shed,
        )
        yield CounterMetricFamily(
            "callbridge_mixer_input_dropped_bytes",
            "Queued input bytes dropped because a leg's queue overflowed",
            value=counters.bytes_dropped,
        )

    def _webhooks(self) -> Iterator[Metric]:
        outbox = self._runtime.outbox
        attempts = CounterMetricFamily(
            "callbridge_webhook_attempts",
            "Webhook delivery attempts by outcome (delivered, failed, refused by the URL policy)",
            labels=["outcome"],
        )
        attempts.add_metric(["delivered"], outbox.delivered)
        attempts.add_metric(["failed"], outbox.failed_attempts - outbox.refused)
        attempts.add_metric(["refused"], outbox.refused)
        yield attempts
        yield CounterMetricFamily(
            "callbridge_webhooks_dead_lettered",
            "Webhooks given up after their last attempt",
            value=outbox.dead_lettered,
        )
        depth, oldest = self._backlog
        yield GaugeMetricFamily(
            "callbridge_webhook_backlog", "Webhooks queued and not yet delivered", value=depth
        )
        yield GaugeMetricFamily(
            "callbridge_webhook_oldest_age_seconds",
            "How long the oldest undelivered webhook has waited (0 when none waits)",
            value=0.0 if oldest is None else max(self._clock() - oldest, 0.0),
        )
