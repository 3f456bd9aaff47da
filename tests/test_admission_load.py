"""Admission control on the media tick's load (issue 13, point 6).

When the tick runs late beyond its budget, new legs are refused (inbound busy, dial 429 with
``Retry-After`` in Telnyx's envelope, /readyz 503) rather than every live call losing audio;
once the tick keeps time again for a while, calls are admitted again.
"""

from __future__ import annotations

import pytest

from engine.admission import Admission, TickLoad
from engine.api.keys import ADMISSION
from engine.config import Settings
from engine.inbound import admit
from engine.live import LiveLegIndex
from engine.model import RejectCause
from engine.store.sql import SqlStore
from tests.call_fakes import Harness

ON_TIME, LATE = 0.001, 0.015


def overload(load: TickLoad) -> None:
    for _ in range(11):  # more than a fifth of a 50-tick window
        load.observe_tick(0.001, LATE)
    assert load.overloaded


def test_a_few_late_ticks_are_not_an_overload() -> None:
    load = TickLoad()
    for n in range(500):
        # One late tick in ten: five per window.
        load.observe_tick(0.001, LATE if n % 10 == 0 else ON_TIME)
    assert not load.overloaded


def test_overloaded_past_a_fifth_of_the_window_and_back_after_two_clean_seconds() -> None:
    load = TickLoad()
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


def test_skipped_ticks_count_as_late() -> None:
    load = TickLoad()
    load.ticks_skipped(15)  # a 300 ms stall: its ticks were given up ...
    load.observe_tick(0.001, 0.2)  # ... and the tick after it ran late
    assert load.overloaded


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
        refusal = await admit(store, LiveLegIndex(), "+15550001111", settings, admission)
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
    ready = await h.client.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["reason"] == "overloaded: its media tick runs late"
    assert (await h.client.get("/healthz")).status == 200
