"""Copying a whole callbridge database to another, e.g. SQLite to PostgreSQL (issue 16, point 7).

``callbridge db migrate --to postgresql+asyncpg://...`` calls ``copy_database``. Both sides are
brought to this version's schema first with the same migrations ``serve`` runs (so the source,
if older, is upgraded in place exactly as starting the engine on it would). The target must
hold no callbridge rows: copying into a database already in use would mix two deployments'
organizations, tokens and calls. Rows keep their ids (tokens, webhooks and recordings refer to
them), tables go parents first (``metadata.sorted_tables``), all in one transaction on the
target: a failure leaves it as empty as before. PostgreSQL's id sequences are then moved past
the copied ids, or the next insert would collide with a copied row.

The engine must not be running on the source meanwhile (live calls would change it during the
copy); stop it, copy, and start it on the target: live calls are adopted there as after any
restart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Integer, Table, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from engine.errors import Conflict
from engine.store.connect import normalize_database_url, open_engine
from engine.store.migrate import migrate
from engine.store.schema import metadata, schema_version

__all__ = ["copy_database"]

BATCH_ROWS = 500  # rows per INSERT: bounded memory and statement size, few round trips


def _copied_tables() -> list[Table]:
    # schema_version is each database's own record of its migrations, not data to copy.
    return [table for table in metadata.sorted_tables if table is not schema_version]


async def copy_database(source_url: str, target_url: str) -> dict[str, int]:
    """Copy every callbridge row from ``source_url`` to the empty ``target_url``; returns the
    rows copied per table. ``Conflict`` if the target holds rows or is the source."""
    source_url, target_url = normalize_database_url(source_url), normalize_database_url(target_url)
    if source_url == target_url:
        raise Conflict("the source and the target are the same database")
    source, target = open_engine(source_url), open_engine(target_url)
    try:
        await migrate(source)
        await migrate(target)
        async with target.begin() as into:
            await _refuse_rows(into)
            counts: dict[str, int] = {}
            async with source.connect() as out_of:
                for table in _copied_tables():
                    counts[str(table.name)] = await _copy_table(out_of, into, table)
            if into.dialect.name == "postgresql":
                await _advance_sequences(into)
        return counts
    finally:
        await _dispose(source, target)


async def _refuse_rows(into: AsyncConnection) -> None:
    for table in _copied_tables():
        if (await into.execute(select(func.count()).select_from(table))).scalar_one():
            raise Conflict(
                f"the target database already holds callbridge data (table {table.name}); "
                "copy into an empty database"
            )


async def _copy_table(out_of: AsyncConnection, into: AsyncConnection, table: Table) -> int:
    order = list(table.primary_key.columns) or list(table.columns)
    result = await out_of.stream(select(table).order_by(*order))
    copied = 0
    async for batch in result.mappings().partitions(BATCH_ROWS):
        rows: Sequence[Mapping[str, Any]] = [dict(row) for row in batch]
        await into.execute(insert(table), rows)
        copied += len(rows)
    return copied


async def _advance_sequences(into: AsyncConnection) -> None:
    """Each serial id's sequence to the highest copied id (explicit ids leave it behind)."""
    for table in _copied_tables():
        for column in table.primary_key.columns:
            if not isinstance(column.type, Integer) or column.autoincrement is False:
                continue
            sequence = (
                await into.execute(
                    text("SELECT pg_get_serial_sequence(:table, :column)"),
                    {"table": table.name, "column": column.name},
                )
            ).scalar_one()
            if sequence is None:
                continue  # not a serial column (an id the application chooses)
            highest = (await into.execute(select(func.max(column)))).scalar_one()
            if highest is not None:
                await into.execute(
                    text("SELECT setval(:seq, :value)"), {"seq": sequence, "value": highest}
                )


async def _dispose(*engines: AsyncEngine) -> None:
    for engine in engines:
        await engine.dispose()
