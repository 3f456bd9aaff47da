"""The current shape of callbridge's tables, as SQLAlchemy Core ``Table`` objects.

The queries in ``engine.store.sql`` are built from these tables. How the database gets to this
shape is ``engine.store.migrations``' business: its migrations are history and never change,
while this module always describes the newest version. A test checks that a freshly migrated
database matches these definitions, so the two cannot drift apart unnoticed.

Only portable types are used here, so that PostgreSQL can take the same metadata.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
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
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

# Deterministic constraint names: a later migration on PostgreSQL can only drop or alter a
# constraint it can name, and SQLite would otherwise leave them anonymous. Existing databases
# carry these names, so the convention is fixed (the migrations use it too).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# 64-bit ids on servers (the outbox alone can pass 2**31 rows in a long-lived install);
# SQLite only makes INTEGER PRIMARY KEY an auto-incrementing rowid alias, never BIGINT.
ID = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always a timezone-aware UTC ``datetime`` in Python.

    PostgreSQL's ``timestamptz`` keeps the zone, SQLite's text timestamps drop it; normalising
    on both sides gives every record the same aware values whichever database is underneath.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            # A naive value has no defined instant; storing it would silently shift it.
            raise ValueError("timestamps must be timezone-aware")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def new_public_id() -> str:
    """A fresh public id (a UUID, as Telnyx's ids are)."""
    return str(uuid.uuid4())


def event_type_of(body: str) -> str:
    """webhook_outbox.event_type: the ``event_type`` of the event (``data``) a row carries; empty
    when the body names none (what the column's filter cannot match)."""
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    kind = data.get("event_type") if isinstance(data, dict) else None
    return kind[:128] if isinstance(kind, str) else ""


metadata = MetaData(naming_convention=NAMING_CONVENTION)

# A newly connected number's channels_count when the request gives none.
DEFAULT_CHANNELS_COUNT = 100

# Which migrations have been applied. Created before any migration runs (so it is not itself
# a migration) and therefore never changes shape.
schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer(), primary_key=True, autoincrement=False),
    Column("description", String(255), nullable=False),
    Column("applied_at", UTCDateTime(), nullable=False),
)

