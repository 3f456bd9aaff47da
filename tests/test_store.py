"""SqlStore against real SQLite files: every method, its errors, tenancy, restarts, migrations."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.engine import make_url

from engine.errors import Conflict, NotFound, StorageError
from engine.store.base import BridgeRecord, OrganizationRecord, ProviderConfigRecord, Store
from engine.store.connect import normalize_database_url, open_engine
from engine.store.migrate import migrate
from engine.store.migrations import MIGRATIONS, Migration
from engine.store.schema import metadata
from engine.store.sql import SqlStore
from tests.postgres import both_databases, database_url

A_NUMBER = "+14155550100"
B_NUMBER = "+14155550101"


def token(n: int) -> str:
    return f"{n:064x}"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "callbridge.db"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Every test of the store runs on both databases but those reading the SQLite file itself.
    both_databases(metafunc, sqlite_only=("db_path",))


@pytest.fixture
async def store(database_kind: str, tmp_path: Path) -> AsyncIterator[SqlStore]:
    async with database_url(database_kind, str(tmp_path / "callbridge.db")) as url:
        s = SqlStore(url)
        await s.start()
        yield s
        await s.close()


async def make_org(store: SqlStore, handle: str, n: int) -> OrganizationRecord:
    return await store.create_organization(handle, handle.title(), token(n))


async def make_config(
    store: SqlStore, org_id: int, sid: str = "AC0001", provider: str = "twilio"
) -> ProviderConfigRecord:
    return await store.create_provider_config(
        org_id,
        provider=provider,
        name=f"{provider} {sid}",
        account_sid=sid,
        auth_token_ciphertext=f"cipher-{sid}",
        public_key="pk" if provider == "telnyx" else None,
        api_base_url=None,
    )


async def make_bridge(
    store: SqlStore, org_id: int, slug: str, status: str = "ACTIVE"
) -> BridgeRecord:
    return await store.create_bridge(
        org_id,
        slug=slug,
        name=slug.title(),
        description="",
        status=status,
        region="US",
        webhook_url=None,
    )


def rows(db_path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Read the file with the stdlib driver: what is really on disk, not what the store says."""
    with sqlite3.connect(db_path) as conn:
        return conn.execute(sql).fetchall()


# --- URLs and construction -------------------------------------------------------------------


def test_normalize_turns_a_path_into_a_sqlite_url_and_makes_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "cb.db"
    url = normalize_database_url(str(path))
    assert url == f"sqlite+aiosqlite:///{path}"
    assert path.parent.is_dir()
    # Characters that mean something in a URL survive the round trip to the same file.
    odd = tmp_path / "a dir#1" / "cb?.db"
    assert make_url(normalize_database_url(str(odd))).database == str(odd)


def test_normalize_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert normalize_database_url("sqlite:///rel/cb.db") == "sqlite+aiosqlite:///rel/cb.db"
    assert (tmp_path / "rel").is_dir()
    assert normalize_database_url(f"sqlite+aiosqlite:///{tmp_path}/a.db") == (
        f"sqlite+aiosqlite:///{tmp_path}/a.db"
    )
    assert normalize_database_url("sqlite:///:memory:") == "sqlite+aiosqlite:///:memory:"
    assert normalize_database_url(":memory:") == "sqlite+aiosqlite:///:memory:"
    pg = "postgresql+asyncpg://cb:secret@db.internal/cb"
    assert normalize_database_url(pg) == pg
    with pytest.raises(ValueError, match="empty"):
        normalize_database_url("  ")


def test_unusable_url_is_a_value_error_without_the_password() -> None:
    with pytest.raises(ValueError, match="cannot use database URL") as info:
        SqlStore("nosuchdb://user:hunter2@host/db")
    assert "hunter2" not in str(info.value)


async def test_sql_store_is_a_store(db_path: Path) -> None:
    # The assignment is the check (mypy); the call proves the object works through the type.
    store: Store = SqlStore(str(db_path))
    await store.start()
    assert await store.organization_by_handle("nobody") is None
    await store.close()


# --- schema, migrations, SQLite settings -------------------------------------------------


async def test_start_records_the_schema_version_once(db_path: Path) -> None:
    first = SqlStore(str(db_path))
    await first.start()
    await first.start()
    await first.close()
    second = SqlStore(f"sqlite:///{db_path}")
    await second.start()
    await second.close()
    versions = rows(db_path, "SELECT version, description FROM schema_version")
    assert versions == [(m.version, m.description) for m in MIGRATIONS]


