"""Schema migrations: an ordered list of versions, each applied once, in its own transaction.

A migration is history. Version 1 below spells out the tables as they were at version 1
instead of reusing ``engine.store.schema``: when a later version adds a column to a table in
``schema``, a fresh database still runs version 1 first and the new version's ``ALTER TABLE``
after it, which could not work if version 1 already created the newest shape.

To change the schema: edit ``schema`` to the new shape, then append a ``Migration`` whose
``apply`` brings a version-(n-1) database to it (e.g. ``ALTER TABLE ... ADD COLUMN``, through
``Connection.execute``). The test that compares a migrated database with ``schema`` says when
the two disagree.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    select,
    true,
    update,
)
from sqlalchemy.schema import CreateColumn
from sqlalchemy.types import TypeEngine

from engine.store.schema import NAMING_CONVENTION, event_type_of


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]  # runs inside the migration's transaction


def _v1_initial_tables(conn: Connection) -> None:
    md = MetaData(naming_convention=NAMING_CONVENTION)
    # Frozen copies of the version-1 types (see the module docstring).
    ident = BigInteger().with_variant(Integer(), "sqlite")
    stamp = DateTime(timezone=True)
    Table(
        "organizations",
        md,
        Column("id", ident, primary_key=True, autoincrement=True),
        Column("domain_handle", String(255), nullable=False, unique=True),
        Column("name", String(255), nullable=False),
        Column("created", stamp, nullable=False),
        Column("modified", stamp, nullable=False),
    )
    Table(
        "api_tokens",
        md,
        Column("id", ident, primary_key=True, autoincrement=True),
        Column("org_id", ident, ForeignKey("organizations.id"), nullable=False, index=True),
        Column("token_sha256", String(64), nullable=False, unique=True),
        Column("created", stamp, nullable=False),
    )
    Table(
        "provider_configs",
        md,
        Column("id", ident, primary_key=True, autoincrement=True),
        Column("org_id", ident, ForeignKey("organizations.id"), nullable=False),
        Column("provider", String(32), nullable=False),
        Column("name", String(255), nullable=False),
        Column("account_sid", String(255), nullable=False),
        Column("auth_token_ciphertext", Text(), nullable=False),
        Column("public_key", Text(), nullable=True),
        Column("api_base_url", String(2048), nullable=True),
        Column("active", Boolean(), nullable=False, server_default=true()),
        Column("created_at", stamp, nullable=False),
        Column("modified", stamp, nullable=False),
        UniqueConstraint("org_id", "provider", "account_sid"),
    )
    Table(
        "bridges",
        md,
        Column("id", ident, primary_key=True, autoincrement=True),
        Column("org_id", ident, ForeignKey("organizations.id"), nullable=False, index=True),
        Column("slug", String(255), nullable=False, unique=True),
        Column("name", String(255), nullable=False),
        Column("description", Text(), nullable=False, server_default=""),
        Column("status", String(16), nullable=False),
        Column("documents_status", String(32), nullable=False, server_default="pending"),
        Column("hub", Integer(), nullable=False, server_default="1"),
        Column("region", String(16), nullable=False, server_default="US"),
        Column("webhook_url", String(2048), nullable=True),
        Column(
            "provider_config_id",
            ident,
            ForeignKey("provider_configs.id"),
            nullable=True,
            index=True,
        ),
        Column("created", stamp, nullable=False),
        Column("modified", stamp, nullable=False),
    )
    Table(
        "phone_numbers",
        md,
        Column("id", ident, primary_key=True, autoincrement=True),
        Column("number", String(32), nullable=False, unique=True),
        Column("org_id", ident, ForeignKey("organizations.id"), nullable=False),
        Column(
            "provider_config_id",
            ident,
            ForeignKey("provider_configs.id"),
            nullable=False,
            index=True,
        ),
        Column("created", stamp, nullable=False),
    )
    _number_assignments(md, ident, stamp, channels_default="1")
    Table(
        "webhook_outbox",
        md,
        Column("id", ident, primary_key=True, autoincrement=True),
        Column("org_id", ident, nullable=False),
        Column("leg_id", String(128), nullable=False),
        Column("url", String(2048), nullable=False),
        Column("body", Text(), nullable=False),
        Column("headers", Text(), nullable=False),
        Column("attempt", Integer(), nullable=False, server_default="0"),
        Column("next_attempt_at", Double(), nullable=True),
        Column("created", Double(), nullable=False),
        Column("delivered_at", Double(), nullable=True),
        Column("last_error", Text(), nullable=True),
        Index(None, "delivered_at", "next_attempt_at"),
        Index(None, "leg_id", "delivered_at"),
    )
    # checkfirst=False: tables that exist without a recorded version belong to something else,
    # and failing loudly beats adopting them.
    md.create_all(conn, checkfirst=False)


def _v2_retired_signing_keys(conn: Connection) -> None:
    md = MetaData(naming_convention=NAMING_CONVENTION)
    ident = BigInteger().with_variant(Integer(), "sqlite")
    Table("organizations", md, Column("id", ident, primary_key=True))  # for the foreign key
    Table(
        "retired_signing_keys",
        md,
        Column("id", ident, primary_key=True, autoincrement=True),
        Column("org_id", ident, ForeignKey("organizations.id"), nullable=False),
        Column("version", Integer(), nullable=False),
        Column("retired_at", Double(), nullable=False),
        UniqueConstraint("org_id", "version"),
    )
    md.tables["retired_signing_keys"].create(conn, checkfirst=False)


def _v3_recordings(conn: Connection) -> None:
    md = MetaData(naming_convention=NAMING_CONVENTION)
    ident = BigInteger().with_variant(Integer(), "sqlite")
    Table("organizations", md, Column("id", ident, primary_key=True))  # for the foreign key
    Table(
        "recordings",
        md,
        Column("id", ident, primary_key=True, autoincrement=True),
        Column("public_id", String(36), nullable=False, unique=True),
        Column("org_id", ident, ForeignKey("organizations.id"), nullable=False),
        Column("call_control_id", String(128), nullable=False),
        Column("call_leg_id", String(128), nullable=False),
        Column("call_session_id", String(128), nullable=False),
        Column("connection_id", String(255), nullable=False),
        Column("from_number", String(2048), nullable=False),
        Column("to_number", String(2048), nullable=False),
        Column("format", String(8), nullable=False),
        Column("channels", String(8), nullable=False),
        Column("started_at", Double(), nullable=False),
        Column("ended_at", Double(), nullable=False),
        Column("duration_ms", Integer(), nullable=False),
        Column("path", String(1024), nullable=False),
        Index(None, "org_id", "id"),
    )
    md.tables["recordings"].create(conn, checkfirst=False)


def _v4_org_limits(conn: Connection) -> None:
    md = MetaData(naming_convention=NAMING_CONVENTION)
    ident = BigInteger().with_variant(Integer(), "sqlite")
    Table("organizations", md, Column("id", ident, primary_key=True))  # for the foreign key
    Table(
        "org_limits",
        md,
        Column("org_id", ident, ForeignKey("organizations.id"), primary_key=True),
        Column("max_legs", Integer(), nullable=True),
        Column("api_rate", Double(), nullable=True),
        Column("api_burst", Integer(), nullable=True),
    )
    md.tables["org_limits"].create(conn, checkfirst=False)


def _v5_webhook_deliveries(conn: Connection) -> None:
    """Delivery state on each outbox row: a public id, the event type, an explicit status
    (pending | delivered | failed), the attempts made and when delivery started and finished."""
    md = MetaData(naming_convention=NAMING_CONVENTION)
    added: tuple[Column[Any], ...] = (
        Column("public_id", String(36), nullable=False, server_default=""),
        Column("event_type", String(128), nullable=False, server_default=""),
        Column("status", String(16), nullable=False, server_default="pending"),
        Column("attempts", Text(), nullable=False, server_default="[]"),
        Column("started_at", Double(), nullable=True),
        Column("finished_at", Double(), nullable=True),
    )
    outbox = Table(
        "webhook_outbox",
        md,
        Column("id", Integer(), primary_key=True),
        Column("body", Text()),
        Column("next_attempt_at", Double()),
        Column("created", Double()),
        Column("delivered_at", Double()),
        *added,
    )
    for column in added:
        # ADD COLUMN with a constant default is what both SQLite and PostgreSQL take.
        conn.exec_driver_sql(f"ALTER TABLE webhook_outbox ADD COLUMN {_column_ddl(conn, column)}")
    c = outbox.c
    conn.execute(
        update(outbox)
        .where(c.delivered_at.is_not(None))
        .values(status="delivered", finished_at=c.delivered_at)
    )
    # A row given up before version 5 has no record of when: its creation time stands in
    # (only the retention purge reads it).
    conn.execute(
        update(outbox)
        .where(c.delivered_at.is_(None), c.next_attempt_at.is_(None))
        .values(status="failed", finished_at=c.created)
    )
    rows = conn.execute(select(c.id, c.body)).all()
    if rows:
        conn.execute(
            update(outbox)
            .where(c.id == bindparam("row_id"))
            .values(public_id=bindparam("new_id"), event_type=bindparam("new_type")),
            [
                {"row_id": row.id, "new_id": str(uuid.uuid4()), "new_type": event_type_of(row.body)}
                for row in rows
            ],
        )
    for name, columns, unique in (
        ("ix_webhook_outbox_public_id", "public_id", True),
        ("ix_webhook_outbox_org_id_id", "org_id, id", False),
        ("ix_webhook_outbox_status_next_attempt_at", "status, next_attempt_at", False),
        ("ix_webhook_outbox_leg_id_status", "leg_id, status", False),
        ("ix_webhook_outbox_finished_at", "finished_at", False),
    ):
        kind = "UNIQUE INDEX" if unique else "INDEX"
        conn.exec_driver_sql(f"CREATE {kind} {name} ON webhook_outbox ({columns})")


def _column_ddl(conn: Connection, column: Column[Any]) -> str:
    return str(CreateColumn(column).compile(dialect=conn.dialect))


def _v6_live_state(conn: Connection) -> None:
    """The machine's live state, so a restarted process adopts the calls (engine/store/live.py)."""
    md = MetaData(naming_convention=NAMING_CONVENTION)
    ident = BigInteger().with_variant(Integer(), "sqlite")
    Table(
        "live_legs",
        md,
        Column("call_control_id", String(64), primary_key=True),
        Column("org_id", ident, nullable=False),
        Column("state", Text(), nullable=False),
        Column("updated", Double(), nullable=False),
    )
    Table(
        "live_rooms",
        md,
        Column("room_id", String(80), primary_key=True),
        Column("org_id", ident, nullable=False),
        Column("state", Text(), nullable=False),
    )
    Table(
        "live_queues",
        md,
        Column("org_id", ident, primary_key=True),
        Column("name", String(255), primary_key=True),
        Column("state", Text(), nullable=False),
    )
    Table(
        "live_conferences",
        md,
        Column("org_id", ident, primary_key=True),
        Column("bridge_id", ident, primary_key=True),
        Column("room_id", String(80), nullable=False),
    )
    Table(
        "live_timers",
        md,
        Column("call_control_id", String(64), primary_key=True),
        Column("kind", String(32), primary_key=True),
        Column("tag", String(128), primary_key=True),
        Column("deadline", Double(), nullable=False),
    )
    md.create_all(conn, checkfirst=False)


