"""The machine's live state in the store: written per input, read back at start.

``write_live`` writes one input's ``LiveChanges`` inside a transaction the caller holds (the
input's webhooks go into the outbox in the same transaction, see ``SqlLive.commit_input``).
Upserts are spelled as delete-then-insert of the changed keys: portable across SQLite and
PostgreSQL, and atomic within the transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, TypeVar

from sqlalchemy import Table, and_, delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.errors import StorageError
from engine.machine.live_changes import LiveChanges
from engine.machine.model import Conference, Leg, Queue, Room, TimerKey, TimerKind
from engine.store import live_codec
from engine.store.base import QueuedWebhook
from engine.store.live_records import LiveSnapshot
from engine.store.outbox import outbox_values
from engine.store.schema import (
    live_conference_records,
    live_conferences,
    live_legs,
    live_queues,
    live_rooms,
    live_timers,
    webhook_outbox,
)
from engine.store.transactions import SqlTransactions

T = TypeVar("T")


class LegsFenced(StorageError):
    """503: an input changing legs whose rows another node owns now (it took them over while
    this node was cut off). Nothing was stored; this node must let those legs go."""

    status = 503
    title = "Call moved to another node"
    retry_after_header = "1"

    def __init__(self, legs: Sequence[str]) -> None:
        super().__init__(f"calls {', '.join(legs)} are held by another node now")
        self.legs = tuple(legs)


class SqlLive(SqlTransactions):
    owner: str | None = None  # this node, when several share the store (``fence_as``)

    def fence_as(self, node: str) -> None:
        self.owner = node

    async def own_live(self, leg_ids: Collection[str]) -> None:
        """This node owns these legs' rows from now on (it adopted them): the node that held
        them can no longer store an input that changes them."""
        if self.owner is None or not leg_ids:
            return
        async with self._write("the adopted calls could not be taken") as conn:
            table = live_legs
            await conn.execute(
                update(table)
                .where(table.c.call_control_id.in_(list(leg_ids)))
                .values(owner=self.owner)
            )

    async def commit_input(
        self, changes: LiveChanges, webhooks: Sequence[QueuedWebhook], now: float
    ) -> None:
        """One input's state changes and webhooks, in one transaction: all or nothing. With
        several nodes, refused (``LegsFenced``) if another node owns one of its legs' rows."""
        if changes.empty and not webhooks:
            return
        async with self._write("the input's state could not be stored") as conn:
            if self.owner is not None:
                await _fence(conn, changes, self.owner)
            await write_live(conn, changes, now, self.owner)
            if webhooks:
                rows = [
                    outbox_values(
                        org_id=w.org_id,
                        leg_id=w.leg_id,
                        url=w.url,
                        body=w.body,
                        headers={},
                        now=now,
                    )
                    for w in webhooks
                ]
                await conn.execute(insert(webhook_outbox), rows)

    async def load_live(self) -> LiveSnapshot:
        async with self._read() as conn:
            return await read_live(conn)

    async def live_queue(self, org_id: int, name: str) -> Queue | None:
        table = live_queues
        return await self._one_live(Queue, table, table.c.org_id == org_id, table.c.name == name)

    async def live_room(self, room_id: str) -> Room | None:
        return await self._one_live(Room, live_rooms, live_rooms.c.room_id == room_id)

    async def live_conferences(self, org_id: int) -> list[Conference]:
        table = live_conference_records
        async with self._read() as conn:
            query = select(table.c.state).where(table.c.org_id == org_id)
            states = (await conn.execute(query)).scalars().all()
        return [live_codec.loads(Conference, state) for state in states]

    async def live_conference(self, conference_id: str) -> Conference | None:
        table = live_conference_records
        return await self._one_live(Conference, table, table.c.conference_id == conference_id)

    async def _one_live(self, kind: type[T], table: Table, *where: Any) -> T | None:
        """The one stored row of ``table`` that ``where`` names, decoded; None if none is."""
        async with self._read() as conn:
            query = select(table.c.state).where(*where)
            state = (await conn.execute(query)).scalar_one_or_none()
        return None if state is None else live_codec.loads(kind, state)


async def _fence(conn: AsyncConnection, changes: LiveChanges, owner: str) -> None:
    """The input's legs' rows locked (PostgreSQL; SQLite has one writer) and checked as this
    node's, or not yet anybody's."""
    leg_ids = [leg.call_control_id for leg in changes.legs] + list(changes.legs_gone)
    if not leg_ids:
        return
    table = live_legs
    query = (
        select(table.c.call_control_id, table.c.owner)
        .where(table.c.call_control_id.in_(leg_ids))
        .with_for_update()
    )
    rows = (await conn.execute(query)).all()
    taken = sorted(row[0] for row in rows if row[1] is not None and row[1] != owner)
    if taken:
        raise LegsFenced(taken)


