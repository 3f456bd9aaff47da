"""``callbridge db migrate``: a whole database moved to another, SQLite to PostgreSQL (issue 16,
point 7), with a bridged call that goes on from the new database as after a restart."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from engine.cli import main
from engine.config import Settings
from engine.errors import Conflict
from engine.machine.model import LegState
from engine.store.connect import open_engine
from engine.store.copy import copy_database
from engine.store.sql import SqlStore
from media.codecs import PCMA_8K
from tests.call_fakes import Harness, hear_each_other
from tests.postgres import fresh_database


async def test_a_live_call_moves_to_postgresql_and_goes_on(
    aiohttp_server: Any, aiohttp_client: Any, settings: Settings
) -> None:
    h = await Harness.start(aiohttp_client, aiohttp_server, settings)
    a, b = await h.up(), await h.up(media=PCMA_8K)
    await h.bridged(a, b)
    await hear_each_other(h, a, b)
    before = h.runtime.machine.checkpoint()
    await h.client.close()  # the engine stops before its database is copied

    async with fresh_database() as target:
        counts = await copy_database(settings.database_url, target)
        assert counts["organizations"] == 2 and counts["live_legs"] == 2
        assert counts["webhook_outbox"] > 0 and counts["api_tokens"] >= 2
        moved = dataclasses.replace(settings, database_url=target)
        h = await h.restarted(aiohttp_client, moved)  # the organizations' tokens still work

        after = h.runtime.machine.checkpoint()
        assert after.rooms == before.rooms
        assert {leg: after.legs[leg].state for leg in (a, b)} == {
            a: LegState.BRIDGED,
            b: LegState.BRIDGED,
        }
        await h.media(a)
        await h.media(b, PCMA_8K)
        await hear_each_other(h, a, b)
        # New rows get new ids after the copied ones (PostgreSQL's sequences were moved on).
        store = SqlStore(target)
        await store.start()
        try:
            newer = await store.create_organization("initech", "Initech", "f" * 64)
        finally:
            await store.close()
        assert newer.id > max(o.org_id for o in (h.org, h.other_org))
        await h.ok(a, "hangup")
        await h.receiver.next("call.hangup", a)


async def test_a_target_in_use_is_refused_and_left_as_it_was(settings: Settings) -> None:
    source = SqlStore(settings.database_url)
    await source.start()
    await source.create_organization("acme", "Acme", "a" * 64)
    await source.close()
    async with fresh_database() as target:
        used = SqlStore(target)
        await used.start()
        await used.create_organization("globex", "Globex", "b" * 64)
        await used.close()
        with pytest.raises(Conflict, match="already holds callbridge data"):
            await copy_database(settings.database_url, target)
        engine = open_engine(target)
        async with engine.connect() as conn:
            handles = (await conn.execute(sa.text("SELECT domain_handle FROM organizations"))).all()
        await engine.dispose()
        assert [h for (h,) in handles] == ["globex"]
    with pytest.raises(Conflict, match="same database"):
        await copy_database(settings.database_url, settings.database_url)


def test_the_command_copies_and_says_how_many_rows(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    async def seed() -> None:
        store = SqlStore(settings.database_url)
        await store.start()
        await store.create_organization("acme", "Acme", "c" * 64)
        await store.close()

    async def run() -> int:
        async with fresh_database() as target:
            await seed()
            return await asyncio.to_thread(
                main, ["db", "migrate", "--database", settings.database_url, "--to", target]
            )

    assert asyncio.run(run()) == 0
    printed = orjson.loads(capsys.readouterr().out)
    assert printed["copied"]["organizations"] == 1