def _v7_live_recordings(conn: Connection) -> None:
    """Recordings in progress, so a restarted process continues them (live_recordings.py)."""
    md = MetaData(naming_convention=NAMING_CONVENTION)
    Table(
        "live_recordings",
        md,
        Column("recording_id", String(128), primary_key=True),
        Column("call_control_id", String(64), nullable=False),
        Column("org_id", BigInteger().with_variant(Integer(), "sqlite"), nullable=False),
        Column("path", Text(), nullable=False),
        Column("options", Text(), nullable=False),
        Column("started_at", Double(), nullable=False),
    )
    md.create_all(conn, checkfirst=False)


def _number_assignments(
    md: MetaData, ident: TypeEngine[int], stamp: TypeEngine[Any], *, channels_default: str
) -> Table:
    """The number_assignments table as version 1 made it; version 8 changed only the default."""
    return Table(
        "number_assignments",
        md,
        Column("id", ident, primary_key=True, autoincrement=True),
        Column(
            "phone_number_id", ident, ForeignKey("phone_numbers.id"), nullable=False, unique=True
        ),
        Column("bridge_id", ident, ForeignKey("bridges.id"), nullable=False, index=True),
        Column("state", String(16), nullable=False, server_default="ASSIGNED"),
        Column("active", Boolean(), nullable=False, server_default=true()),
        Column("channels_count", Integer(), nullable=False, server_default=channels_default),
        Column("status", String(16), nullable=False, server_default="active"),
        Column("created", stamp, nullable=False),
    )