async def write_live(
    conn: AsyncConnection, changes: LiveChanges, now: float, owner: str | None = None
) -> None:
    if changes.empty:
        return
    leg_ids = [leg.call_control_id for leg in changes.legs] + list(changes.legs_gone)
    await _delete(conn, live_legs, [live_legs.c.call_control_id], [(i,) for i in leg_ids])
    await _insert(
        conn,
        live_legs,
        [
            {
                "call_control_id": leg.call_control_id,
                "org_id": leg.org_id,
                "state": live_codec.dumps(leg).decode(),
                "updated": now,
                "owner": owner,
            }
            for leg in changes.legs
        ],
    )
    room_ids = [room.room_id for room in changes.rooms] + list(changes.rooms_gone)
    await _delete(conn, live_rooms, [live_rooms.c.room_id], [(i,) for i in room_ids])
    await _insert(
        conn,
        live_rooms,
        [
            {"room_id": r.room_id, "org_id": r.org_id, "state": live_codec.dumps(r).decode()}
            for r in changes.rooms
        ],
    )
    queue_keys = [(q.org_id, q.name) for q in changes.queues] + list(changes.queues_gone)
    await _delete(conn, live_queues, [live_queues.c.org_id, live_queues.c.name], queue_keys)
    await _insert(
        conn,
        live_queues,
        [
            {"org_id": q.org_id, "name": q.name, "state": live_codec.dumps(q).decode()}
            for q in changes.queues
        ],
    )
    await _write_conferences(conn, changes)
    await _write_timers(conn, changes)
    await _write_records(conn, changes)


async def _write_records(conn: AsyncConnection, changes: LiveChanges) -> None:
    table = live_conference_records
    ids = [r.conference_id for r in changes.records] + list(changes.records_gone)
    await _delete(conn, table, [table.c.conference_id], [(i,) for i in ids])
    await _insert(
        conn,
        table,
        [
            {
                "conference_id": r.conference_id,
                "org_id": r.org_id,
                "state": live_codec.dumps(r).decode(),
            }
            for r in changes.records
        ],
    )


async def _write_conferences(conn: AsyncConnection, changes: LiveChanges) -> None:
    table = live_conferences
    keys = [key for key, _ in changes.conferences] + list(changes.conferences_gone)
    await _delete(conn, table, [table.c.org_id, table.c.bridge_id], keys)
    await _insert(
        conn,
        table,
        [
            {"org_id": org, "bridge_id": bridge, "room_id": room}
            for (org, bridge), room in changes.conferences
        ],
    )


async def _write_timers(conn: AsyncConnection, changes: LiveChanges) -> None:
    table = live_timers
    keys = [key for key, _ in changes.timers] + list(changes.timers_gone)
    await _delete(
        conn,
        table,
        [table.c.call_control_id, table.c.kind, table.c.tag],
        [(k.call_control_id, k.kind.value, k.tag) for k in keys],
    )
    await _insert(
        conn,
        table,
        [
            {
                "call_control_id": k.call_control_id,
                "kind": k.kind.value,
                "tag": k.tag,
                "deadline": deadline,
            }
            for k, deadline in changes.timers
        ],
    )


async def read_live(conn: AsyncConnection) -> LiveSnapshot:
    legs = [live_codec.loads(Leg, row.state) for row in await conn.execute(select(live_legs))]
    rooms = [live_codec.loads(Room, row.state) for row in await conn.execute(select(live_rooms))]
    queues = [live_codec.loads(Queue, row.state) for row in await conn.execute(select(live_queues))]
    conferences = [
        ((row.org_id, row.bridge_id), row.room_id)
        for row in await conn.execute(select(live_conferences))
    ]
    timers = [
        (TimerKey(row.call_control_id, TimerKind(row.kind), row.tag), row.deadline)
        for row in await conn.execute(select(live_timers))
    ]
    records = [
        live_codec.loads(Conference, row.state)
        for row in await conn.execute(select(live_conference_records))
    ]
    return LiveSnapshot(
        tuple(legs), tuple(rooms), tuple(queues), tuple(conferences), tuple(timers), tuple(records)
    )


# Keys per statement: well under SQLite's bound-parameter limit with three columns a key.
_CHUNK = 200


async def _delete(
    conn: AsyncConnection, table: Table, columns: Sequence[Any], keys: Sequence[tuple[Any, ...]]
) -> None:
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        if len(columns) == 1:
            where = columns[0].in_([key[0] for key in chunk])
        else:
            where = or_(
                *(and_(*(c == v for c, v in zip(columns, key, strict=True))) for key in chunk)
            )
        await conn.execute(delete(table).where(where))


async def _insert(conn: AsyncConnection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await conn.execute(insert(table), list(rows))
