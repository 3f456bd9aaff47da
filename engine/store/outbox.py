"""The webhook outbox on SQLAlchemy Core: queue, claim (one per leg, bounded per destination),
attempts, dead letters, the deliveries list and the retention purge."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    delete,
    exists,
    func,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.errors import NotFound
from engine.store.base import AttemptRecord, DeliveryFilter, OutboxRecord
from engine.store.rows import _attempt_json, _check_page, _new_id, _outbox
from engine.store.schema import event_type_of, webhook_outbox
from engine.store.transactions import SqlTransactions

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
# Attempts kept per webhook, newest first: enough to read a whole retry history at the default
# settings while a row stays bounded whatever CALLBRIDGE_WEBHOOK_MAX_ATTEMPTS says.
MAX_KEPT_ATTEMPTS = 25

wo = webhook_outbox


def _first_pending_of_its_leg() -> ColumnElement[bool]:
    """No earlier webhook of the same leg is still pending: delivering what this selects, even
    concurrently, keeps each leg's events in order."""
    earlier = wo.alias("earlier")
    return ~exists().where(
        earlier.c.leg_id == wo.c.leg_id, earlier.c.id < wo.c.id, earlier.c.status == PENDING
    )


def _due(now: float) -> list[ColumnElement[bool]]:
    return [
        wo.c.status == PENDING,
        wo.c.next_attempt_at.is_not(None),
        wo.c.next_attempt_at <= now,
        _first_pending_of_its_leg(),
    ]


class SqlOutbox(SqlTransactions):
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
        values = outbox_values(
            org_id=org_id, leg_id=leg_id, url=url, body=body, headers=headers, now=now
        )
        async with self._write("the webhook could not be queued") as conn:
            return _new_id(await conn.execute(insert(wo).values(values)))

    async def pending_webhook_count(self) -> int:
        """Webhooks not yet delivered nor dead-lettered (what a drain waits for)."""
        query = select(func.count()).select_from(wo).where(wo.c.status == PENDING)
        async with self._read() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def webhook_backlog(self) -> tuple[int, float | None]:
        query = select(func.count(), func.min(wo.c.created)).where(wo.c.status == PENDING)
        async with self._read() as conn:
            count, oldest = (await conn.execute(query)).one()
        return int(count), None if oldest is None else float(oldest)

    async def next_webhook_due(self) -> float | None:
        # A leg's later webhooks wait for its first pending one: that one's time is theirs.
        query = select(func.min(wo.c.next_attempt_at)).where(
            wo.c.status == PENDING, _first_pending_of_its_leg()
        )
        async with self._read() as conn:
            due = (await conn.execute(query)).scalar_one()
        return None if due is None else float(due)

    async def due_webhooks(self, now: float, limit: int) -> list[OutboxRecord]:
        _check_page(0, limit)
        query = select(wo).where(*_due(now)).order_by(wo.c.id).limit(limit)
        async with self._read() as conn:
            return [_outbox(row) for row in (await conn.execute(query)).mappings()]

    async def claim_due_webhooks(
        self,
        now: float,
        limit: int,
        *,
        lease_until: float,
        per_destination: int,
        busy: Mapping[tuple[int, str], int],
    ) -> list[OutboxRecord]:
        _check_page(0, limit)
        full = [dest for dest, n in busy.items() if n >= per_destination]
        where = _due(now)
        if full:
            # Skipped in the query, not after it: a full destination's backlog must not take
            # the whole batch and starve everyone else's.
            where.append(tuple_(wo.c.org_id, wo.c.url).not_in(full))
        rank = func.row_number().over(partition_by=(wo.c.org_id, wo.c.url), order_by=wo.c.id)
        ranked = select(wo.c.id, wo.c.org_id, wo.c.url, rank.label("rank")).where(*where).subquery()
        candidates = (
            select(ranked.c.id, ranked.c.org_id, ranked.c.url)
            .where(ranked.c.rank <= per_destination)
            .order_by(ranked.c.id)
            .limit(limit)
        )
        async with self._write("the webhooks could not be claimed") as conn:
            picked = _within_room((await conn.execute(candidates)).all(), per_destination, busy)
            if not picked:
                return []
            # The status and time are checked again: another process may have claimed first.
            claimed = await conn.execute(
                update(wo)
                .where(wo.c.id.in_(picked), wo.c.status == PENDING, wo.c.next_attempt_at <= now)
                .values(next_attempt_at=lease_until)
                .returning(wo.c.id)
            )
            ids = [row.id for row in claimed]
            rows = await conn.execute(select(wo).where(wo.c.id.in_(ids)).order_by(wo.c.id))
            return [_outbox(row) for row in rows.mappings()]

    async def record_webhook_attempt(
        self, webhook_id: int, tried: AttemptRecord, *, next_attempt_at: float | None
    ) -> None:
        async with self._write("the webhook could not be updated") as conn:
            row = await _row(conn, webhook_id)
            kept = [_attempt_json(tried), *json.loads(row["attempts"])][:MAX_KEPT_ATTEMPTS]
            values: dict[str, Any] = {
                "attempt": row["attempt"] + 1,
                "attempts": json.dumps(kept),
                "started_at": _earliest(row["started_at"], tried.started_at),
            }
            if tried.status == DELIVERED:
                values.update(_delivered(row, tried.finished_at))
            elif row["status"] == PENDING:
                values["last_error"] = tried.error
                values.update(_failed(next_attempt_at, tried.finished_at))
            await conn.execute(update(wo).where(wo.c.id == webhook_id).values(**values))

    async def mark_webhook_delivered(self, webhook_id: int, now: float) -> None:
        async with self._write("the webhook could not be updated") as conn:
            row = await _row(conn, webhook_id)
            await conn.execute(update(wo).where(wo.c.id == webhook_id).values(_delivered(row, now)))

    async def reschedule_webhook(
        self, webhook_id: int, *, attempt: int, next_attempt_at: float | None, error: str
    ) -> None:
        async with self._write("the webhook could not be updated") as conn:
            row = await _row(conn, webhook_id)
            due = row["next_attempt_at"]
            finished = due if due is not None else row["created"]
            await conn.execute(
                update(wo)
                .where(wo.c.id == webhook_id)
                .values(attempt=attempt, last_error=error, **_failed(next_attempt_at, finished))
            )

    async def release_webhooks(self, webhook_ids: Sequence[int], now: float) -> None:
        if not webhook_ids:
            return
        async with self._write("the webhooks could not be released") as conn:
            await conn.execute(
                update(wo)
                .where(wo.c.id.in_(list(webhook_ids)), wo.c.status == PENDING)
                .values(next_attempt_at=now)
            )

    async def list_webhook_deliveries(
        self, org_id: int, where: DeliveryFilter, *, offset: int, limit: int
    ) -> tuple[list[OutboxRecord], int]:
        _check_page(offset, limit)
        conditions = [wo.c.org_id == org_id, *_filtered(where)]
        page: Select[Any] = (
            select(wo).where(*conditions).order_by(wo.c.id.desc()).offset(offset).limit(limit)
        )
        async with self._read() as conn:
            total = await conn.scalar(select(func.count()).select_from(wo).where(*conditions))
            records = [_outbox(row) for row in (await conn.execute(page)).mappings()]
        return records, int(total or 0)

    async def get_webhook_delivery(self, org_id: int, public_id: str) -> OutboxRecord | None:
        query = select(wo).where(wo.c.org_id == org_id, wo.c.public_id == public_id)
        async with self._read() as conn:
            row = (await conn.execute(query)).mappings().first()
        return _outbox(row) if row is not None else None

    async def purge_webhooks(self, finished_before: float, limit: int) -> int:
        _check_page(0, limit)
        old = (
            select(wo.c.id)
            .where(wo.c.status.in_((DELIVERED, FAILED)), wo.c.finished_at < finished_before)
            .limit(limit)
        )
        async with self._write("the webhooks could not be purged") as conn:
            ids = [row.id for row in await conn.execute(old)]
            if ids:
                await conn.execute(delete(wo).where(wo.c.id.in_(ids)))
        return len(ids)


