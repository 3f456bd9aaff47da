"""Transactions on the async engine: one writer at a time on SQLite, errors translated."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import StaticPool

from engine.errors import Conflict
from engine.store.connect import (
    _DATABASE_FAILURES,
    _READ_ONLY,
    DEFAULT_BUSY_TIMEOUT,
    _storage_error,
    open_engine,
)
from engine.store.migrate import migrate


class SqlTransactions:
    """Opens the engine and hands out read and write transactions (``_read`` / ``_write``)."""

    def __init__(self, url: str, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self._engine = open_engine(url, busy_timeout=busy_timeout)
        self._reader = self._engine.execution_options(**{_READ_ONLY: True})
        sqlite = self._engine.dialect.name == "sqlite"
        # SQLite admits one writer at a time anyway. Queueing this process's writers here
        # instead of in SQLite's busy handler (which polls with sleeps of up to 100 ms) keeps
        # write latency low and leaves busy_timeout for other processes.
        self._writers = asyncio.Lock() if sqlite else None
        # An in-memory database has a single connection, and one connection holds one
        # transaction: reads must queue behind writes too, or one would begin inside another.
        self._serial_reads = isinstance(self._engine.pool, StaticPool)

    def _write_turn(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self._writers if self._writers is not None else contextlib.nullcontext()

    def _read_turn(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self._write_turn() if self._serial_reads else contextlib.nullcontext()

    @contextlib.asynccontextmanager
    async def _write(self, conflict: str) -> AsyncIterator[AsyncConnection]:
        """One write transaction. ``conflict`` is the detail for a uniqueness violation that
        the method's own checks did not catch first (only a concurrent writer on a database
        without SQLite's write lock can get past them)."""
        async with self._write_turn():
            try:
                async with self._engine.begin() as conn:
                    yield conn
            except IntegrityError as exc:
                raise Conflict(conflict) from exc
            except _DATABASE_FAILURES as exc:
                raise _storage_error(exc) from exc

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        """One read transaction: every query in it sees the same snapshot."""
        async with self._read_turn():
            try:
                async with self._reader.connect() as conn:
                    yield conn
            except _DATABASE_FAILURES as exc:
                raise _storage_error(exc) from exc

    async def start(self) -> None:
        async with self._write_turn():
            try:
                await migrate(self._engine)
            except _DATABASE_FAILURES as exc:
                raise _storage_error(exc) from exc

    async def close(self) -> None:
        await self._engine.dispose()