async def test_migrated_database_matches_the_schema_module(store: SqlStore, db_path: Path) -> None:
    inspector = sa.inspect(sa.create_engine(f"sqlite:///{db_path}"))
    assert set(inspector.get_table_names()) == set(metadata.tables)
    for table in metadata.tables.values():
        on_disk = {c["name"]: c["nullable"] for c in inspector.get_columns(table.name)}
        declared = {c.name: c.nullable for c in table.columns}
        assert on_disk == declared, table.name
        disk_unique = {
            tuple(u["column_names"]) for u in inspector.get_unique_constraints(table.name)
        }
        declared_unique = {
            tuple(c.name for c in constraint.columns)
            for constraint in table.constraints
            if isinstance(constraint, sa.UniqueConstraint)
        }
        assert disk_unique == declared_unique, table.name
        disk_fks = {
            (tuple(fk["constrained_columns"]), fk["referred_table"])
            for fk in inspector.get_foreign_keys(table.name)
        }
        declared_fks = {((fk.parent.name,), fk.column.table.name) for fk in table.foreign_keys}
        assert disk_fks == declared_fks, table.name
        disk_indexes = {i["name"] for i in inspector.get_indexes(table.name)}
        assert disk_indexes == {i.name for i in table.indexes}, table.name


async def test_later_migrations_apply_once_each_in_their_own_transaction(db_path: Path) -> None:
    applied: list[int] = []
    later = len(MIGRATIONS) + 1  # the versions of this test's own migrations follow the real ones

    def add_column(conn: Connection) -> None:
        applied.append(2)
        conn.execute(sa.text("ALTER TABLE bridges ADD COLUMN note VARCHAR(64)"))

    def broken(conn: Connection) -> None:
        conn.execute(sa.text("CREATE TABLE half_done (id INTEGER PRIMARY KEY)"))
        raise RuntimeError("migration 3 failed")

    engine = open_engine(str(db_path))
    try:
        two = (*MIGRATIONS, Migration(later, "bridge notes", add_column))
        assert await migrate(engine, two) == later
        assert await migrate(engine, two) == later
        assert applied == [2]
        with pytest.raises(RuntimeError, match="migration 3"):
            await migrate(engine, (*two, Migration(later + 1, "broken", broken)))
        with pytest.raises(ValueError, match="in order"):
            await migrate(engine, (*MIGRATIONS, Migration(later + 1, "gap", add_column)))
    finally:
        await engine.dispose()

    versions = [r[0] for r in rows(db_path, "SELECT version FROM schema_version")]
    assert versions == list(range(1, later + 1))
    assert "note" in {r[1] for r in rows(db_path, "PRAGMA table_info(bridges)")}
    # The failed migration's DDL was rolled back with it.
    assert rows(db_path, "SELECT name FROM sqlite_master WHERE name = 'half_done'") == []

    # This code does not know the test's migration: it must refuse a database from a newer
    # callbridge.
    newer = SqlStore(str(db_path))
    with pytest.raises(StorageError, match="newer"):
        await newer.start()
    await newer.close()


async def test_tables_not_made_by_migrations_are_not_adopted(db_path: Path) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE organizations (id INTEGER PRIMARY KEY)")
    s = SqlStore(str(db_path))
    with pytest.raises(StorageError, match="already exists"):
        await s.start()
    await s.close()
    assert rows(db_path, "SELECT count(*) FROM schema_version") == [(0,)]


async def test_sqlite_connections_enforce_foreign_keys_and_use_wal(
    store: SqlStore, db_path: Path
) -> None:
    engine = open_engine(str(db_path), busy_timeout=1.5)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(sa.text("PRAGMA foreign_keys")) == 1
            assert await conn.scalar(sa.text("PRAGMA busy_timeout")) == 1500
            with pytest.raises(sa.exc.IntegrityError):
                await conn.execute(
                    sa.text(
                        "INSERT INTO api_tokens (org_id, token_sha256, created) "
                        "VALUES (999, 'x', '2024-01-01 00:00:00')"
                    )
                )
    finally:
        await engine.dispose()
    assert rows(db_path, "PRAGMA journal_mode") == [("wal",)]


