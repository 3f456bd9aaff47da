"""The store on SQLAlchemy Core (async): SQLite by default, PostgreSQL with the same queries.

Every query here is portable Core; everything that differs between databases (connection
pragmas, how a transaction begins, the pool for an in-memory database) lives in
``open_engine``. Each public method is one transaction, and every database exception is
translated into the ``engine.errors`` tree before it leaves this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Select,
    delete,
    event,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import URL, Connection, RowMapping, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from engine.errors import Conflict, NotFound, StorageError
from engine.store.base import (
    BridgeRecord,
    NumberRecord,
    OrganizationRecord,
    OutboxRecord,
    ProviderConfigRecord,
    Route,
)
from engine.store.migrations import migrate
from engine.store.schema import (
    api_tokens,
    bridges,
    number_assignments,
    organizations,
    phone_numbers,
    provider_configs,
    webhook_outbox,
)

if TYPE_CHECKING:
    from engine.store.base import Store

DEFAULT_BUSY_TIMEOUT = 5.0  # seconds a SQLite connection waits for another's write lock

# Execution option marking the engine view used for reads (see _configure_sqlite).
_READ_ONLY = "callbridge_read_only"

_CONFIG_UPDATABLE = frozenset(
    {
        "provider",
        "name",
        "account_sid",
        "auth_token_ciphertext",
        "public_key",
        "api_base_url",
        "active",
    }
)
_BRIDGE_UPDATABLE = frozenset(
    {"slug", "name", "description", "status", "documents_status", "hub", "region", "webhook_url"}
)


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
    return StorageError(f"database failure: {reason}")


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id(result: CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    if key is None:  # only for statements other than a single-row INSERT
        raise StorageError("the database returned no id for the new row")
    return int(key[0])


def _check_page(offset: int, limit: int) -> None:
    if offset < 0 or limit < 0:
        raise ValueError(f"offset and limit must not be negative (got {offset}, {limit})")


def _checked_changes(
    changes: Mapping[str, Any], record: type[Any], updatable: frozenset[str]
) -> dict[str, Any]:
    known = {field.name for field in dataclasses.fields(record)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"{record.__name__} has no field(s) {', '.join(unknown)}")
    fixed = sorted(set(changes) - updatable)
    if fixed:
        raise ValueError(f"{record.__name__} field(s) {', '.join(fixed)} cannot be updated")
    return dict(changes)


# --- rows to records -------------------------------------------------------------------------


def _organization(row: RowMapping) -> OrganizationRecord:
    return OrganizationRecord(
        id=row["id"],
        domain_handle=row["domain_handle"],
        name=row["name"],
        created=row["created"],
        modified=row["modified"],
    )


def _provider_config(row: RowMapping) -> ProviderConfigRecord:
    return ProviderConfigRecord(
        id=row["id"],
        org_id=row["org_id"],
        provider=row["provider"],
        name=row["name"],
        account_sid=row["account_sid"],
        auth_token_ciphertext=row["auth_token_ciphertext"],
        public_key=row["public_key"],
        api_base_url=row["api_base_url"],
        active=bool(row["active"]),
        created_at=row["created_at"],
        modified=row["modified"],
    )


def _number(row: RowMapping) -> NumberRecord:
    return NumberRecord(
        id=row["id"],
        number_id=row["number_id"],
        number=row["number"],
        bridge_id=row["bridge_id"],
        provider_config_id=row["provider_config_id"],
        state=row["state"],
        active=bool(row["active"]),
        channels_count=row["channels_count"],
        status=row["status"],
        created=row["created"],
    )


def _bridge(row: RowMapping, numbers: tuple[NumberRecord, ...]) -> BridgeRecord:
    return BridgeRecord(
        id=row["id"],
        org_id=row["org_id"],
        slug=row["slug"],
        name=row["name"],
        description=row["description"],
        status=row["status"],
        documents_status=row["documents_status"],
        hub=row["hub"],
        region=row["region"],
        webhook_url=row["webhook_url"],
        provider_config_id=row["provider_config_id"],
        numbers=numbers,
        created=row["created"],
        modified=row["modified"],
    )


def _outbox(row: RowMapping) -> OutboxRecord:
    return OutboxRecord(
        id=row["id"],
        org_id=row["org_id"],
        leg_id=row["leg_id"],
        url=row["url"],
        body=row["body"],
        headers=json.loads(row["headers"]),
        attempt=row["attempt"],
        next_attempt_at=row["next_attempt_at"],
        created=row["created"],
        delivered_at=row["delivered_at"],
        last_error=row["last_error"],
    )


def _numbers_query() -> Select[Any]:
    """Assignments joined with their phone numbers, as ``NumberRecord`` columns."""
    na, pn = number_assignments, phone_numbers
    return (
        select(
            na.c.id,
            pn.c.id.label("number_id"),
            pn.c.number,
            na.c.bridge_id,
            pn.c.provider_config_id,
            na.c.state,
            na.c.active,
            na.c.channels_count,
            na.c.status,
            na.c.created,
        )
        .select_from(na.join(pn, na.c.phone_number_id == pn.c.id))
        .order_by(na.c.id)
    )


# --- queries shared by several methods (each runs on the caller's connection) ----------------


async def _exists(conn: AsyncConnection, *criteria: ColumnElement[bool]) -> bool:
    return bool(await conn.scalar(select(exists().where(*criteria))))


async def _require_organization(conn: AsyncConnection, org_id: int) -> None:
    if not await _exists(conn, organizations.c.id == org_id):
        raise NotFound(f"organization {org_id} not found")


async def _organization_where(
    conn: AsyncConnection, *criteria: ColumnElement[bool]
) -> OrganizationRecord | None:
    query = select(organizations).where(*criteria)
    row = (await conn.execute(query)).mappings().first()
    return None if row is None else _organization(row)


async def _config_where(
    conn: AsyncConnection, *criteria: ColumnElement[bool]
) -> ProviderConfigRecord | None:
    row = (await conn.execute(select(provider_configs).where(*criteria))).mappings().first()
    return None if row is None else _provider_config(row)


async def _own_config(conn: AsyncConnection, org_id: int, config_id: int) -> ProviderConfigRecord:
    config = await _config_where(
        conn, provider_configs.c.org_id == org_id, provider_configs.c.id == config_id
    )
    if config is None:
        raise NotFound(f"provider configuration {config_id} not found", field="provider_config_id")
    return config


async def _bridges_where(conn: AsyncConnection, query: Select[Any]) -> list[BridgeRecord]:
    rows = (await conn.execute(query)).mappings().all()
    if not rows:
        return []
    by_bridge: dict[int, list[NumberRecord]] = {row["id"]: [] for row in rows}
    numbers = _numbers_query().where(number_assignments.c.bridge_id.in_(list(by_bridge)))
    for number_row in (await conn.execute(numbers)).mappings():
        by_bridge[number_row["bridge_id"]].append(_number(number_row))
    return [_bridge(row, tuple(by_bridge[row["id"]])) for row in rows]


async def _bridge_where(
    conn: AsyncConnection, *criteria: ColumnElement[bool]
) -> BridgeRecord | None:
    found = await _bridges_where(conn, select(bridges).where(*criteria))
    return found[0] if found else None


async def _own_bridge(conn: AsyncConnection, org_id: int, slug: str) -> BridgeRecord:
    bridge = await _bridge_where(conn, bridges.c.org_id == org_id, bridges.c.slug == slug)
    if bridge is None:
        raise NotFound(f"bridge {slug} not found")
    return bridge


async def _release_numbers(conn: AsyncConnection, *criteria: ColumnElement[bool]) -> None:
    """Delete the assignments matching ``criteria`` and their phone-number rows."""
    na = number_assignments
    query = (
        select(na.c.id, na.c.phone_number_id)
        .select_from(na.join(phone_numbers, na.c.phone_number_id == phone_numbers.c.id))
        .where(*criteria)
    )
    rows = (await conn.execute(query)).all()
    if not rows:
        return
    # Assignments first: they reference the phone numbers.
    await conn.execute(delete(na).where(na.c.id.in_([row.id for row in rows])))
    await conn.execute(
        delete(phone_numbers).where(phone_numbers.c.id.in_([row.phone_number_id for row in rows]))
    )


async def _touch_bridge(conn: AsyncConnection, bridge_id: int, **values: Any) -> None:
    await conn.execute(
        update(bridges).where(bridges.c.id == bridge_id).values(modified=_now(), **values)
    )


class SqlStore:
    """``Store`` on a SQLAlchemy async engine.

    ``url`` is a database URL or a SQLite file path (see ``normalize_database_url``);
    ``sqlite:///:memory:`` keeps everything in one connection and is meant for tests.
    ValueError for a URL SQLAlchemy cannot use. Nothing is opened before ``start()``.
    """

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

    # --- organizations and tokens ----------------------------------------------------------

    async def create_organization(
        self, domain_handle: str, name: str, token_sha256: str
    ) -> OrganizationRecord:
        taken = f"an organization with handle {domain_handle!r} already exists"
        async with self._write(
            f"organization {domain_handle!r} or its token already exists"
        ) as conn:
            if await _exists(conn, organizations.c.domain_handle == domain_handle):
                raise Conflict(taken, field="domain_handle")
            if await _exists(conn, api_tokens.c.token_sha256 == token_sha256):
                raise Conflict("this API token is already in use")
            now = _now()
            result = await conn.execute(
                insert(organizations).values(
                    domain_handle=domain_handle, name=name, created=now, modified=now
                )
            )
            org_id = _new_id(result)
            await conn.execute(
                insert(api_tokens).values(org_id=org_id, token_sha256=token_sha256, created=now)
            )
            return OrganizationRecord(
                id=org_id, domain_handle=domain_handle, name=name, created=now, modified=now
            )

    async def add_token(self, org_id: int, token_sha256: str) -> None:
        async with self._write("this API token is already in use") as conn:
            await _require_organization(conn, org_id)
            if await _exists(conn, api_tokens.c.token_sha256 == token_sha256):
                raise Conflict("this API token is already in use")
            await conn.execute(
                insert(api_tokens).values(org_id=org_id, token_sha256=token_sha256, created=_now())
            )

    async def organization_for_token(self, token_sha256: str) -> OrganizationRecord | None:
        async with self._read() as conn:
            return await _organization_where(
                conn,
                organizations.c.id.in_(
                    select(api_tokens.c.org_id).where(api_tokens.c.token_sha256 == token_sha256)
                ),
            )

    async def organization_by_handle(self, domain_handle: str) -> OrganizationRecord | None:
        async with self._read() as conn:
            return await _organization_where(conn, organizations.c.domain_handle == domain_handle)

    # --- provider configurations -----------------------------------------------------------

    async def create_provider_config(
        self,
        org_id: int,
        *,
        provider: str,
        name: str,
        account_sid: str,
        auth_token_ciphertext: str,
        public_key: str | None,
        api_base_url: str | None,
    ) -> ProviderConfigRecord:
        duplicate = f"a {provider} configuration for account {account_sid} already exists"
        pc = provider_configs
        async with self._write(duplicate) as conn:
            await _require_organization(conn, org_id)
            if await _exists(
                conn,
                pc.c.org_id == org_id,
                pc.c.provider == provider,
                pc.c.account_sid == account_sid,
            ):
                raise Conflict(duplicate, field="account_sid")
            now = _now()
            result = await conn.execute(
                insert(pc).values(
                    org_id=org_id,
                    provider=provider,
                    name=name,
                    account_sid=account_sid,
                    auth_token_ciphertext=auth_token_ciphertext,
                    public_key=public_key,
                    api_base_url=api_base_url,
                    active=True,
                    created_at=now,
                    modified=now,
                )
            )
            return await _own_config(conn, org_id, _new_id(result))

    async def list_provider_configs(
        self, org_id: int, *, offset: int, limit: int
    ) -> tuple[list[ProviderConfigRecord], int]:
        _check_page(offset, limit)
        pc = provider_configs
        async with self._read() as conn:
            total = await conn.scalar(
                select(func.count()).select_from(pc).where(pc.c.org_id == org_id)
            )
            query = (
                select(pc)
                .where(pc.c.org_id == org_id)
                .order_by(pc.c.id)
                .offset(offset)
                .limit(limit)
            )
            rows = (await conn.execute(query)).mappings().all()
            return [_provider_config(row) for row in rows], int(total or 0)

    async def get_provider_config(self, org_id: int, config_id: int) -> ProviderConfigRecord | None:
        async with self._read() as conn:
            return await _config_where(
                conn, provider_configs.c.org_id == org_id, provider_configs.c.id == config_id
            )

    async def update_provider_config(
        self, org_id: int, config_id: int, changes: Mapping[str, Any]
    ) -> ProviderConfigRecord:
        values = _checked_changes(changes, ProviderConfigRecord, _CONFIG_UPDATABLE)
        pc = provider_configs
        async with self._write(
            "another configuration of this organization has that provider and account_sid"
        ) as conn:
            current = await _own_config(conn, org_id, config_id)
            if not values:
                return current
            provider = values.get("provider", current.provider)
            account_sid = values.get("account_sid", current.account_sid)
            if await _exists(
                conn,
                pc.c.org_id == org_id,
                pc.c.provider == provider,
                pc.c.account_sid == account_sid,
                pc.c.id != config_id,
            ):
                raise Conflict(
                    f"a {provider} configuration for account {account_sid} already exists",
                    field="account_sid",
                )
            await conn.execute(
                update(pc).where(pc.c.id == config_id).values(**values, modified=_now())
            )
            return await _own_config(conn, org_id, config_id)

    async def delete_provider_config(self, org_id: int, config_id: int) -> None:
        async with self._write(f"provider configuration {config_id} is in use") as conn:
            await _own_config(conn, org_id, config_id)
            slug = await conn.scalar(
                select(bridges.c.slug)
                .where(bridges.c.provider_config_id == config_id)
                .order_by(bridges.c.id)
                .limit(1)
            )
            if slug is not None:
                raise Conflict(f"provider configuration {config_id} is connected to bridge {slug}")
            number = await conn.scalar(
                select(phone_numbers.c.number)
                .where(phone_numbers.c.provider_config_id == config_id)
                .order_by(phone_numbers.c.id)
                .limit(1)
            )
            if number is not None:
                raise Conflict(
                    f"provider configuration {config_id} has number {number} assigned through it"
                )
            await conn.execute(delete(provider_configs).where(provider_configs.c.id == config_id))

    # --- bridges ---------------------------------------------------------------------------

    async def create_bridge(
        self,
        org_id: int,
        *,
        slug: str,
        name: str,
        description: str,
        status: str,
        region: str,
        webhook_url: str | None,
    ) -> BridgeRecord:
        taken = f"a bridge with slug {slug!r} already exists"
        async with self._write(taken) as conn:
            await _require_organization(conn, org_id)
            if await _exists(conn, bridges.c.slug == slug):
                raise Conflict(taken, field="slug")
            now = _now()
            await conn.execute(
                insert(bridges).values(
                    org_id=org_id,
                    slug=slug,
                    name=name,
                    description=description,
                    status=status,
                    region=region,
                    webhook_url=webhook_url,
                    created=now,
                    modified=now,
                )
            )
            return await _own_bridge(conn, org_id, slug)

    async def list_bridges(
        self, org_id: int, *, status: str | None, offset: int, limit: int
    ) -> tuple[list[BridgeRecord], int]:
        _check_page(offset, limit)
        criteria = [bridges.c.org_id == org_id]
        if status is not None:
            criteria.append(bridges.c.status == status)
        async with self._read() as conn:
            total = await conn.scalar(select(func.count()).select_from(bridges).where(*criteria))
            page = await _bridges_where(
                conn,
                select(bridges).where(*criteria).order_by(bridges.c.id).offset(offset).limit(limit),
            )
            return page, int(total or 0)

    async def get_bridge(self, org_id: int, slug: str) -> BridgeRecord | None:
        async with self._read() as conn:
            return await _bridge_where(conn, bridges.c.org_id == org_id, bridges.c.slug == slug)

    async def update_bridge(
        self, org_id: int, slug: str, changes: Mapping[str, Any]
    ) -> BridgeRecord:
        values = _checked_changes(changes, BridgeRecord, _BRIDGE_UPDATABLE)
        new_slug = values.get("slug", slug)
        taken = f"a bridge with slug {new_slug!r} already exists"
        async with self._write(taken) as conn:
            current = await _own_bridge(conn, org_id, slug)
            if not values:
                return current
            if new_slug != slug and await _exists(conn, bridges.c.slug == new_slug):
                raise Conflict(taken, field="slug")
            await _touch_bridge(conn, current.id, **values)
            return await _own_bridge(conn, org_id, new_slug)

    async def delete_bridge(self, org_id: int, slug: str) -> None:
        async with self._write(f"bridge {slug} is in use") as conn:
            bridge = await _own_bridge(conn, org_id, slug)
            await _release_numbers(conn, number_assignments.c.bridge_id == bridge.id)
            await conn.execute(delete(bridges).where(bridges.c.id == bridge.id))

    # --- numbers ---------------------------------------------------------------------------

    async def connect_number(
        self, org_id: int, slug: str, *, provider_config_id: int, number: str
    ) -> BridgeRecord:
        elsewhere = f"{number} is already connected to another bridge"
        na, pn = number_assignments, phone_numbers
        async with self._write(elsewhere) as conn:
            bridge = await _own_bridge(conn, org_id, slug)
            await _own_config(conn, org_id, provider_config_id)
            held = (
                await conn.execute(
                    select(pn.c.id, pn.c.provider_config_id, na.c.bridge_id)
                    .select_from(pn.join(na, na.c.phone_number_id == pn.c.id))
                    .where(pn.c.number == number)
                )
            ).first()
            changed = False
            if held is None:
                now = _now()
                result = await conn.execute(
                    insert(pn).values(
                        number=number,
                        org_id=org_id,
                        provider_config_id=provider_config_id,
                        created=now,
                    )
                )
                await conn.execute(
                    insert(na).values(
                        phone_number_id=_new_id(result), bridge_id=bridge.id, created=now
                    )
                )
                changed = True
            elif held.bridge_id != bridge.id:
                # Same message whoever owns the other bridge: naming it would leak another
                # organization's data.
                raise Conflict(elsewhere, field="phone_number")
            elif held.provider_config_id != provider_config_id:
                await conn.execute(
                    update(pn)
                    .where(pn.c.id == held.id)
                    .values(provider_config_id=provider_config_id)
                )
                changed = True
            if bridge.provider_config_id != provider_config_id:
                await _touch_bridge(conn, bridge.id, provider_config_id=provider_config_id)
            elif changed:
                await _touch_bridge(conn, bridge.id)
            return await _own_bridge(conn, org_id, slug)

    async def set_bridge_provider(
        self, org_id: int, slug: str, provider_config_id: int | None
    ) -> BridgeRecord:
        async with self._write(f"bridge {slug} could not be updated") as conn:
            bridge = await _own_bridge(conn, org_id, slug)
            if provider_config_id is not None:
                await _own_config(conn, org_id, provider_config_id)
            elif bridge.provider_config_id is not None:
                await _release_numbers(
                    conn,
                    number_assignments.c.bridge_id == bridge.id,
                    phone_numbers.c.provider_config_id == bridge.provider_config_id,
                )
            await _touch_bridge(conn, bridge.id, provider_config_id=provider_config_id)
            return await _own_bridge(conn, org_id, slug)

    async def disconnect_number(self, org_id: int, slug: str, number: str) -> BridgeRecord:
        async with self._write(f"{number} could not be released") as conn:
            bridge = await _own_bridge(conn, org_id, slug)
            if not any(held.number == number for held in bridge.numbers):
                raise NotFound(f"{number} is not connected to bridge {slug}", field="phone_number")
            await _release_numbers(
                conn,
                number_assignments.c.bridge_id == bridge.id,
                phone_numbers.c.number == number,
            )
            await _touch_bridge(conn, bridge.id)
            return await _own_bridge(conn, org_id, slug)

    async def route_for_number(self, number: str) -> Route | None:
        na, pn = number_assignments, phone_numbers
        async with self._read() as conn:
            held = (
                await conn.execute(
                    select(na.c.bridge_id, pn.c.provider_config_id)
                    .select_from(pn.join(na, na.c.phone_number_id == pn.c.id))
                    .where(pn.c.number == number)
                )
            ).first()
            if held is None:
                return None
            bridge = await _bridge_where(conn, bridges.c.id == held.bridge_id)
            config = await _config_where(conn, provider_configs.c.id == held.provider_config_id)
            # Foreign keys keep both present; the checks only narrow the types.
            if bridge is None or config is None:
                return None
            assignment = next(n for n in bridge.numbers if n.number == number)
            return Route(bridge=bridge, number=assignment, provider_config=config)

    # --- webhook outbox --------------------------------------------------------------------

    async def enqueue_webhook(
        self,
        *,
        org_id: int,
        leg_id: str,
        url: str,
        body: str,
        headers: Mapping[str, str],
        now: float,
    ) -> int:
        async with self._write("the webhook could not be queued") as conn:
            result = await conn.execute(
                insert(webhook_outbox).values(
                    org_id=org_id,
                    leg_id=leg_id,
                    url=url,
                    body=body,
                    headers=json.dumps(dict(headers), sort_keys=True),
                    attempt=0,
                    next_attempt_at=now,
                    created=now,
                )
            )
            return _new_id(result)

    async def due_webhooks(self, now: float, limit: int) -> list[OutboxRecord]:
        _check_page(0, limit)
        wo = webhook_outbox
        earlier = wo.alias("earlier")
        query = (
            select(wo)
            .where(
                wo.c.delivered_at.is_(None),
                wo.c.next_attempt_at.is_not(None),
                wo.c.next_attempt_at <= now,
                ~exists().where(
                    earlier.c.leg_id == wo.c.leg_id,
                    earlier.c.id < wo.c.id,
                    earlier.c.delivered_at.is_(None),
                    earlier.c.next_attempt_at.is_not(None),
                ),
            )
            .order_by(wo.c.id)
            .limit(limit)
        )
        async with self._read() as conn:
            return [_outbox(row) for row in (await conn.execute(query)).mappings()]

    async def mark_webhook_delivered(self, webhook_id: int, now: float) -> None:
        wo = webhook_outbox
        async with self._write("the webhook could not be updated") as conn:
            if not await _exists(conn, wo.c.id == webhook_id):
                raise NotFound(f"webhook {webhook_id} not found")
            await conn.execute(
                update(wo)
                .where(wo.c.id == webhook_id, wo.c.delivered_at.is_(None))
                .values(delivered_at=now)
            )

    async def reschedule_webhook(
        self, webhook_id: int, *, attempt: int, next_attempt_at: float | None, error: str
    ) -> None:
        wo = webhook_outbox
        async with self._write("the webhook could not be updated") as conn:
            result = await conn.execute(
                update(wo)
                .where(wo.c.id == webhook_id)
                .values(attempt=attempt, next_attempt_at=next_attempt_at, last_error=error)
            )
            if result.rowcount == 0:
                raise NotFound(f"webhook {webhook_id} not found")


if TYPE_CHECKING:
    # Checked by `mypy --strict engine`: SqlStore must keep matching the Store protocol.
    def _conforms(url: str) -> Store:
        return SqlStore(url)
