"""Recordings in progress in the store, so a restarted process continues them.

A row is written when a recording starts (its file opened) and deleted when it is taken to be
saved or fails; the runtime reads them all back when it adopts the calls after a restart
(``CallRuntime.adopt``). ``options`` goes through the live codec, like the machine's own state,
so a newer process reads what an older one stored.
"""

from __future__ import annotations

from sqlalchemy import delete, insert, select

from engine.machine.model import RecordingOptions
from engine.store import live_codec
from engine.store.live_records import LiveRecording
from engine.store.schema import live_recordings
from engine.store.transactions import SqlTransactions


class SqlLiveRecordings(SqlTransactions):
    async def save_live_recording(self, recording: LiveRecording) -> None:
        table = live_recordings
        async with self._write("the recording in progress changed concurrently") as conn:
            # Delete-then-insert: an upsert spelled portably (as in engine.store.live).
            await conn.execute(delete(table).where(table.c.recording_id == recording.recording_id))
            await conn.execute(
                insert(table).values(
                    recording_id=recording.recording_id,
                    call_control_id=recording.call_control_id,
                    org_id=recording.org_id,
                    path=recording.path,
                    options=live_codec.dumps(recording.options).decode(),
                    started_at=recording.started_at,
                )
            )

    async def delete_live_recording(self, recording_id: str) -> None:
        table = live_recordings
        async with self._write("the recording in progress changed concurrently") as conn:
            await conn.execute(delete(table).where(table.c.recording_id == recording_id))

    async def load_live_recordings(self) -> list[LiveRecording]:
        async with self._read() as conn:
            rows = await conn.execute(select(live_recordings))
            return [
                LiveRecording(
                    recording_id=row.recording_id,
                    call_control_id=row.call_control_id,
                    org_id=int(row.org_id),
                    path=row.path,
                    options=live_codec.loads(RecordingOptions, row.options),
                    started_at=float(row.started_at),
                )
                for row in rows
            ]
