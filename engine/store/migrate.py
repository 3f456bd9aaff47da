"""Running the schema migrations (``engine.store.migrations`` lists them): each newer version
applied once, in its own transaction, one process at a time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from engine.errors import StorageError
from engine.store.migrations import MIGRATIONS, Migration
from engine.store.schema import schema_version

__all__ = ["migrate"]


# Any constant: the key of PostgreSQL's advisory lock that callbridge's migrations share.
_MIGRATION_LOCK = 0x63616C6C  # "call"


async def _one_at_a_time(conn: AsyncConnection) -> None:
    """Hold the migration lock until this transaction ends. Nodes starting together on one
    PostgreSQL database would otherwise run the same step side by side, and all but one fail on
    its tables (tests/test_migrate_concurrently.py); SQLite's write lock does this already."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})


def _create_version_table(conn: Connection) -> None:
    schema_version.create(conn, checkfirst=True)


async def _current_version(conn: AsyncConnection) -> int:
    version = await conn.scalar(select(func.max(schema_version.c.version)))
    return int(version) if version is not None else 0


async def migrate(engine: AsyncEngine, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Apply every migration newer than the database's version; return the version reached.

    Each migration and its ``schema_version`` row commit together, so a failed migration
    leaves the database at the previous version. Raises ``StorageError`` when the database
    is newer than the code (an older callbridge must not write to it) and lets database
    errors through for the caller to map.
    """
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migration versions must be 1, 2, 3, ... in order, got {versions}")
    latest = len(versions)

    async with engine.begin() as conn:
        await _one_at_a_time(conn)
        await conn.run_sync(_create_version_table)
        current = await _current_version(conn)
    if current > latest:
        raise StorageError(
            f"the database is at schema version {current}, newer than this callbridge "
            f"knows ({latest}); upgrade callbridge"
        )

    for migration in migrations[current:]:
        async with engine.begin() as conn:
            # Another process may have migrated since the check above; the transaction holds
            # the write lock (SQLite) or the migration lock (PostgreSQL), so this second look
            # is authoritative.
            await _one_at_a_time(conn)
            if await _current_version(conn) >= migration.version:
                continue
            await conn.run_sync(migration.apply)
            await conn.execute(
                insert(schema_version).values(
                    version=migration.version,
                    description=migration.description,
                    applied_at=datetime.now(UTC),
                )
            )
    return latest
