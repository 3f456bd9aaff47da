"""The metrics an on-call engineer runs the engine by (issue 15, point 1): each one the engine
exports is present and moves while a call runs, the label sets stay bounded, and the Grafana
dashboard in deploy/grafana queries only metrics the engine exports."""

from __future__ import annotations

import asyncio
import json
import re
import resource
import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from engine.api.keys import METRICS
from engine.config import Settings
from engine.live_metrics import room_size_bucket
from media.codecs import PCMA_8K
from tests.call_fakes import Harness, hear_each_other

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "callbridge.json"


async def scrape(h: Harness) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics through the app: (sample name, sorted labels) -> value."""
    response = await h.client.get("/metrics")
    assert response.status == 200
    text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def until_scraped(h: Harness, check: Any, what: str, within_s: float = 10.0) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + within_s
    while True:
        found = await scrape(h)
        if check(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)  # polling the endpoint under test, with a deadline


async def test_a_bridged_call_shows_in_every_live_metric(
    aiohttp_server: Any, aiohttp_client: Any, settings: Settings
) -> None:
    h = await Harness.start(aiohttp_client, aiohttp_server, settings)
    idle = await scrape(h)
    assert value(idle, "callbridge_legs", state="bridged", provider="fake") == 0
    a, b = await h.up(), await h.up(media=PCMA_8K)  # two formats: the room is mixed
    await h.bridged(a, b)
    await hear_each_other(h, a, b)
    await h.barrier(a)  # every webhook of the call so far delivered

    found = await until_scraped(
        h,
        lambda f: (
            value(f, "callbridge_event_loop_lag_seconds_count") > 0
            and value(f, "callbridge_webhook_backlog") == 0
        ),
        "the event-loop lag probe's first sample and the last webhook recorded delivered",
    )
    assert value(found, "callbridge_legs", state="bridged", provider="fake") == 2
    assert value(found, "callbridge_rooms", kind="mixed", size="2") == 1
    assert value(found, "callbridge_store_commit_seconds_count") > 0
    answered = value(
        found, "callbridge_provider_request_seconds_count",
        provider="fake", operation="answer", outcome="ok",
    )  # fmt: skip
    assert answered == 2
    assert value(found, "callbridge_webhook_attempts_total", outcome="delivered") > 0
    assert value(found, "callbridge_webhook_attempts_total", outcome="failed") == 0
    assert value(found, "callbridge_webhook_backlog") == 0
    assert value(found, "callbridge_webhook_oldest_age_seconds") == 0
    # Media frame counters move with real streams: tests/test_media_stats.py.
    for name in (
        "callbridge_mixer_frames_missing_total", "callbridge_mixer_frames_shed_total",
        "callbridge_mixer_input_dropped_bytes_total", "callbridge_webhooks_dead_lettered_total",
        "callbridge_media_stream_reconnects_total",
    ):  # fmt: skip
        assert (name, ()) in found, f"{name} is not exported"
    # The process's own figures: with several nodes on one machine, each node's CPU and memory
    # (what `callbridge loadtest --engine-workers` reads per node).
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = value(found, "process_cpu_seconds_total")
    assert 0 < cpu_s <= used.ru_utime + used.ru_stime + 0.02
    assert value(found, "process_resident_memory_bytes") > 0

    await h.ok(a, "hangup")
    await h.receiver.next("call.hangup", a)
    after = await until_scraped(
        h,
        lambda f: value(f, "callbridge_legs", state="bridged", provider="fake") == 0,
        "the ended call to leave the live gauges",
    )
    assert value(after, "callbridge_rooms", kind="mixed", size="2") == 0


def test_room_sizes_are_a_bounded_label() -> None:
    sizes = {room_size_bucket(n) for n in range(1, 10_000)}
    assert sizes == {"1", "2", "3-5", "6-10", "11-50", "51+"}


async def test_the_dashboard_queries_only_exported_metrics(
    aiohttp_server: Any, aiohttp_client: Any, settings: Settings
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    assert len(queries) >= 25
    found = (re.findall(r"\b(?:callbridge|process)_[a-z0-9_]+", query) for query in queries)
    named = {name for names in found for name in names}
    h = await Harness.start(aiohttp_client, aiohttp_server, settings)
    text = h.client.app[METRICS].render().decode()
    # A family is exported (HELP and TYPE) even before its first labelled sample.
    families = {
        family.name
        for family in text_string_to_metric_families(text)
        if not family.name.endswith("_created")  # when each series began: not for a dashboard
    }
    queried = {_family(name) for name in named}
    missing = sorted(queried - families)
    assert missing == [], f"the dashboard queries metrics the engine does not export: {missing}"
    assert sorted(families - queried) == [], "every exported family is on the dashboard"


def _family(sample_name: str) -> str:
    for suffix in ("_bucket", "_count", "_sum", "_total"):
        if sample_name.endswith(suffix):
            return sample_name.removesuffix(suffix)
    return sample_name
