"""Every input is stored before it is acknowledged (issue 12, point 1), through the app.

The store is the app's own SQLite file; a write failure is planted in the database itself (a
trigger armed and disarmed from outside), so the app meets it where a full or failing disk
would meet it: in the transaction of the input.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from engine.config import Settings, sqlite_path
from engine.errors import InputNotStored
from engine.store.live_codec import LIVE_SCHEMA_VERSION
from tests.call_fakes import Harness


@pytest.fixture
async def h(aiohttp_server, aiohttp_client, settings: Settings) -> Harness:  # type: ignore[no-untyped-def]
    return await Harness.start(aiohttp_client, aiohttp_server, settings)


class PlantedFailure:
    """A trigger that aborts any write of one leg's live state while armed. Its statements run
    in a thread: the app's own transactions need the event loop to finish."""

    def __init__(self, db: Path, leg: str) -> None:
        self.db = db
        self.leg = leg

    async def install(self) -> PlantedFailure:
        await self._run(
            "CREATE TABLE fault (armed INTEGER NOT NULL)",
            "INSERT INTO fault VALUES (0)",
            "CREATE TRIGGER refuse BEFORE INSERT ON live_legs"
            f" WHEN NEW.call_control_id = '{self.leg}' AND (SELECT armed FROM fault) = 1"
            " BEGIN SELECT RAISE(ABORT, 'planted write failure'); END",
        )
        return self

    async def arm(self, armed: bool) -> None:
        await self._run(f"UPDATE fault SET armed = {int(armed)}")

    async def _run(self, *statements: str) -> None:
        def run() -> None:
            with sqlite3.connect(self.db, timeout=10) as conn:
                for statement in statements:
                    conn.execute(statement)

        await asyncio.to_thread(run)


def database(settings: Settings) -> Path:
    path = sqlite_path(settings.database_url)
    assert path is not None
    return path


def stored_row(db: Path, leg: str) -> tuple[str]:
    with sqlite3.connect(db, timeout=10) as conn:
        row = conn.execute("SELECT state FROM live_legs WHERE call_control_id = ?", (leg,))
        return row.fetchone()  # type: ignore[no-any-return]


async def stored_legs(h: Harness) -> dict[str, object]:
    snapshot = await h.runtime.store.load_live()
    return {leg.call_control_id: leg for leg in snapshot.legs}


async def test_the_store_holds_the_machines_state_after_each_input(
    h: Harness, settings: Settings
) -> None:
    a, b = await h.up(), await h.up()
    await h.bridged(a, b)
    checkpoint = h.runtime.machine.checkpoint()
    assert await stored_legs(h) == {a: checkpoint.legs[a], b: checkpoint.legs[b]}
    snapshot = await h.runtime.store.load_live()
    assert {room.room_id: room for room in snapshot.rooms} == checkpoint.rooms
    armed = checkpoint.legs[a].timers | checkpoint.legs[b].timers
    assert {key for key, _ in snapshot.timers} == armed
    with sqlite3.connect(database(settings)) as conn:
        (raw,) = conn.execute(
            "SELECT state FROM live_legs WHERE call_control_id = ?", (a,)
        ).fetchone()
    assert f'"v":{LIVE_SCHEMA_VERSION}' in raw  # the schema version travels with the state


async def test_an_input_the_store_refuses_is_a_503_that_changes_nothing_and_the_next_works(
    h: Harness, settings: Settings
) -> None:
    a, b = await h.up(), await h.up()
    await h.bridged(a, b)
    fault = await PlantedFailure(database(settings), a).install()
    before = h.runtime.machine.snapshot()
    stored = await stored_legs(h)
    await fault.arm(True)

    reply = await h.act(a, "hangup")

    assert reply.status == 503, reply
    (error,) = reply.body["errors"]
    assert error["code"] == "10007" and "could not be stored" in error["detail"]
    assert h.runtime.machine.snapshot() == before
    assert await stored_legs(h) == stored
    assert "hangup" not in h.gateway.ops(a)
    assert h.room_of(a) == h.room_of(b) is not None
    # The next input works: the other leg is untouched, and with the disk back so is this one.
    await h.ok(b, "client_state_update", client_state="aGk=")
    await fault.arm(False)
    await h.ok(a, "hangup")
    hangup = await h.receiver.next("call.hangup", a)
    assert hangup.payload["call_control_id"] == a
    assert (await stored_legs(h))[a] == h.runtime.machine.checkpoint().legs[a]


async def test_a_provider_event_the_store_refuses_fails_so_the_provider_retries(
    h: Harness, settings: Settings
) -> None:
    a = await h.up()
    fault = await PlantedFailure(database(settings), a).install()
    await fault.arm(True)
    before = h.runtime.machine.snapshot()
    with pytest.raises(InputNotStored) as failed:
        await h.hung_up(a)
    assert failed.value.status == 503
    assert h.runtime.machine.snapshot() == before
    await fault.arm(False)
    await h.hung_up(a)  # the provider's retry
    assert (await h.receiver.next("call.hangup", a)).payload["hangup_source"] == "caller"