def _v8_channels_count_default(conn: Connection) -> None:
    """A newly connected number takes 100 live legs, not 1 (a conference number takes its
    callers; the organization's max_legs still applies). Only the column's default changes:
    numbers connected before keep their channels_count, since raising a capacity nobody asked
    for could let more callers in than their operator planned for."""
    if conn.dialect.name != "sqlite":
        # Standard SQL; PostgreSQL's ALTER TABLE docs: "defaults only apply to subsequent
        # INSERT commands; they do not cause rows already in the table to change".
        conn.exec_driver_sql(
            "ALTER TABLE number_assignments ALTER COLUMN channels_count SET DEFAULT 100"
        )
        return
    # SQLite cannot alter a column's default: the table is rebuilt and its rows copied
    # (https://www.sqlite.org/lang_altertable.html). The old table is renamed first so the new
    # one is created under its final name with its constraint names; that order is safe only
    # because no table, view or trigger refers to number_assignments (a rename rewrites those).
    # Its index stays with the renamed table, and its name is reused, so it goes first.
    conn.exec_driver_sql("ALTER TABLE number_assignments RENAME TO number_assignments_v7")
    conn.exec_driver_sql("DROP INDEX ix_number_assignments_bridge_id")
    md = MetaData(naming_convention=NAMING_CONVENTION)
    ident = BigInteger().with_variant(Integer(), "sqlite")
    Table("phone_numbers", md, Column("id", ident, primary_key=True))  # for the foreign keys
    Table("bridges", md, Column("id", ident, primary_key=True))
    # Version 1's shape, with the new default.
    _number_assignments(md, ident, DateTime(timezone=True), channels_default="100")
    md.tables["number_assignments"].create(conn, checkfirst=False)
    columns = "id, phone_number_id, bridge_id, state, active, channels_count, status, created"
    conn.exec_driver_sql(
        f"INSERT INTO number_assignments ({columns}) SELECT {columns} FROM number_assignments_v7"
    )
    conn.exec_driver_sql("DROP TABLE number_assignments_v7")