async def test_reads_pass_a_held_write_lock_and_writes_time_out_as_storage_error(
    db_path: Path,
) -> None:
    s = SqlStore(str(db_path), busy_timeout=0.3)
    await s.start()
    org = await make_org(s, "acme", 1)
    blocker = sqlite3.connect(db_path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        # WAL and a deferred read transaction: readers do not wait for the writer.
        assert await s.organization_by_handle("acme") == org
        started = time.monotonic()
        with pytest.raises(StorageError, match="locked") as info:
            await make_bridge(s, org.id, "b-1")
        assert time.monotonic() - started >= 0.25  # it waited for the busy timeout
        assert "[SQL" not in info.value.detail
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert (await make_bridge(s, org.id, "b-1")).slug == "b-1"
    await s.close()


async def test_database_failures_become_storage_errors(store: SqlStore, db_path: Path) -> None:
    org = await make_org(store, "acme", 1)
    with sqlite3.connect(db_path) as conn:
        conn.execute("DROP TABLE webhook_outbox")
    with pytest.raises(StorageError, match="no such table") as info:
        await store.due_webhooks(0.0, 10)
    assert not isinstance(info.value, sa.exc.SQLAlchemyError)
    with pytest.raises(StorageError):
        await store.enqueue_webhook(
            org_id=org.id, leg_id="l", url="http://x", body="{}", headers={}, now=1.0
        )


async def test_a_file_that_is_not_a_database_fails_start_with_storage_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a sqlite database, just some bytes" * 100)
    s = SqlStore(str(path))
    with pytest.raises(StorageError, match="not a database"):
        await s.start()
    await s.close()


# --- organizations and tokens --------------------------------------------------------------


async def test_organizations_and_tokens(store: SqlStore) -> None:
    org = await store.create_organization("acme", "Acme Inc", token(1))
    assert (org.domain_handle, org.name) == ("acme", "Acme Inc")
    assert org.created.utcoffset() == timedelta(0)
    assert org.created == org.modified
    assert await store.organization_by_handle("acme") == org
    assert await store.organization_for_token(token(1)) == org
    assert await store.organization_for_token(token(2)) is None
    assert await store.organization_by_handle("other") is None

    await store.add_token(org.id, token(2))
    assert await store.organization_for_token(token(2)) == org


async def test_organization_conflicts_and_missing(store: SqlStore) -> None:
    org = await make_org(store, "acme", 1)
    with pytest.raises(Conflict, match="handle 'acme' already exists"):
        await store.create_organization("acme", "Again", token(2))
    with pytest.raises(Conflict, match="token is already in use"):
        await store.create_organization("globex", "Globex", token(1))
    # The failed create left nothing behind.
    assert await store.organization_by_handle("globex") is None
    with pytest.raises(Conflict, match="token is already in use"):
        await store.add_token(org.id, token(1))
    with pytest.raises(NotFound, match="organization 999"):
        await store.add_token(999, token(3))
    assert await store.organization_for_token(token(3)) is None


# --- provider configurations ---------------------------------------------------------------


async def test_provider_config_create_get_and_conflict(store: SqlStore) -> None:
    acme = await make_org(store, "acme", 1)
    globex = await make_org(store, "globex", 2)
    config = await store.create_provider_config(
        acme.id,
        provider="telnyx",
        name="Main",
        account_sid="KEY01",
        auth_token_ciphertext="ciphertext",
        public_key="pubkey",
        api_base_url="http://sim.local",
    )
    assert config.org_id == acme.id
    assert (config.provider, config.name, config.account_sid) == ("telnyx", "Main", "KEY01")
    assert (config.public_key, config.api_base_url, config.active) == (
        "pubkey",
        "http://sim.local",
        True,
    )
    assert config.created_at.utcoffset() == timedelta(0)
    assert await store.get_provider_config(acme.id, config.id) == config

    await make_config(store, acme.id, "AC0001")
    with pytest.raises(Conflict, match="a twilio configuration for account AC0001 already exists"):
        await make_config(store, acme.id, "AC0001")
    # The same account under another provider or another organization is a different row.
    await make_config(store, acme.id, "AC0001", provider="telnyx")
    await make_config(store, globex.id, "AC0001")
    with pytest.raises(NotFound, match="organization 999"):
        await make_config(store, 999)


async def test_provider_configs_are_tenant_scoped(store: SqlStore) -> None:
    acme = await make_org(store, "acme", 1)
    globex = await make_org(store, "globex", 2)
    config = await make_config(store, acme.id)
    assert await store.get_provider_config(globex.id, config.id) is None
    assert await store.list_provider_configs(globex.id, offset=0, limit=10) == ([], 0)
    with pytest.raises(NotFound):
        await store.update_provider_config(globex.id, config.id, {"name": "stolen"})
    with pytest.raises(NotFound):
        await store.delete_provider_config(globex.id, config.id)
    assert await store.get_provider_config(acme.id, config.id) == config


async def test_provider_configs_paginate_by_id_with_total(store: SqlStore) -> None:
    acme = await make_org(store, "acme", 1)
    globex = await make_org(store, "globex", 2)
    made = [await make_config(store, acme.id, f"AC{i:04d}") for i in range(5)]
    await make_config(store, globex.id, "AC9999")
    page, total = await store.list_provider_configs(acme.id, offset=1, limit=2)
    assert total == 5
    assert page == made[1:3]
    page, total = await store.list_provider_configs(acme.id, offset=4, limit=10)
    assert (page, total) == (made[4:], 5)
    assert await store.list_provider_configs(acme.id, offset=10, limit=10) == ([], 5)
    with pytest.raises(ValueError, match="negative"):
        await store.list_provider_configs(acme.id, offset=-1, limit=10)


async def test_update_provider_config(store: SqlStore) -> None:
    acme = await make_org(store, "acme", 1)
    config = await make_config(store, acme.id, "AC0001")
    other = await make_config(store, acme.id, "AC0002")
    updated = await store.update_provider_config(
        acme.id,
        config.id,
        {"name": "Renamed", "auth_token_ciphertext": "rotated", "active": False},
    )
    assert (updated.name, updated.auth_token_ciphertext, updated.active) == (
        "Renamed",
        "rotated",
        False,
    )
    assert updated.created_at == config.created_at
    assert updated.modified > config.modified
    assert await store.get_provider_config(acme.id, config.id) == updated
    assert await store.update_provider_config(acme.id, config.id, {}) == updated

    with pytest.raises(Conflict, match="account AC0002 already exists"):
        await store.update_provider_config(acme.id, config.id, {"account_sid": "AC0002"})
    assert await store.get_provider_config(acme.id, other.id) == other
    with pytest.raises(ValueError, match="has no field"):
        await store.update_provider_config(acme.id, config.id, {"auth_token": "plain"})
    for fixed in ("id", "org_id", "created_at", "modified"):
        with pytest.raises(ValueError, match="cannot be updated"):
            await store.update_provider_config(acme.id, config.id, {fixed: 1})
    with pytest.raises(NotFound):
        await store.update_provider_config(acme.id, 999, {"name": "x"})


async def test_delete_provider_config_refuses_while_in_use(store: SqlStore) -> None:
    acme = await make_org(store, "acme", 1)
    first = await make_config(store, acme.id, "AC0001")
    second = await make_config(store, acme.id, "AC0002")
    await make_bridge(store, acme.id, "sales")
    await store.connect_number(acme.id, "sales", provider_config_id=first.id, number=A_NUMBER)

    with pytest.raises(Conflict, match=f"configuration {first.id} is connected to bridge sales"):
        await store.delete_provider_config(acme.id, first.id)
    # The bridge moves to the second configuration; the number is still assigned via the first.
    await store.set_bridge_provider(acme.id, "sales", second.id)
    with pytest.raises(Conflict, match=re.escape(f"has number {A_NUMBER} assigned")):
        await store.delete_provider_config(acme.id, first.id)
    assert await store.get_provider_config(acme.id, first.id) == first

    await store.disconnect_number(acme.id, "sales", A_NUMBER)
    await store.delete_provider_config(acme.id, first.id)
    assert await store.get_provider_config(acme.id, first.id) is None
    with pytest.raises(NotFound):
        await store.delete_provider_config(acme.id, first.id)


# --- bridges -------------------------------------------------------------------------------


async def test_create_and_get_bridge(store: SqlStore) -> None:
    acme = await make_org(store, "acme", 1)
    bridge = await store.create_bridge(
        acme.id,
        slug="support-abc123",
        name="Support Bridge",
        description="Bridge for customer support",
        status="DRAFT",
        region="IN",
        webhook_url="https://app.example/hooks",
    )
    assert (bridge.org_id, bridge.slug, bridge.name, bridge.status) == (
        acme.id,
        "support-abc123",
        "Support Bridge",
        "DRAFT",
    )
    assert (bridge.documents_status, bridge.hub, bridge.region) == ("pending", 1, "IN")
    assert bridge.webhook_url == "https://app.example/hooks"
    assert (bridge.provider_config_id, bridge.numbers) == (None, ())
    assert bridge.created.utcoffset() == timedelta(0)
    assert await store.get_bridge(acme.id, "support-abc123") == bridge
    assert await store.get_bridge(acme.id, "nope") is None


async def test_bridge_slugs_are_unique_across_organizations(store: SqlStore) -> None:
    acme = await make_org(store, "acme", 1)
    globex = await make_org(store, "globex", 2)
    await make_bridge(store, acme.id, "sales")
    with pytest.raises(Conflict, match="slug 'sales' already exists"):
        await make_bridge(store, acme.id, "sales")
    with pytest.raises(Conflict, match="slug 'sales' already exists"):
        await make_bridge(store, globex.id, "sales")
    with pytest.raises(NotFound, match="organization 999"):
        await make_bridge(store, 999, "orphan")


async def test_list_bridges_filters_paginates_and_counts(store: SqlStore) -> None:
    acme = await make_org(store, "acme", 1)
    globex = await make_org(store, "globex", 2)
    statuses = ["ACTIVE", "DRAFT", "ACTIVE", "INACTIVE", "ACTIVE"]
    made = [await make_bridge(store, acme.id, f"b{i}", s) for i, s in enumerate(statuses)]
    await make_bridge(store, globex.id, "theirs")

    page, total = await store.list_bridges(acme.id, status=None, offset=0, limit=2)
    assert (page, total) == (made[:2], 5)
    page, total = await store.list_bridges(acme.id, status="ACTIVE", offset=1, limit=5)
    assert ([b.slug for b in page], total) == (["b2", "b4"], 3)
    assert await store.list_bridges(acme.id, status="DELETED", offset=0, limit=5) == ([], 0)
    page, total = await store.list_bridges(globex.id, status=None, offset=0, limit=10)
    assert ([b.slug for b in page], total) == (["theirs"], 1)


async def test_listed_bridges_carry_their_numbers(store: SqlStore) -> None:
    acme = await make_org(store, "acme", 1)
    config = await make_config(store, acme.id)
    await make_bridge(store, acme.id, "one")
    await make_bridge(store, acme.id, "two")
    await store.connect_number(acme.id, "two", provider_config_id=config.id, number=A_NUMBER)
    await store.connect_number(acme.id, "two", provider_config_id=config.id, number=B_NUMBER)
    page, _ = await store.list_bridges(acme.id, status=None, offset=0, limit=10)
    assert [[n.number for n in b.numbers] for b in page] == [[], [A_NUMBER, B_NUMBER]]


async def test_bridges_are_tenant_scoped(store: SqlStore) -> None:
    acme = await make_org(store, "acme", 1)
    globex = await make_org(store, "globex", 2)
    bridge = await make_bridge(store, acme.id, "sales")
    assert await store.get_bridge(globex.id, "sales") is None
    with pytest.raises(NotFound, match="bridge sales not found"):
        await store.update_bridge(globex.id, "sales", {"name": "stolen"})
    with pytest.raises(NotFound):
        await store.delete_bridge(globex.id, "sales")
    assert await store.get_bridge(acme.id, "sales") == bridge


async def test_update_bridge(store: SqlStore) -> None:
    acme = await make_org(store, "acme", 1)
    bridge = await make_bridge(store, acme.id, "sales")
    await make_bridge(store, acme.id, "support")
    updated = await store.update_bridge(
        acme.id,
        "sales",
        {"name": "Sales Updated", "status": "INACTIVE", "webhook_url": "https://x/h"},
    )
    assert (updated.name, updated.status, updated.webhook_url) == (
        "Sales Updated",
        "INACTIVE",
        "https://x/h",
    )
    assert (updated.id, updated.created) == (bridge.id, bridge.created)
    assert updated.modified > bridge.modified
    assert await store.get_bridge(acme.id, "sales") == updated
    assert await store.update_bridge(acme.id, "sales", {}) == updated

    renamed = await store.update_bridge(acme.id, "sales", {"slug": "sales-2"})
    assert renamed.id == bridge.id
    assert await store.get_bridge(acme.id, "sales") is None
    with pytest.raises(Conflict, match="slug 'support' already exists"):
        await store.update_bridge(acme.id, "sales-2", {"slug": "support"})
    with pytest.raises(ValueError, match="has no field"):
        await store.update_bridge(acme.id, "sales-2", {"colour": "red"})
    for fixed in ("id", "org_id", "provider_config_id", "numbers", "created", "modified"):
        with pytest.raises(ValueError, match="cannot be updated"):
            await store.update_bridge(acme.id, "sales-2", {fixed: None})
    with pytest.raises(NotFound):
        await store.update_bridge(acme.id, "sales", {"name": "gone"})


async def test_delete_bridge_releases_its_numbers(store: SqlStore, db_path: Path) -> None:
    acme = await make_org(store, "acme", 1)
    config = await make_config(store, acme.id)
    await make_bridge(store, acme.id, "sales")
    await make_bridge(store, acme.id, "support")
    await store.connect_number(acme.id, "sales", provider_config_id=config.id, number=A_NUMBER)
    await store.connect_number(acme.id, "sales", provider_config_id=config.id, number=B_NUMBER)
    await store.connect_number(
        acme.id, "support", provider_config_id=config.id, number="+442071838750"
    )

    await store.delete_bridge(acme.id, "sales")
    assert await store.get_bridge(acme.id, "sales") is None
    assert await store.route_for_number(A_NUMBER) is None
    assert rows(db_path, "SELECT number FROM phone_numbers") == [("+442071838750",)]
    assert rows(db_path, "SELECT count(*) FROM number_assignments") == [(1,)]
    # The released number is free for another bridge.
    support = await store.connect_number(
        acme.id, "support", provider_config_id=config.id, number=A_NUMBER
    )
    assert [n.number for n in support.numbers] == ["+442071838750", A_NUMBER]
    with pytest.raises(NotFound):
        await store.delete_bridge(acme.id, "sales")


# --- numbers -------------------------------------------------------------------------------


async def test_connect_number(store: SqlStore) -> None:
    acme = await make_org(store, "acme", 1)
    config = await make_config(store, acme.id)
    before = await make_bridge(store, acme.id, "sales")
    bridge = await store.connect_number(
        acme.id, "sales", provider_config_id=config.id, number=A_NUMBER
    )
    assert bridge.provider_config_id == config.id
    assert bridge.modified > before.modified
    (number,) = bridge.numbers
    assert (number.number, number.bridge_id, number.provider_config_id) == (
        A_NUMBER,
        bridge.id,
        config.id,
    )
    assert (number.state, number.active, number.channels_count, number.status) == (
        "ASSIGNED",
        True,
        100,
        "active",
    )
    assert number.created.utcoffset() == timedelta(0)
    assert await store.get_bridge(acme.id, "sales") == bridge


async def test_connect_number_is_idempotent(store: SqlStore) -> None:
    acme = await make_org(store, "acme", 1)
    config = await make_config(store, acme.id)
    await make_bridge(store, acme.id, "sales")
    first = await store.connect_number(
        acme.id, "sales", provider_config_id=config.id, number=A_NUMBER
    )
    again = await store.connect_number(
        acme.id, "sales", provider_config_id=config.id, number=A_NUMBER
    )
    assert again == first  # same assignment and number ids, and modified untouched


async def test_connect_number_through_another_config_moves_it(store: SqlStore) -> None:
    acme = await make_org(store, "acme", 1)
    first = await make_config(store, acme.id, "AC0001")
    second = await make_config(store, acme.id, "AC0002")
    await make_bridge(store, acme.id, "sales")
    before = await store.connect_number(
        acme.id, "sales", provider_config_id=first.id, number=A_NUMBER
    )
    after = await store.connect_number(
        acme.id, "sales", provider_config_id=second.id, number=A_NUMBER
    )
    assert after.provider_config_id == second.id
    (number,) = after.numbers
    assert (number.id, number.number_id) == (before.numbers[0].id, before.numbers[0].number_id)
    assert number.provider_config_id == second.id


async def test_connect_number_conflicts_and_missing(store: SqlStore) -> None:
    acme = await make_org(store, "acme", 1)
    globex = await make_org(store, "globex", 2)
    acme_config = await make_config(store, acme.id)
    globex_config = await make_config(store, globex.id)
    await make_bridge(store, acme.id, "sales")
    await make_bridge(store, acme.id, "support")
    await make_bridge(store, globex.id, "theirs")
    await store.connect_number(acme.id, "sales", provider_config_id=acme_config.id, number=A_NUMBER)

    with pytest.raises(Conflict, match=r"\+14155550100 is already connected to another bridge"):
        await store.connect_number(
            acme.id, "support", provider_config_id=acme_config.id, number=A_NUMBER
        )
    with pytest.raises(Conflict, match="another bridge") as info:
        await store.connect_number(
            globex.id, "theirs", provider_config_id=globex_config.id, number=A_NUMBER
        )
    assert "sales" not in info.value.detail  # nothing about acme's bridge leaks to globex
    with pytest.raises(NotFound, match="bridge nope not found"):
        await store.connect_number(
            acme.id, "nope", provider_config_id=acme_config.id, number=B_NUMBER
        )
    with pytest.raises(NotFound, match=f"provider configuration {globex_config.id} not found"):
        await store.connect_number(
            acme.id, "support", provider_config_id=globex_config.id, number=B_NUMBER
        )
    with pytest.raises(NotFound):
        await store.connect_number(acme.id, "support", provider_config_id=999, number=B_NUMBER)

    support = await store.get_bridge(acme.id, "support")
    assert support is not None
    assert (support.numbers, support.provider_config_id) == ((), None)
    theirs = await store.get_bridge(globex.id, "theirs")
    assert theirs is not None
    assert theirs.numbers == ()


async def test_concurrent_connects_of_one_number_let_exactly_one_win(store: SqlStore) -> None:
    acme = await make_org(store, "acme", 1)
    config = await make_config(store, acme.id)
    slugs = [f"b{i}" for i in range(6)]
    for slug in slugs:
        await make_bridge(store, acme.id, slug)
    results = await asyncio.gather(
        *(
            store.connect_number(acme.id, slug, provider_config_id=config.id, number=A_NUMBER)
            for slug in slugs
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, BridgeRecord)]
    assert len(winners) == 1
    assert all(isinstance(r, Conflict) for r in results if r not in winners)
    route = await store.route_for_number(A_NUMBER)
    assert route is not None
    assert route.bridge.slug == winners[0].slug


async def test_set_bridge_provider(store: SqlStore) -> None:
    acme = await make_org(store, "acme", 1)
    globex = await make_org(store, "globex", 2)
    first = await make_config(store, acme.id, "AC0001")
    second = await make_config(store, acme.id, "AC0002")
    foreign = await make_config(store, globex.id, "AC0003")
    await make_bridge(store, acme.id, "sales")

    bridge = await store.set_bridge_provider(acme.id, "sales", first.id)
    assert (bridge.provider_config_id, bridge.numbers) == (first.id, ())
    with pytest.raises(NotFound, match="provider configuration"):
        await store.set_bridge_provider(acme.id, "sales", foreign.id)
    with pytest.raises(NotFound, match="bridge"):
        await store.set_bridge_provider(globex.id, "sales", foreign.id)

    await store.connect_number(acme.id, "sales", provider_config_id=second.id, number=A_NUMBER)
    await store.connect_number(acme.id, "sales", provider_config_id=first.id, number=B_NUMBER)
    # Connected now: `first`. Disconnecting releases B (through first) and keeps A (second).
    bridge = await store.set_bridge_provider(acme.id, "sales", None)
    assert bridge.provider_config_id is None
    assert [n.number for n in bridge.numbers] == [A_NUMBER]
    assert await store.route_for_number(B_NUMBER) is None
    # Disconnecting with nothing connected changes nothing about the numbers.
    again = await store.set_bridge_provider(acme.id, "sales", None)
    assert again.numbers == bridge.numbers


async def test_disconnect_number(store: SqlStore) -> None:
    acme = await make_org(store, "acme", 1)
    globex = await make_org(store, "globex", 2)
    config = await make_config(store, acme.id)
    await make_bridge(store, acme.id, "sales")
    await make_bridge(store, acme.id, "support")
    await store.connect_number(acme.id, "sales", provider_config_id=config.id, number=A_NUMBER)
    await store.connect_number(acme.id, "support", provider_config_id=config.id, number=B_NUMBER)

    with pytest.raises(NotFound, match=re.escape(f"{B_NUMBER} is not connected to bridge sales")):
        await store.disconnect_number(acme.id, "sales", B_NUMBER)
    with pytest.raises(NotFound, match="bridge sales not found"):
        await store.disconnect_number(globex.id, "sales", A_NUMBER)
    bridge = await store.disconnect_number(acme.id, "sales", A_NUMBER)
    assert bridge.numbers == ()
    assert bridge.provider_config_id == config.id  # the configuration stays connected
    assert await store.route_for_number(A_NUMBER) is None
    with pytest.raises(NotFound):
        await store.disconnect_number(acme.id, "sales", A_NUMBER)
    route = await store.route_for_number(B_NUMBER)
    assert route is not None
    assert route.bridge.slug == "support"


async def test_route_for_number(store: SqlStore) -> None:
    acme = await make_org(store, "acme", 1)
    through = await make_config(store, acme.id, "AC0001")
    connected = await make_config(store, acme.id, "AC0002")
    await make_bridge(store, acme.id, "sales")
    await store.connect_number(acme.id, "sales", provider_config_id=through.id, number=A_NUMBER)
    bridge = await store.set_bridge_provider(acme.id, "sales", connected.id)

    route = await store.route_for_number(A_NUMBER)
    assert route is not None
    assert route.bridge == bridge
    assert route.number == bridge.numbers[0]
    # The number's own configuration verifies its webhooks, whatever the bridge shows.
    assert route.provider_config == through
    assert await store.route_for_number(B_NUMBER) is None


# --- webhook outbox ------------------------------------------------------------------------


async def enqueue(store: SqlStore, leg: str, now: float, body: str = "{}") -> int:
    return await store.enqueue_webhook(
        org_id=1,
        leg_id=leg,
        url="https://app.example/hooks",
        body=body,
        headers={"Content-Type": "application/json", "telnyx-timestamp": "1"},
        now=now,
    )


async def test_outbox_queue_and_delivery(store: SqlStore) -> None:
    first = await enqueue(store, "leg-a", 100.0, '{"event_type": "call.initiated"}')
    second = await enqueue(store, "leg-b", 100.5)
    assert second > first

    assert await store.due_webhooks(99.0, 10) == []
    due = await store.due_webhooks(100.5, 10)
    assert [w.id for w in due] == [first, second]
    record = due[0]
    assert (record.org_id, record.leg_id, record.url) == (1, "leg-a", "https://app.example/hooks")
    assert record.body == '{"event_type": "call.initiated"}'
    assert dict(record.headers) == {"Content-Type": "application/json", "telnyx-timestamp": "1"}
    assert (record.attempt, record.next_attempt_at, record.created) == (0, 100.0, 100.0)
    assert (record.delivered_at, record.last_error) == (None, None)
    assert [w.id for w in await store.due_webhooks(200.0, 1)] == [first]

    await store.mark_webhook_delivered(first, 101.0)
    await store.mark_webhook_delivered(first, 105.0)  # the first delivery time stands
    assert [w.id for w in await store.due_webhooks(200.0, 10)] == [second]
    with pytest.raises(NotFound, match="webhook 999"):
        await store.mark_webhook_delivered(999, 1.0)
    with pytest.raises(NotFound, match="webhook 999"):
        await store.reschedule_webhook(999, attempt=1, next_attempt_at=1.0, error="x")
    with pytest.raises(ValueError, match="negative"):
        await store.due_webhooks(1.0, -1)


async def test_outbox_keeps_each_legs_order_through_retries(store: SqlStore) -> None:
    a1 = await enqueue(store, "leg-a", 10.0)
    a2 = await enqueue(store, "leg-a", 11.0)
    b1 = await enqueue(store, "leg-b", 12.0)

    # At most one per leg: a2 waits for a1.
    assert [w.id for w in await store.due_webhooks(20.0, 10)] == [a1, b1]

    await store.reschedule_webhook(a1, attempt=1, next_attempt_at=30.0, error="HTTP 503")
    await store.mark_webhook_delivered(b1, 20.0)
    # a1 is not due yet, and a2 (due since 11.0) must not overtake it.
    assert await store.due_webhooks(25.0, 10) == []
    (retry,) = await store.due_webhooks(30.0, 10)
    assert (retry.id, retry.attempt, retry.next_attempt_at, retry.last_error) == (
        a1,
        1,
        30.0,
        "HTTP 503",
    )
    await store.mark_webhook_delivered(a1, 31.0)
    assert [w.id for w in await store.due_webhooks(31.0, 10)] == [a2]

    # Giving up: never due again, and it no longer holds the leg's later webhooks back.
    a3 = await enqueue(store, "leg-a", 32.0)
    await store.reschedule_webhook(a2, attempt=5, next_attempt_at=None, error="gave up")
    assert [w.id for w in await store.due_webhooks(1e12, 10)] == [a3]


async def test_outbox_survives_a_restart(db_path: Path) -> None:
    s = SqlStore(str(db_path))
    await s.start()
    queued = await enqueue(s, "leg-a", 5.0, '{"n": 1}')
    await s.reschedule_webhook(queued, attempt=2, next_attempt_at=9.0, error="timeout")
    before = await s.due_webhooks(9.0, 10)
    await s.close()

    reopened = SqlStore(str(db_path))
    await reopened.start()
    assert await reopened.due_webhooks(9.0, 10) == before
    assert before[0].last_error == "timeout"
    await reopened.close()


# --- restarts, memory, concurrency ---------------------------------------------------------


async def test_everything_survives_close_and_reopen(db_path: Path) -> None:
    s = SqlStore(str(db_path))
    await s.start()
    acme = await make_org(s, "acme", 1)
    await s.add_token(acme.id, token(2))
    config = await make_config(s, acme.id)
    await make_bridge(s, acme.id, "sales")
    await make_bridge(s, acme.id, "draft", "DRAFT")
    await s.connect_number(acme.id, "sales", provider_config_id=config.id, number=A_NUMBER)
    bridges_before = await s.list_bridges(acme.id, status=None, offset=0, limit=10)
    configs_before = await s.list_provider_configs(acme.id, offset=0, limit=10)
    route_before = await s.route_for_number(A_NUMBER)
    await s.close()

    reopened = SqlStore(f"sqlite+aiosqlite:///{db_path}")
    await reopened.start()
    assert await reopened.organization_by_handle("acme") == acme
    assert await reopened.organization_for_token(token(1)) == acme
    assert await reopened.organization_for_token(token(2)) == acme
    assert await reopened.list_bridges(acme.id, status=None, offset=0, limit=10) == bridges_before
    assert await reopened.list_provider_configs(acme.id, offset=0, limit=10) == configs_before
    assert await reopened.route_for_number(A_NUMBER) == route_before
    # And it keeps enforcing the rules it enforced before the restart.
    with pytest.raises(Conflict):
        await make_org(reopened, "acme", 3)
    await reopened.close()


async def test_memory_database_serves_overlapping_operations() -> None:
    s = SqlStore("sqlite:///:memory:")
    await s.start()
    acme = await make_org(s, "acme", 1)
    made = await asyncio.gather(*(make_bridge(s, acme.id, f"b{i}") for i in range(20)))
    # Reads overlapping writes share the one connection too.
    await asyncio.gather(
        *(make_bridge(s, acme.id, f"c{i}") for i in range(10)),
        *(s.list_bridges(acme.id, status=None, offset=0, limit=1) for _ in range(10)),
    )
    page, total = await s.list_bridges(acme.id, status="ACTIVE", offset=0, limit=20)
    assert total == 30
    assert {b.slug for b in page} == {b.slug for b in made}
    await s.close()


async def test_file_database_serves_overlapping_writes(store: SqlStore) -> None:
    acme = await make_org(store, "acme", 1)
    await asyncio.gather(*(make_config(store, acme.id, f"AC{i:04d}") for i in range(15)))
    _, total = await store.list_provider_configs(acme.id, offset=0, limit=1)
    assert total == 15
