"""A fresh PostgreSQL database per test, for the store's tests on PostgreSQL (issue 16, point 1).

The server is the machine's (``CALLBRIDGE_TEST_POSTGRES``, default
``postgresql://postgres@127.0.0.1:5432/test``: trust auth, as on every machine of this project and
in CI). Each test gets its own database, so tests never see each other's rows; they are all
dropped when the run ends. Without a reachable
server the PostgreSQL variants are skipped with the reason, except under CI (``CI=true``), where
a missing server fails the run: the PostgreSQL path must not go untested there silently.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import asyncpg
import pytest
from sqlalchemy.engine import make_url

ADMIN_URL = os.environ.get("CALLBRIDGE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


async def _admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(ADMIN_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        reason = f"PostgreSQL at {ADMIN_URL} is not reachable: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI must run the PostgreSQL tests)")
        pytest.skip(reason)


# Databases made by this run. They are dropped when the run ends (``drop_all``, from the
# session fixture in conftest.py), not when their test ends: a test's apps and servers may be
# torn down after the fixture that made the database.
_made: list[str] = []


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """The SQLAlchemy URL of a new, empty database (dropped at the end of the run)."""
    name = f"cb_test_{uuid.uuid4().hex[:16]}"
    admin = await _admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    _made.append(name)
    url = make_url(ADMIN_URL).set(drivername="postgresql+asyncpg", database=name)
    yield url.render_as_string(hide_password=False)


async def drop_all() -> None:
    """Drop every database this run made (``WITH (FORCE)``: a leftover connection cannot keep
    one alive)."""
    if not _made:
        return
    admin = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        while _made:
            await admin.execute(f'DROP DATABASE IF EXISTS "{_made.pop()}" WITH (FORCE)')
    finally:
        await admin.close()


@asynccontextmanager
async def database_url(kind: str, sqlite_path: str) -> AsyncIterator[str]:
    """A database of ``kind`` ("sqlite": the file ``sqlite_path``; "postgresql": a fresh one)."""
    if kind == "sqlite":
        yield f"sqlite:///{sqlite_path}"
        return
    async with fresh_database() as url:
        yield url


def both_databases(metafunc: pytest.Metafunc, *, sqlite_only: tuple[str, ...] = ()) -> None:
    """``pytest_generate_tests`` body: a test that uses the ``database_kind`` fixture runs on
    SQLite and PostgreSQL, unless it also uses one of ``sqlite_only`` (fixtures that read the
    SQLite file itself)."""
    if "database_kind" in metafunc.fixturenames:
        only_sqlite = any(name in metafunc.fixturenames for name in sqlite_only)
        metafunc.parametrize(
            "database_kind", ["sqlite"] if only_sqlite else ["sqlite", "postgresql"]
        )


def made_now(kind: str, sqlite_path: str) -> str:
    """``database_url`` for a synchronous fixture: a PostgreSQL database is made on a thread of
    its own (a fixture may run while the test's event loop is set up)."""
    if kind == "sqlite":
        return f"sqlite:///{sqlite_path}"

    async def make() -> str:
        async with fresh_database() as url:
            return url

    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, make()).result()
