"""Calls survive a restart of the engine (issue 12, point 2), through the app.

The first app carries a call; it stops and a second app starts on the same store, as after a
crash (stopping writes nothing: the store already holds every input). The second app must know
the legs, rooms and timers as they were, ask the provider for a new media stream for each
answered leg at once, carry the media again when it comes, and tell the application nothing
ended. The end-to-end test with real processes and provider simulators is
``tests/test_restart_e2e.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from engine.config import Settings
from engine.machine.model import LegState, TimerKind
from engine.store.connect import normalize_database_url, open_engine
from media.codecs import PCMA_8K
from tests.call_fakes import Harness, hear_each_other

pytestmark = pytest.mark.both_databases  # the same tests on SQLite and on PostgreSQL


@pytest.fixture
async def h(aiohttp_server: Any, aiohttp_client: Any, settings: Settings) -> Harness:
    return await Harness.start(aiohttp_client, aiohttp_server, settings)


async def test_a_bridged_call_is_adopted_and_its_parties_hear_each_other_again(
    h: Harness, aiohttp_client: Any, settings: Settings
) -> None:
    a, b = await h.up(), await h.up(media=PCMA_8K)
    await h.bridged(a, b)
    await hear_each_other(h, a, b)
    before = h.runtime.machine.checkpoint()
    limit = h.timers.delay(a, TimerKind.TIME_LIMIT)
    hooks_before = len(h.receiver.of(a)) + len(h.receiver.of(b))

    h = await h.restarted(aiohttp_client, settings)

    after = h.runtime.machine.checkpoint()
    assert after.rooms == before.rooms and after.conferences == before.conferences
    for leg in (a, b):
        assert after.legs[leg].state is LegState.BRIDGED
        assert after.legs[leg].room_id == before.legs[leg].room_id
        assert after.legs[leg].media_started is False  # its stream went with the old process
        # A new stream is asked for at once, not after the media wait.
        await h.gateway.wait("restart_media", leg)
    # The time limit runs on from where it was, not from the restart.
    assert h.timers.delay(a, TimerKind.TIME_LIMIT) <= limit
    await h.media(a)
    await h.media(b, PCMA_8K)
    await hear_each_other(h, a, b)
    # The application was told nothing ended: a barrier shows every webhook of each leg.
    for leg in (a, b):
        assert "call.hangup" not in await h.barrier(leg)
    assert len(h.receiver.of(a)) + len(h.receiver.of(b)) >= hooks_before
    # And the adopted call is the application's as before: a command ends it as usual.
    await h.ok(a, "hangup")
    await h.receiver.next("call.hangup", a)
    await h.gateway.wait("hangup", a)


async def test_timers_that_came_due_while_down_fire_at_once(
    h: Harness, aiohttp_client: Any, settings: Settings
) -> None:
    a = await h.dial(timeout_secs=30)
    assert h.timers.delay(a, TimerKind.RING_TIMEOUT) == 30
    # The engine was down for 31 s: the stored deadline is in the past by the restart.
    await shift_deadlines(settings, -31.0)

    h = await h.restarted(aiohttp_client, settings)

    assert h.timers.delay(a, TimerKind.RING_TIMEOUT) == 0
    h.timers.fire(a, TimerKind.RING_TIMEOUT)
    hangup = await h.receiver.next("call.hangup", a)
    assert hangup.payload["hangup_cause"] == "timeout"


async def shift_deadlines(settings: Settings, seconds: float) -> None:
    """Move every stored deadline, behind the engine's back (it is down)."""
    database = open_engine(normalize_database_url(settings.database_url))
    try:
        async with database.begin() as conn:
            await conn.execute(
                sa.text("UPDATE live_timers SET deadline = deadline + :s"), {"s": seconds}
            )
    finally:
        await database.dispose()


async def test_a_leg_no_adapter_can_reach_is_ended_with_call_hangup(
    h: Harness, aiohttp_client: Any, settings: Settings
) -> None:
    a = await h.up()
    h = await h.restarted(aiohttp_client, settings, unreachable={a})
    hangup = await h.receiver.next("call.hangup", a)
    assert hangup.payload["callbridge_reason"] == "provider_call_gone"
    assert h.runtime.machine.leg(a).state is LegState.HANGUP
