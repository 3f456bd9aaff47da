"""The webhook outbox on SQLAlchemy Core: queue, due (one per leg), delivered, rescheduled."""

from __future__ import annotations

import json
from collections.abc import Mapping

from sqlalchemy import exists, insert, select, update

from engine.errors import NotFound
from engine.store.base import OutboxRecord
from engine.store.rows import _check_page, _exists, _new_id, _outbox
from engine.store.schema import webhook_outbox
from engine.store.transactions import SqlTransactions


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
