"""Admission control on the media tick's load (issue 13, point 6).

When the tick runs late beyond its budget, new legs are refused (inbound busy, dial 429 with
``Retry-After`` in Telnyx's envelope, /readyz 503) rather than every live call losing audio;
once the tick keeps time again for a while, calls are admitted again.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from engine.admission.gate import Admission, TickLoad
from engine.admission.inbound import admit
from engine.admission.live import LiveLegIndex
from engine.api.keys import ADMISSION, METRICS
from engine.config import Settings
from engine.machine.model import RejectCause
from engine.store.sql import SqlStore
from tests.call_fakes import Harness

ON_TIME, LATE = 0.001, 0.025


def warmed_up() -> TickLoad:
    """A tick load past its first second (nothing is judged before)."""
    load = TickLoad()
    for _ in range(50):
        load.observe_tick(0.001, LATE)
    assert not load.overloaded, "a process's start-up second is not judged"
    return load


def overload(load: TickLoad) -> None:
    for _ in range(50):  # past the start-up second (when it is not past it already) ...
        load.observe_tick(0.001, ON_TIME)
    for _ in range(11):  # ... more than a fifth of a 50-tick window late
        load.observe_tick(0.001, LATE)
    assert load.overloaded


def test_a_few_late_ticks_are_not_an_overload() -> None:
    load = warmed_up()
    for n in range(500):
        # One late tick in ten: five per window.
        load.observe_tick(0.001, LATE if n % 10 == 0 else ON_TIME)
    assert not load.overloaded


def test_overloaded_past_a_fifth_of_the_window_and_back_after_two_clean_seconds() -> None:
    load = warmed_up()
    for _ in range(50):
        load.observe_tick(0.001, ON_TIME)
    load.observe_tick(0.001, 0.019)  # late, but not a whole tick late: on time here
    for _ in range(10):
        load.observe_tick(0.001, LATE)
    assert not load.overloaded, "ten late ticks of fifty is the limit, not past it"
    load.observe_tick(0.001, LATE)
    assert load.overloaded
    for _ in range(99):
        load.observe_tick(0.001, ON_TIME)
    assert load.overloaded, "a tick that keeps time for a moment is not yet a healthy one"
    load.observe_tick(0.001, LATE)
    for _ in range(99):
        load.observe_tick(0.001, ON_TIME)
    assert load.overloaded, "a late tick starts the recovery over"
    load.observe_tick(0.001, ON_TIME)
    assert not load.overloaded
    assert load.retry_after_s == pytest.approx(2.0)


def test_one_stall_is_not_an_overload() -> None:
    load = warmed_up()
    for _ in range(50):
        load.observe_tick(0.001, ON_TIME)
    load.ticks_skipped(15)  # a 400 ms stall: its ticks were given up ...
    for lateness in (0.1, 0.08, 0.06, 0.04, 0.02):  # ... and the catch-up ran late
        load.observe_tick(0.001, lateness)
    assert not load.overloaded


def test_the_budget_must_make_sense() -> None:
    with pytest.raises(ValueError, match="budget"):
        TickLoad(late_after_s=0)
    with pytest.raises(ValueError, match="share"):
        TickLoad(share=1.0)


async def test_an_overloaded_engine_turns_inbound_calls_away_busy(settings: Settings) -> None:
    store = SqlStore(settings.database_url)
    await store.start()
    try:
        admission = Admission()
        overload(admission.load)
        refusal = await admit(store, LiveLegIndex(), "+15550001111", settings, admission, "v3:x")
        assert not isinstance(refusal, type(None))
        assert refusal.cause is RejectCause.USER_BUSY  # type: ignore[union-attr]
        assert "overloaded" in refusal.reason  # type: ignore[union-attr]
        assert admission.open, "overloaded is not stopping: /healthz and drains are unaffected"
    finally:
        await store.close()


@pytest.fixture
async def h(aiohttp_server, aiohttp_client, settings: Settings) -> Harness:  # type: ignore[no-untyped-def]
    return await Harness.start(aiohttp_client, aiohttp_server, settings)


async def test_an_overloaded_engine_answers_dial_429_and_readyz_503(h: Harness) -> None:
    assert h.client.app is not None
    overload(h.client.app[ADMISSION].load)
    body = {"connection_id": h.bridge["slug"], "from": "+15550001111", "to": "+15550003333"}
    reply = await h.client.post(
        "/v2/calls", json=body, headers={"Authorization": f"Bearer {h.org.token}"}
    )
    assert reply.status == 429
    assert reply.headers["Retry-After"] == "2"
    (error,) = (await reply.json())["errors"]
    assert error["code"] == "10011" and "overloaded" in error["detail"]
    text = h.client.app[METRICS].render().decode()
    assert 'callbridge_admission_refusals_total{reason="overloaded"} 1.0' in text
    ready = await h.client.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["reason"] == "overloaded: its media tick runs late"
    assert (await h.client.get("/healthz")).status == 200


async def test_an_engine_out_of_cpu_refuses_new_calls_until_it_keeps_time_again(
    h: Harness,
) -> None:
    """The real media tick, starved of CPU by work hogging its event loop (what an overloaded
    process does to it), is what refuses: no test hook in between."""
    assert h.client.app is not None
    admission = h.client.app[ADMISSION]
    await until_ready(h, True)
    hog = asyncio.ensure_future(hog_the_loop())
    try:
        await until_ready(h, False)
    finally:
        hog.cancel()
    assert admission.load.overloaded and admission.open
    await until_ready(h, True)  # after two seconds of ticks on time
    assert not admission.load.overloaded
    tick = h.client.app[METRICS].render().decode()
    assert "callbridge_tick_lateness_seconds_count" in tick


async def hog_the_loop() -> None:
    """Keep the event loop busy 40 ms of every 45: every tick starts a whole tick late."""
    while True:
        time.sleep(0.04)  # noqa: ASYNC251 - blocking the loop is the point: the tick starves
        await asyncio.sleep(0.005)


async def until_ready(h: Harness, ready: bool) -> None:
    """Poll /readyz until it says ``ready`` (generous: a loaded machine's ticks run late)."""
    async with asyncio.timeout(30):
        while ((await h.client.get("/readyz")).status == 200) is not ready:  # noqa: ASYNC110 - polled over HTTP, as a load balancer does
            await asyncio.sleep(0.05)
