"""Every metric the engine exports, read from /metrics before, during and after a short load test
(issue 15): each is exported from the start, and each that ordinary traffic drives moves.

The metrics that only a fault moves (a webhook receiver down, a stream reconnecting, admission
refusing, frames lost or late on the wire) are named with the fault that moves them, and here only
shown exported; some are shown moving where their fault is made (admission refusals:
tests/test_admission_load.py; skipped ticks: tests/test_metrics_ticks.py; dropped frames:
tests/test_stream_junk.py; failed recordings: tests/test_recorder_faults.py). A metric added to
the engine and named in neither set fails this test until it is.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.loadtest.engine_host import open_engine
from benchmarks.loadtest.generator import LoadConfig, LoadTest

# name -> (type, {sample name and labels: value})
Families = dict[str, tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]]

#: Moved by a load test's calls: counters and histograms grow, gauges leave their idle value.
TRAFFIC = {
    "callbridge_event_loop_lag_seconds",
    "callbridge_http_request_seconds",
    "callbridge_http_requests",
    "callbridge_legs",
    "callbridge_rooms",
    "callbridge_media_frames_received",
    "callbridge_media_frames_sent",
    "callbridge_media_frames_concealed",
    "callbridge_provider_request_seconds",
    "callbridge_store_commit_seconds",
    "callbridge_tick_duration_seconds",
    "callbridge_tick_lateness_seconds",
    "callbridge_webhook_attempts",
}
#: Moved only by a fault or an overload, which a clean run must not have.
FAULTS = {
    "callbridge_media_frames_late": "frames arriving after their turn (jitter beyond the window)",
    "callbridge_media_frames_lost": "sequence gaps on a stream",
    "callbridge_media_frames_reordered": "frames out of order on a stream",
    "callbridge_media_output_dropped": "a provider socket that stops reading",
    "callbridge_media_stream_reconnects": "a stream that drops and comes back",
    "callbridge_mixer_frames_missing": "a mixed leg with no frame at its tick (a loaded machine)",
    "callbridge_mixer_frames_shed": "a standing queue of a leg sending too fast",
    "callbridge_mixer_input_dropped_bytes": "a leg sending far ahead of the clock",
    "callbridge_ticks_skipped": "a tick so late that whole ticks are skipped",
    "callbridge_webhook_backlog": "a receiver slower than the engine (or down)",
    "callbridge_webhook_oldest_age_seconds": "a receiver slower than the engine (or down)",
    "callbridge_webhooks_dead_lettered": "a receiver that never answers",
    "callbridge_admission_refusals": "an overloaded tick or a draining engine",
    "callbridge_media_frames_dropped": "frames a stream sends that cannot be parsed",
    "callbridge_recordings_failed": "a recording's disk failing or stalling",
}


async def scrape(session: aiohttp.ClientSession, base_url: str) -> Families:
    async with session.get(f"{base_url}/metrics") as reply:
        assert reply.status == 200
        text = await reply.text()
    return {
        family.name: (
            family.type,
            {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples},
        )
        for family in text_string_to_metric_families(text)
        # The text parser reads a labelled family's ``_created`` lines as a family of their own.
        if family.name.startswith("callbridge_") and not family.name.endswith("_created")
    }


def total(families: Families, name: str) -> float:
    """What moves with traffic: the sum of a family's samples (counts and sums included)."""
    _, samples = families[name]
    return sum(v for (sample, _), v in samples.items() if not sample.endswith("_created"))


@pytest.mark.slow_family
async def test_every_metric_is_exported_and_traffic_moves_each_traffic_metric() -> None:
    async with open_engine() as engine, aiohttp.ClientSession() as session:
        before = await scrape(session, engine.base_url)
        during: list[asyncio.Task[Families]] = []

        def progress(snapshot: dict[str, Any]) -> None:
            if snapshot["phase"] == "measuring" and not during:
                during.append(asyncio.ensure_future(scrape(session, engine.base_url)))

        config = LoadConfig(
            provider="mixed", legs=10, room_size=2, duration_s=2.5, settle_s=0.3,
            setup_rate=200.0, setup_timeout_s=15.0, target=engine.base_url,
            token=engine.token, org_handle=engine.org_handle,
        )  # fmt: skip
        result = await LoadTest(config, progress=progress).run()
        assert result.misrouted == 0 and result.app_errors == []
        assert during, "the run reached its measuring window"
        live = await during[0]
        after = await scrape(session, engine.base_url)

    exported = set(after)
    assert set(before) == exported == set(live), "every metric is exported from the start"
    assert exported == TRAFFIC | set(FAULTS), (
        f"unclassified: {sorted(exported - TRAFFIC - set(FAULTS))}; "
        f"gone: {sorted((TRAFFIC | set(FAULTS)) - exported)}"
    )
    for name in sorted(TRAFFIC):
        kind = before[name][0]
        if kind == "gauge":  # live state: it shows the calls while they are up
            assert total(live, name) != total(before, name), f"{name} did not move"
        else:
            assert total(after, name) > total(before, name), f"{name} did not move"
