"""Several nodes starting at once on one fresh PostgreSQL database (issue 16: a deployment's
nodes start together, e.g. from one compose file) migrate it once, without an error.

On SQLite a migration's transaction holds the write lock; on PostgreSQL two transactions can
run the same migration side by side, and the second fails on the first's tables. Each
migration step takes a transaction-scoped advisory lock there (engine/store/migrations.py).
"""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from engine.store.connect import open_engine
from engine.store.migrate import migrate
from engine.store.migrations import MIGRATIONS
from engine.store.schema import schema_version
from tests.postgres import fresh_database

NODES = 4


async def test_nodes_starting_together_migrate_a_fresh_database_once() -> None:
    async with fresh_database() as url:
        engines = [open_engine(url) for _ in range(NODES)]
        try:
            reached = await asyncio.gather(*(migrate(engine) for engine in engines))
            assert reached == [len(MIGRATIONS)] * NODES
            async with engines[0].connect() as conn:
                versions = (await conn.scalars(select(schema_version.c.version))).all()
            assert sorted(versions) == list(range(1, len(MIGRATIONS) + 1)), "each applied once"
        finally:
            await asyncio.gather(*(engine.dispose() for engine in engines))
