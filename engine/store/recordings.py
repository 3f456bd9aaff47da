"""Saved recordings on SQLAlchemy Core: keep, page (newest first), look up, forget."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, select
from sqlalchemy.engine import RowMapping

from engine.errors import Conflict, NotFound
from engine.store.base import RecordingRecord
from engine.store.rows import _check_page, _exists, _require_organization
from engine.store.schema import recordings
from engine.store.transactions import SqlTransactions


class SqlRecordings(SqlTransactions):
    async def add_recording(self, record: RecordingRecord) -> None:
        taken = f"a recording with id {record.id!r} already exists"
        async with self._write(taken) as conn:
            await _require_organization(conn, record.org_id)
            if await _exists(conn, recordings.c.public_id == record.id):
                raise Conflict(taken)
            await conn.execute(insert(recordings).values(**_columns(record)))

    async def list_recordings(
        self,
        org_id: int,
        *,
        call_control_id: str | None = None,
        conference_id: str | None = None,
        offset: int,
        limit: int,
    ) -> tuple[list[RecordingRecord], int]:
        _check_page(offset, limit)
        mine = recordings.c.org_id == org_id
        if call_control_id is not None:
            mine = mine & (recordings.c.call_control_id == call_control_id)
        if conference_id is not None:
            mine = mine & (recordings.c.conference_id == conference_id)
        async with self._read() as conn:
            total = await conn.scalar(select(func.count()).select_from(recordings).where(mine))
            rows = await conn.execute(
                select(recordings)
                .where(mine)
                .order_by(recordings.c.id.desc())
                .offset(offset)
                .limit(limit)
            )
            return [_record(row) for row in rows.mappings()], int(total or 0)

    async def get_recording(self, org_id: int, recording_id: str) -> RecordingRecord | None:
        return await self._one(
            recordings.c.org_id == org_id, recordings.c.public_id == recording_id
        )

    async def recording_by_id(self, recording_id: str) -> RecordingRecord | None:
        return await self._one(recordings.c.public_id == recording_id)

    async def delete_recording(self, org_id: int, recording_id: str) -> None:
        async with self._write("the recording changed concurrently") as conn:
            result = await conn.execute(
                delete(recordings).where(
                    recordings.c.org_id == org_id, recordings.c.public_id == recording_id
                )
            )
            if result.rowcount == 0:
                raise NotFound(f"no recording with id '{recording_id}'")

    async def _one(self, *criteria: ColumnElement[bool]) -> RecordingRecord | None:
        async with self._read() as conn:
            row = (await conn.execute(select(recordings).where(*criteria))).mappings().first()
            return None if row is None else _record(row)


def _columns(record: RecordingRecord) -> dict[str, Any]:
    return {
        "public_id": record.id,
        "org_id": record.org_id,
        "call_control_id": record.call_control_id,
        "call_leg_id": record.call_leg_id,
        "call_session_id": record.call_session_id,
        "connection_id": record.connection_id,
        "from_number": record.from_,
        "to_number": record.to,
        "format": record.format,
        "channels": record.channels,
        "started_at": record.started_at,
        "ended_at": record.ended_at,
        "duration_ms": record.duration_ms,
        "path": record.path,
        "conference_id": record.conference_id,
    }


def _record(row: RowMapping) -> RecordingRecord:
    return RecordingRecord(
        id=row["public_id"],
        org_id=int(row["org_id"]),
        call_control_id=row["call_control_id"],
        call_leg_id=row["call_leg_id"],
        call_session_id=row["call_session_id"],
        connection_id=row["connection_id"],
        from_=row["from_number"],
        to=row["to_number"],
        format=row["format"],
        channels=row["channels"],
        started_at=float(row["started_at"]),
        ended_at=float(row["ended_at"]),
        duration_ms=int(row["duration_ms"]),
        path=row["path"],
        conference_id=row["conference_id"],
    )
