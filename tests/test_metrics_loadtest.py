"""Every metric the engine exports, read from /metrics before, during and after a short load test
(issue 15): each is exported from the start, and each one moves in the run.

Ordinary traffic moves the traffic metrics. The fault metrics move because a fault drill
(tests/fault_drill.py) runs beside the load test on the same engine, as a second organization,
and makes each fault for real: frames lost, reordered, late and junk on a stream, a leg sending
ahead of the clock, a provider socket that stops reading, a stream cut, a webhook receiver that is
down, a recording disk that fails, the event loop stalling. A metric added to the engine and named
in neither set fails this test until it is.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.loadtest.engine_host import open_engine
from benchmarks.loadtest.generator import LoadConfig, LoadTest
from tests.fault_drill import DRILL_SETTINGS, family_total, open_drill

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
#: Moved only by a fault or an overload: the drill makes each (what makes it, in the engine).
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
async def test_every_metric_is_exported_and_moves_in_a_load_test_with_a_fault_drill() -> None:
    async with (
        open_engine(settings=DRILL_SETTINGS) as engine,
        aiohttp.ClientSession() as session,
        open_drill(engine, session) as drill,
    ):
        before = await scrape(session, engine.base_url)
        during: list[asyncio.Task[Families]] = []
        # The drill stalls the loop only once the load test's calls are up (or it has ended): a
        # stall during their set-up would turn them away as an overloaded engine does.
        calls_up = asyncio.Event()

        def progress(snapshot: dict[str, Any]) -> None:
            if snapshot["phase"] == "measuring" and not during:
                during.append(asyncio.ensure_future(scrape(session, engine.base_url)))
                calls_up.set()

        config = LoadConfig(
            provider="mixed", legs=10, room_size=2, duration_s=2.5, settle_s=0.3,
            setup_rate=200.0, setup_timeout_s=15.0, target=engine.base_url,
            token=engine.token, org_handle=engine.org_handle,
        )  # fmt: skip
        load = asyncio.ensure_future(LoadTest(config, progress=progress).run())
        load.add_done_callback(lambda _: calls_up.set())
        await drill.run(quiet=calls_up)
        result = await load
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
    # The drill saw each fault's metric move on /metrics while its fault was on; a counter keeps
    # the count after the run, a gauge (the webhook backlog) only showed it while it lasted.
    assert set(drill.seen) == set(FAULTS), f"no fault moved {sorted(set(FAULTS) - set(drill.seen))}"
    for name in sorted(FAULTS):
        if before[name][0] == "gauge":
            assert family_total(drill.seen[name], name) > 0, f"{name} did not leave 0"
        else:
            assert total(after, name) > total(before, name), f"{name} did not move"