def outbox_values(
    *, org_id: int, leg_id: str, url: str, body: str, headers: Mapping[str, str], now: float
) -> dict[str, Any]:
    """The columns of a new outbox row, due at ``now``: for any insert into webhook_outbox,
    so that each carries its event type (the deliveries list filters on it). The public id
    comes from the column's default."""
    return {
        "org_id": org_id,
        "leg_id": leg_id,
        "url": url,
        "body": body,
        "headers": json.dumps(dict(headers), sort_keys=True),
        "attempt": 0,
        "next_attempt_at": now,
        "created": now,
        "event_type": event_type_of(body),
    }


async def _row(conn: AsyncConnection, webhook_id: int) -> RowMapping:
    row = (await conn.execute(select(wo).where(wo.c.id == webhook_id))).mappings().first()
    if row is None:
        raise NotFound(f"webhook {webhook_id} not found")
    return row


def _within_room(
    candidates: Sequence[Any], per_destination: int, busy: Mapping[tuple[int, str], int]
) -> list[int]:
    """The candidates' ids that fit each destination's room (its in-flight work counted)."""
    taken: dict[tuple[int, str], int] = {}
    picked: list[int] = []
    for row in candidates:
        dest = (row.org_id, row.url)
        if busy.get(dest, 0) + taken.get(dest, 0) < per_destination:
            taken[dest] = taken.get(dest, 0) + 1
            picked.append(row.id)
    return picked


def _earliest(known: float | None, new: float) -> float:
    return new if known is None else min(known, new)


def _delivered(row: RowMapping, at: float) -> dict[str, Any]:
    """A delivered webhook stays delivered, with its first delivery time."""
    first = row["delivered_at"] if row["delivered_at"] is not None else at
    return {
        "status": DELIVERED,
        "delivered_at": first,
        "finished_at": first,
        "next_attempt_at": None,
    }


def _failed(next_attempt_at: float | None, finished_at: float) -> dict[str, Any]:
    if next_attempt_at is not None:
        return {"next_attempt_at": next_attempt_at}
    return {"status": FAILED, "next_attempt_at": None, "finished_at": finished_at}


def _filtered(where: DeliveryFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if where.status is not None:
        conditions.append(wo.c.status == where.status)
    if where.event_types:
        conditions.append(wo.c.event_type.in_(where.event_types))
    for column, low, high in (
        (wo.c.started_at, where.started_gte, where.started_lte),
        (wo.c.finished_at, where.finished_gte, where.finished_lte),
    ):
        if low is not None:
            conditions.append(column >= low)
        if high is not None:
            conditions.append(column <= high)
    # lower() on both sides: SQLite's LIKE ignores ASCII case and PostgreSQL's does not.
    for column, text in (
        (wo.c.body, where.webhook_contains),
        (wo.c.attempts, where.attempts_contains),
    ):
        if text is not None:
            conditions.append(func.lower(column).contains(text.lower(), autoescape=True))
    return conditions
