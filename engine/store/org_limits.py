"""Each organization's overrides of the default limits on SQLAlchemy Core: read and replace."""

from __future__ import annotations

from sqlalchemy import delete, insert, select

from engine.store.base import OrgLimitsRecord
from engine.store.rows import _require_organization
from engine.store.schema import org_limits
from engine.store.transactions import SqlTransactions


class SqlOrgLimits(SqlTransactions):
    async def org_limits(self, org_id: int) -> OrgLimitsRecord:
        ol = org_limits
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(ol.c.max_legs, ol.c.api_rate, ol.c.api_burst).where(
                        ol.c.org_id == org_id
                    )
                )
            ).first()
        if row is None:
            return OrgLimitsRecord()
        max_legs, api_rate, api_burst = row
        return OrgLimitsRecord(
            max_legs=None if max_legs is None else int(max_legs),
            api_rate=None if api_rate is None else float(api_rate),
            api_burst=None if api_burst is None else int(api_burst),
        )

    async def set_org_limits(self, org_id: int, limits: OrgLimitsRecord) -> None:
        ol = org_limits
        # Delete and insert in one transaction: portable, where an upsert is not.
        async with self._write("the limits were changed concurrently; try again") as conn:
            await _require_organization(conn, org_id)
            await conn.execute(delete(ol).where(ol.c.org_id == org_id))
            await conn.execute(
                insert(ol).values(
                    org_id=org_id,
                    max_legs=limits.max_legs,
                    api_rate=limits.api_rate,
                    api_burst=limits.api_burst,
                )
            )
