"""The console's audit log on SQLAlchemy Core: keep an entry, read an organization's newest."""

from __future__ import annotations

from sqlalchemy import insert, select

from engine.store.audit_log import AuditRecord
from engine.store.rows import _new_id, _require_organization
from engine.store.schema import api_tokens, console_audit
from engine.store.transactions import SqlTransactions


class SqlAudit(SqlTransactions):
    async def api_token_id(self, token_sha256: str) -> int | None:
        async with self._read() as conn:
            found = await conn.scalar(
                select(api_tokens.c.id).where(api_tokens.c.token_sha256 == token_sha256)
            )
        return None if found is None else int(found)

    async def add_audit_entry(self, entry: AuditRecord) -> int:
        async with self._write("the audit entry could not be added") as conn:
            await _require_organization(conn, entry.org_id)
            result = await conn.execute(
                insert(console_audit).values(
                    org_id=entry.org_id,
                    token_id=entry.token_id,
                    action=entry.action,
                    call_control_id=entry.call_control_id,
                    body=entry.body,
                    outcome=entry.outcome,
                    at=entry.at,
                )
            )
            return _new_id(result)

    async def audit_entries(self, org_id: int, limit: int) -> list[AuditRecord]:
        ca = console_audit
        async with self._read() as conn:
            rows = await conn.execute(
                select(ca).where(ca.c.org_id == org_id).order_by(ca.c.id.desc()).limit(limit)
            )
            return [
                AuditRecord(
                    id=int(row.id),
                    org_id=int(row.org_id),
                    token_id=int(row.token_id),
                    action=str(row.action),
                    call_control_id=str(row.call_control_id),
                    body=str(row.body),
                    outcome=str(row.outcome),
                    at=float(row.at),
                )
                for row in rows
            ]
