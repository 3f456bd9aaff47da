"""Opening the database: URLs, the async engine, SQLite pragmas, and error translation.

Everything that differs between databases lives here; the queries in ``rows`` and ``sql`` are
portable SQLAlchemy Core.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import (
    event,
)
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from engine.errors import StorageError, StoreUnreachable

DEFAULT_BUSY_TIMEOUT = 5.0  # seconds a SQLite connection waits for another's write lock

# Execution option marking the engine view used for reads (see _configure_sqlite).
_READ_ONLY = "callbridge_read_only"
_MEMORY_URL = "sqlite+aiosqlite:///:memory:"


def _is_memory(database: str | None) -> bool:
    return not database or database == ":memory:"


def normalize_database_url(url_or_path: str) -> str:
    """Turn a database URL or a plain file path into the URL the async engine needs.

    A path (``data/callbridge.db``, ``~/cb.db``, ``:memory:``) becomes a ``sqlite+aiosqlite``
    URL; ``sqlite://`` URLs get the aiosqlite driver. For SQLite files the parent directory
    is created, so a fresh install can point at a path that does not exist yet. Any other URL
    (``postgresql+asyncpg://...``) is returned unchanged. ValueError for an empty or
    unparsable value.
    """
    text = url_or_path.strip()
    if not text:
        raise ValueError("the database URL is empty")
    if "://" not in text:
        if text == ":memory:":
            return _MEMORY_URL
        path = Path(text).expanduser().absolute()
        path.parent.mkdir(parents=True, exist_ok=True)
        return URL.create("sqlite+aiosqlite", database=str(path)).render_as_string(
            hide_password=False
        )
    try:
        url = make_url(text)
    except ArgumentError as exc:
        raise ValueError(f"cannot parse the database URL: {exc}") from exc
    if url.get_backend_name() != "sqlite":
        return text
    database = url.database
    if _is_memory(database) and not url.query:
        # Spelled out: rendering would percent-escape the colons.
        return _MEMORY_URL
    if database is not None and not _is_memory(database) and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    # Rendering escapes '?' and '#' in the path, so the result parses back to the same file.
    return url.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)


def _configure_sqlite(engine: AsyncEngine, *, wal: bool, busy_timeout: float) -> None:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The sqlite3 module would emit BEGIN itself, but only before DML: reads would not
        # share a snapshot and migrations' DDL would autocommit. on_begin takes over instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")  # per connection, off by default
            cursor.execute(f"PRAGMA busy_timeout={round(busy_timeout * 1000)}")
            if wal:
                # Readers no longer block the writer nor it them; stored in the file.
                cursor.execute("PRAGMA journal_mode=WAL")
                # Every input commits (engine/store/live.py): in WAL mode NORMAL syncs at
                # checkpoints, not at each commit, and a commit still survives the process
                # being killed (only a power loss can take the last ones back).
                cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    def on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(_READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            # Writers take the write lock up front. A deferred transaction that reads and
            # then writes can fail at once with "database is locked" (busy_timeout does not
            # cover a lock upgrade), and IMMEDIATE also makes each write's checks (does the
            # slug exist? is the config in use?) atomic with the write itself.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine.sync_engine, "connect", on_connect)
    event.listen(engine.sync_engine, "begin", on_begin)


def open_engine(url: str, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> AsyncEngine:
    """An async engine for ``url`` (normalised first). The one place with dialect specifics."""
    parsed = make_url(normalize_database_url(url))
    try:
        if parsed.get_backend_name() != "sqlite":
            return create_async_engine(parsed)
        memory = _is_memory(parsed.database)
        if memory:
            # One connection for everything: each new connection to ":memory:" would be a
            # new, empty database.
            engine = create_async_engine(parsed, poolclass=StaticPool)
        else:
            engine = create_async_engine(parsed)
    except SQLAlchemyError as exc:  # unknown dialect, no async driver, ...
        shown = parsed.render_as_string(hide_password=True)
        raise ValueError(f"cannot use database URL {shown}: {exc}") from exc
    _configure_sqlite(engine, wal=not memory, busy_timeout=busy_timeout)
    return engine


# What a database failure can surface as: SQLAlchemy's wrappers, or the OSError of a network
# driver that could not reach its server.
_DATABASE_FAILURES = (SQLAlchemyError, OSError)


def _storage_error(exc: Exception) -> StorageError:
    # The driver's own message only: SQLAlchemy's rendering appends the statement and its
    # parameters, which include token digests and secret ciphertexts.
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        reason = str(exc.orig)
    elif isinstance(exc, OSError):
        reason = str(exc)
    else:
        reason = type(exc).__name__
    if _unreachable(exc):
        return StoreUnreachable(f"the database cannot be reached: {reason}")
    return StorageError(f"database failure: {reason}")


def _unreachable(exc: Exception) -> bool:
    """A failure to reach the database rather than of a statement: the connection could not be
    made or was lost (SQLAlchemy marks a lost one ``connection_invalidated`` and drops the pool's
    connections, so the next request connects again)."""
    if isinstance(exc, OSError):
        return True
    return isinstance(exc, DBAPIError) and (
        exc.connection_invalidated or isinstance(exc.orig, OSError)
    )