def _v9_console_audit(conn: Connection) -> None:
    """The console's audit log: every control action, who, what, when (engine/console)."""
    md = MetaData(naming_convention=NAMING_CONVENTION)
    ident = BigInteger().with_variant(Integer(), "sqlite")
    Table("organizations", md, Column("id", ident, primary_key=True))  # for the foreign key
    Table(
        "console_audit",
        md,
        Column("id", ident, primary_key=True, autoincrement=True),
        Column("org_id", ident, ForeignKey("organizations.id"), nullable=False),
        Column("token_id", ident, nullable=False),
        Column("action", String(64), nullable=False),
        Column("call_control_id", String(128), nullable=False),
        Column("body", Text(), nullable=False),
        Column("outcome", Text(), nullable=False),
        Column("at", Double(), nullable=False),
        Index(None, "org_id", "id"),
    )
    md.tables["console_audit"].create(conn, checkfirst=False)


def _v10_conference_records(conn: Connection) -> None:
    """The Conferences API's conferences, live and ended (engine/store/live.py)."""
    md = MetaData(naming_convention=NAMING_CONVENTION)
    Table(
        "live_conference_records",
        md,
        Column("conference_id", String(64), primary_key=True),
        Column("org_id", BigInteger().with_variant(Integer(), "sqlite"), nullable=False),
        Column("state", Text(), nullable=False),
    )
    md.create_all(conn, checkfirst=False)


def _v11_conference_recordings(conn: Connection) -> None:
    """A recording may be a conference's (engine/machine/conference_recording.py)."""
    column: Column[Any] = Column("conference_id", String(64), nullable=True)
    Table("recordings", MetaData(naming_convention=NAMING_CONVENTION), column)
    conn.exec_driver_sql(f"ALTER TABLE recordings ADD COLUMN {_column_ddl(conn, column)}")


def _v12_live_leg_owners(conn: Connection) -> None:
    """The node owning each live leg, for fencing a node that lost its legs (issue 16)."""
    column: Column[Any] = Column("owner", String(128), nullable=True)
    Table("live_legs", MetaData(naming_convention=NAMING_CONVENTION), column)
    conn.exec_driver_sql(f"ALTER TABLE live_legs ADD COLUMN {_column_ddl(conn, column)}")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial tables", _v1_initial_tables),
    Migration(2, "per-organization webhook signing key versions", _v2_retired_signing_keys),
    Migration(3, "recordings of each organization", _v3_recordings),
    Migration(4, "per-organization limits", _v4_org_limits),
    Migration(5, "webhook delivery status, attempts and public ids", _v5_webhook_deliveries),
    Migration(6, "live state of calls, for adoption after a restart", _v6_live_state),
    Migration(7, "recordings in progress, continued after a restart", _v7_live_recordings),
    Migration(8, "a new number's channels_count defaults to 100", _v8_channels_count_default),
    Migration(9, "the console's audit log of control actions", _v9_console_audit),
    Migration(10, "conferences of the Conferences API", _v10_conference_records),
    Migration(11, "recordings of conferences", _v11_conference_recordings),
    Migration(12, "the node owning each live leg", _v12_live_leg_owners),
)
