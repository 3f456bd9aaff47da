"""Each organization's webhook-signing key versions on SQLAlchemy Core: read and rotate."""

from __future__ import annotations

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.store.base import RetiredKeyRecord, SigningKeysRecord
from engine.store.rows import _require_organization
from engine.store.schema import retired_signing_keys
from engine.store.transactions import SqlTransactions

FIRST_VERSION = 1


class SqlSigningKeys(SqlTransactions):
    async def signing_keys(self, org_id: int, *, retired_since: float) -> SigningKeysRecord:
        rk = retired_signing_keys
        async with self._read() as conn:
            highest = await _highest_retired(conn, org_id)
            recent = await conn.execute(
                select(rk.c.version, rk.c.retired_at)
                .where(rk.c.org_id == org_id, rk.c.retired_at >= retired_since)
                .order_by(rk.c.version.desc())
            )
            retired = tuple(RetiredKeyRecord(int(v), float(at)) for v, at in recent)
        return SigningKeysRecord(version=_current(highest), retired=retired)

    async def rotate_signing_key(self, org_id: int, now: float) -> int:
        rk = retired_signing_keys
        # Two rotations racing on a database without SQLite's write lock both try to retire
        # the same version; the unique (org_id, version) pair turns the loser into a Conflict.
        async with self._write("the signing key was rotated concurrently; try again") as conn:
            await _require_organization(conn, org_id)
            current = _current(await _highest_retired(conn, org_id))
            await conn.execute(insert(rk).values(org_id=org_id, version=current, retired_at=now))
            return current + 1


async def _highest_retired(conn: AsyncConnection, org_id: int) -> int | None:
    rk = retired_signing_keys
    highest = await conn.scalar(select(func.max(rk.c.version)).where(rk.c.org_id == org_id))
    return None if highest is None else int(highest)


def _current(highest_retired: int | None) -> int:
    return FIRST_VERSION if highest_retired is None else highest_retired + 1
