"""Rows to records, and the small query helpers the store's methods share."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Select,
    delete,
    exists,
    select,
    update,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.errors import NotFound, StorageError
from engine.store.base import (
    AttemptRecord,
    BridgeRecord,
    NumberRecord,
    OrganizationRecord,
    OutboxRecord,
    ProviderConfigRecord,
)
from engine.store.schema import (
    bridges,
    number_assignments,
    organizations,
    phone_numbers,
    provider_configs,
)

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
        public_id=row["public_id"],
        event_type=row["event_type"],
        status=row["status"],
        attempts=tuple(_attempt(item) for item in json.loads(row["attempts"])),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def _attempt(item: Mapping[str, Any]) -> AttemptRecord:
    return AttemptRecord(
        status=item["status"],
        started_at=item["started_at"],
        finished_at=item["finished_at"],
        url=item["url"],
        request_headers=tuple((k, v) for k, v in item["request_headers"]),
        response_status=item.get("response_status"),
        response_headers=tuple((k, v) for k, v in item.get("response_headers", ())),
        response_body=item.get("response_body"),
        error=item.get("error"),
    )


def _attempt_json(tried: AttemptRecord) -> dict[str, Any]:
    """One entry of webhook_outbox.attempts (read back by ``_attempt``)."""
    return {
        "status": tried.status,
        "started_at": tried.started_at,
        "finished_at": tried.finished_at,
        "url": tried.url,
        "request_headers": [list(pair) for pair in tried.request_headers],
        "response_status": tried.response_status,
        "response_headers": [list(pair) for pair in tried.response_headers],
        "response_body": tried.response_body,
        "error": tried.error,
    }


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