organizations = Table(
    "organizations",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("domain_handle", String(255), nullable=False, unique=True),
    Column("name", String(255), nullable=False),
    Column("created", UTCDateTime(), nullable=False),
    Column("modified", UTCDateTime(), nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("org_id", ID, ForeignKey("organizations.id"), nullable=False, index=True),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("created", UTCDateTime(), nullable=False),
)

provider_configs = Table(
    "provider_configs",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("org_id", ID, ForeignKey("organizations.id"), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("name", String(255), nullable=False),
    Column("account_sid", String(255), nullable=False),
    Column("auth_token_ciphertext", Text(), nullable=False),
    Column("public_key", Text(), nullable=True),
    Column("api_base_url", String(2048), nullable=True),
    Column("active", Boolean(), nullable=False, default=True, server_default=true()),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("modified", UTCDateTime(), nullable=False),
    # Also serves the org_id lookups (it is the index's leading column).
    UniqueConstraint("org_id", "provider", "account_sid"),
)

bridges = Table(
    "bridges",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("org_id", ID, ForeignKey("organizations.id"), nullable=False, index=True),
    Column("slug", String(255), nullable=False, unique=True),
    Column("name", String(255), nullable=False),
    Column("description", Text(), nullable=False, default="", server_default=""),
    Column("status", String(16), nullable=False),
    Column(
        "documents_status", String(32), nullable=False, default="pending", server_default="pending"
    ),
    Column("hub", Integer(), nullable=False, default=1, server_default="1"),
    Column("region", String(16), nullable=False, default="US", server_default="US"),
    Column("webhook_url", String(2048), nullable=True),
    Column("provider_config_id", ID, ForeignKey("provider_configs.id"), nullable=True, index=True),
    Column("created", UTCDateTime(), nullable=False),
    Column("modified", UTCDateTime(), nullable=False),
)

# A row exists exactly as long as the number is assigned to a bridge: releasing the number
# deletes it together with its assignment.
phone_numbers = Table(
    "phone_numbers",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("number", String(32), nullable=False, unique=True),
    Column("org_id", ID, ForeignKey("organizations.id"), nullable=False),
    Column(
        "provider_config_id",
        ID,
        ForeignKey("provider_configs.id"),
        nullable=False,
        index=True,
    ),
    Column("created", UTCDateTime(), nullable=False),
)

number_assignments = Table(
    "number_assignments",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("phone_number_id", ID, ForeignKey("phone_numbers.id"), nullable=False, unique=True),
    Column("bridge_id", ID, ForeignKey("bridges.id"), nullable=False, index=True),
    Column("state", String(16), nullable=False, default="ASSIGNED", server_default="ASSIGNED"),
    Column("active", Boolean(), nullable=False, default=True, server_default=true()),
    # The number's capacity in live legs (engine/admission/inbound.py). 100 since version 8, so that
    # a conference number takes its callers; numbers connected before keep what they had.
    Column(
        "channels_count",
        Integer(),
        nullable=False,
        default=DEFAULT_CHANNELS_COUNT,
        server_default=str(DEFAULT_CHANNELS_COUNT),
    ),
    Column("status", String(16), nullable=False, default="active", server_default="active"),
    Column("created", UTCDateTime(), nullable=False),
)

# Each organization's retired webhook-signing key versions (engine.webhooks.signing derives the
# keys; no key is stored). The current version is one past the highest retired one (1 before the
# first rotation), and the unique pair makes two concurrent rotations conflict instead of skipping a
# version. retired_at is epoch seconds (the runtime's clock), compared with "now" when the keys
# still published are listed.
retired_signing_keys = Table(
    "retired_signing_keys",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("org_id", ID, ForeignKey("organizations.id"), nullable=False),
    Column("version", Integer(), nullable=False),
    Column("retired_at", Double(), nullable=False),
    # Also serves the org_id lookups (it is the index's leading column).
    UniqueConstraint("org_id", "version"),
)

# Saved recordings (engine/recordings.py). public_id is the id the Call Control API shows (a
# UUID, as Telnyx's); the integer id orders the list newest first. path is relative to the
# recordings directory, so moving that directory (CALLBRIDGE_RECORDINGS_DIR) keeps the rows
# good. Times are epoch seconds (the runtime's clock).
recordings = Table(
    "recordings",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("public_id", String(36), nullable=False, unique=True),
    Column("org_id", ID, ForeignKey("organizations.id"), nullable=False),
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
    Column("conference_id", String(64), nullable=True),  # a conference's recording (v11)
    # An organization's page, newest first.
    Index(None, "org_id", "id"),
)

# Call-control webhooks and their delivery (engine/webhooks/outbox.py). Times are epoch seconds (the
# runtime's clock), compared with "now" on every poll. status is pending | delivered | failed
# (dead-lettered after the last attempt); a pending row's next_attempt_at is when it is due, or,
# while a POST is in flight, when that claim lapses (a crash mid-POST sends it again then).
# public_id is the id GET /v2/webhook_deliveries shows; attempts is a JSON list, newest first.
webhook_outbox = Table(
    "webhook_outbox",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("org_id", ID, nullable=False),
    Column("leg_id", String(128), nullable=False),
    Column("url", String(2048), nullable=False),
    Column("body", Text(), nullable=False),
    Column("headers", Text(), nullable=False),
    Column("attempt", Integer(), nullable=False, default=0, server_default="0"),
    Column("next_attempt_at", Double(), nullable=True),
    Column("created", Double(), nullable=False),
    Column("delivered_at", Double(), nullable=True),
    Column("last_error", Text(), nullable=True),
    Column("public_id", String(36), nullable=False, default=new_public_id, server_default=""),
    Column("event_type", String(128), nullable=False, default="", server_default=""),
    Column("status", String(16), nullable=False, default="pending", server_default="pending"),
    Column("attempts", Text(), nullable=False, default="[]", server_default="[]"),
    Column("started_at", Double(), nullable=True),
    Column("finished_at", Double(), nullable=True),
    # The due poll scans pending rows by time; the per-leg ordering check looks up a leg's
    # pending rows.
    Index(None, "delivered_at", "next_attempt_at"),
    Index(None, "leg_id", "delivered_at"),
    # Version 5: the API finds a delivery by its public id and pages an organization's newest
    # first; the claim and the ordering check read pending rows by status; the purge finds
    # finished rows by time.
    Index(None, "public_id", unique=True),
    Index(None, "org_id", "id"),
    Index(None, "status", "next_attempt_at"),
    Index(None, "leg_id", "status"),
    Index(None, "finished_at"),
)


# Per-organization overrides of the limits in ``Settings`` (engine/admission/limits.py); NULL keeps
# the process's default, and an organization without a row has every default.
org_limits = Table(
    "org_limits",
    metadata,
    Column("org_id", ID, ForeignKey("organizations.id"), primary_key=True),
    Column("max_legs", Integer(), nullable=True),
    Column("api_rate", Double(), nullable=True),
    Column("api_burst", Integer(), nullable=True),
)


# The machine's live state (engine/machine/live_changes.py, engine/store/live_codec.py): one row per
# leg, room, queue, default conference and armed timer, written in the transaction of the input that
# changed it, so a restarted process adopts the calls exactly as they were (issue: calls survive
# a restart). ``state`` is the codec's JSON, which carries its own schema version.
live_legs = Table(
    "live_legs",
    metadata,
    Column("call_control_id", String(64), primary_key=True),
    Column("org_id", ID, nullable=False),
    Column("state", Text(), nullable=False),
    Column("updated", Double(), nullable=False),
    # The node that owns the leg when several share the store (None: one node): an input of
    # another node changing the leg is refused (engine/store/live.py, issue 16 point 5).
    Column("owner", String(128), nullable=True),
)
live_rooms = Table(
    "live_rooms",
    metadata,
    Column("room_id", String(80), primary_key=True),
    Column("org_id", ID, nullable=False),
    Column("state", Text(), nullable=False),
)
live_queues = Table(
    "live_queues",
    metadata,
    Column("org_id", ID, primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("state", Text(), nullable=False),
)
live_conferences = Table(
    "live_conferences",
    metadata,
    Column("org_id", ID, primary_key=True),
    Column("bridge_id", ID, primary_key=True),
    Column("room_id", String(80), nullable=False),
)
# The Conferences API's conferences, live and ended (engine/machine/conference_events.py), until
# the machine prunes an ended one.
live_conference_records = Table(
    "live_conference_records",
    metadata,
    Column("conference_id", String(64), primary_key=True),
    Column("org_id", ID, nullable=False),
    Column("state", Text(), nullable=False),
)
live_timers = Table(
    "live_timers",
    metadata,
    Column("call_control_id", String(64), primary_key=True),
    Column("kind", String(32), primary_key=True),
    Column("tag", String(128), primary_key=True),
    Column("deadline", Double(), nullable=False),
)
# Recordings in progress (engine/store/live_recordings.py): written when one starts, deleted when
# it is taken to be saved or fails, so a restarted process continues the same file. ``options``
# is the live codec's JSON of ``RecordingOptions``.
live_recordings = Table(
    "live_recordings",
    metadata,
    Column("recording_id", String(128), primary_key=True),
    Column("call_control_id", String(64), nullable=False),
    Column("org_id", ID, nullable=False),
    Column("path", Text(), nullable=False),
    Column("options", Text(), nullable=False),
    Column("started_at", Double(), nullable=False),
)
# What operators did through the console (engine/console/controls.py): who (organization and API
# token), what (the action, its leg, its body as JSON), when, and how it ended ("ok" or the error).
console_audit = Table(
    "console_audit",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("org_id", ID, ForeignKey("organizations.id"), nullable=False),
    Column("token_id", ID, nullable=False),
    Column("action", String(64), nullable=False),
    Column("call_control_id", String(128), nullable=False),
    Column("body", Text(), nullable=False),
    Column("outcome", Text(), nullable=False),
    Column("at", Double(), nullable=False),
    Index(None, "org_id", "id"),
)
