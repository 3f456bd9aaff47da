"""The store on SQLAlchemy Core (async): SQLite by default, PostgreSQL with the same queries.

Every query here is portable Core; everything that differs between databases (connection
pragmas, how a transaction begins, the pool for an in-memory database) lives in
``open_engine``. Each public method is one transaction, and every database exception is
translated into the ``engine.errors`` tree before it leaves this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.errors import Conflict, NotFound
from engine.store.audit import SqlAudit
from engine.store.base import (
    BridgeRecord,
    OrganizationRecord,
    ProviderConfigRecord,
    Route,
)
from engine.store.live import SqlLive
from engine.store.live_recordings import SqlLiveRecordings
from engine.store.org_limits import SqlOrgLimits
from engine.store.outbox import SqlOutbox
from engine.store.recordings import SqlRecordings
from engine.store.rows import (
    _BRIDGE_UPDATABLE,
    _CONFIG_UPDATABLE,
    _bridge_where,
    _bridges_where,
    _check_page,
    _checked_changes,
    _config_where,
    _exists,
    _new_id,
    _now,
    _organization_where,
    _own_bridge,
    _own_config,
    _provider_config,
    _release_numbers,
    _require_organization,
    _touch_bridge,
)
from engine.store.schema import (
    api_tokens,
    bridges,
    number_assignments,
    organizations,
    phone_numbers,
    provider_configs,
)
from engine.store.signing_keys import SqlSigningKeys

if TYPE_CHECKING:
    from engine.store.base import Store


class SqlStore(
    SqlOutbox,
    SqlSigningKeys,
    SqlOrgLimits,
    SqlRecordings,
    SqlLive,
    SqlLiveRecordings,
    SqlAudit,
):
    """``Store`` on a SQLAlchemy async engine.

    ``url`` is a database URL or a SQLite file path (see ``normalize_database_url``);
    ``sqlite:///:memory:`` keeps everything in one connection and is meant for tests.
    ValueError for a URL SQLAlchemy cannot use. Nothing is opened before ``start()``.
    """

    # --- organizations and tokens ----------------------------------------------------------

    async def create_organization(
        self, domain_handle: str, name: str, token_sha256: str
    ) -> OrganizationRecord:
        taken = f"an organization with handle {domain_handle!r} already exists"
        async with self._write(
            f"organization {domain_handle!r} or its token already exists"
        ) as conn:
            if await _exists(conn, organizations.c.domain_handle == domain_handle):
                raise Conflict(taken, field="domain_handle")
            if await _exists(conn, api_tokens.c.token_sha256 == token_sha256):
                raise Conflict("this API token is already in use")
            now = _now()
            result = await conn.execute(
                insert(organizations).values(
                    domain_handle=domain_handle, name=name, created=now, modified=now
                )
            )
            org_id = _new_id(result)
            await conn.execute(
                insert(api_tokens).values(org_id=org_id, token_sha256=token_sha256, created=now)
            )
            return OrganizationRecord(
                id=org_id, domain_handle=domain_handle, name=name, created=now, modified=now
            )

    async def add_token(self, org_id: int, token_sha256: str) -> None:
        async with self._write("this API token is already in use") as conn:
            await _require_organization(conn, org_id)
            if await _exists(conn, api_tokens.c.token_sha256 == token_sha256):
                raise Conflict("this API token is already in use")
            await conn.execute(
                insert(api_tokens).values(org_id=org_id, token_sha256=token_sha256, created=_now())
            )

    async def organization_for_token(self, token_sha256: str) -> OrganizationRecord | None:
        async with self._read() as conn:
            return await _organization_where(
                conn,
                organizations.c.id.in_(
                    select(api_tokens.c.org_id).where(api_tokens.c.token_sha256 == token_sha256)
                ),
            )

    async def organization_by_handle(self, domain_handle: str) -> OrganizationRecord | None:
        async with self._read() as conn:
            return await _organization_where(conn, organizations.c.domain_handle == domain_handle)

    # --- provider configurations -----------------------------------------------------------

    async def create_provider_config(
        self,
        org_id: int,
        *,
        provider: str,
        name: str,
        account_sid: str,
        auth_token_ciphertext: str,
        public_key: str | None,
        api_base_url: str | None,
    ) -> ProviderConfigRecord:
        duplicate = f"a {provider} configuration for account {account_sid} already exists"
        pc = provider_configs
        async with self._write(duplicate) as conn:
            await _require_organization(conn, org_id)
            if await _exists(
                conn,
                pc.c.org_id == org_id,
                pc.c.provider == provider,
                pc.c.account_sid == account_sid,
            ):
                raise Conflict(duplicate, field="account_sid")
            now = _now()
            result = await conn.execute(
                insert(pc).values(
                    org_id=org_id,
                    provider=provider,
                    name=name,
                    account_sid=account_sid,
                    auth_token_ciphertext=auth_token_ciphertext,
                    public_key=public_key,
                    api_base_url=api_base_url,
                    active=True,
                    created_at=now,
                    modified=now,
                )
            )
            return await _own_config(conn, org_id, _new_id(result))

    async def list_provider_configs(
        self, org_id: int, *, offset: int, limit: int
    ) -> tuple[list[ProviderConfigRecord], int]:
        _check_page(offset, limit)
        pc = provider_configs
        async with self._read() as conn:
            total = await conn.scalar(
                select(func.count()).select_from(pc).where(pc.c.org_id == org_id)
            )
            query = (
                select(pc)
                .where(pc.c.org_id == org_id)
                .order_by(pc.c.id)
                .offset(offset)
                .limit(limit)
            )
            rows = (await conn.execute(query)).mappings().all()
            return [_provider_config(row) for row in rows], int(total or 0)

    async def get_provider_config(self, org_id: int, config_id: int) -> ProviderConfigRecord | None:
        async with self._read() as conn:
            return await _config_where(
                conn, provider_configs.c.org_id == org_id, provider_configs.c.id == config_id
            )

    async def update_provider_config(
        self, org_id: int, config_id: int, changes: Mapping[str, Any]
    ) -> ProviderConfigRecord:
        values = _checked_changes(changes, ProviderConfigRecord, _CONFIG_UPDATABLE)
        pc = provider_configs
        async with self._write(
            "another configuration of this organization has that provider and account_sid"
        ) as conn:
            current = await _own_config(conn, org_id, config_id)
            if not values:
                return current
            provider = values.get("provider", current.provider)
            account_sid = values.get("account_sid", current.account_sid)
            if await _exists(
                conn,
                pc.c.org_id == org_id,
                pc.c.provider == provider,
                pc.c.account_sid == account_sid,
                pc.c.id != config_id,
            ):
                raise Conflict(
                    f"a {provider} configuration for account {account_sid} already exists",
                    field="account_sid",
                )
            await conn.execute(
                update(pc).where(pc.c.id == config_id).values(**values, modified=_now())
            )
            return await _own_config(conn, org_id, config_id)

    async def delete_provider_config(self, org_id: int, config_id: int) -> None:
        async with self._write(f"provider configuration {config_id} is in use") as conn:
            await _own_config(conn, org_id, config_id)
            slug = await conn.scalar(
                select(bridges.c.slug)
                .where(bridges.c.provider_config_id == config_id)
                .order_by(bridges.c.id)
                .limit(1)
            )
            if slug is not None:
                raise Conflict(f"provider configuration {config_id} is connected to bridge {slug}")
            number = await conn.scalar(
                select(phone_numbers.c.number)
                .where(phone_numbers.c.provider_config_id == config_id)
                .order_by(phone_numbers.c.id)
                .limit(1)
            )
            if number is not None:
                raise Conflict(
                    f"provider configuration {config_id} has number {number} assigned through it"
                )
            await conn.execute(delete(provider_configs).where(provider_configs.c.id == config_id))

    # --- bridges ---------------------------------------------------------------------------

    async def create_bridge(
        self,
        org_id: int,
        *,
        slug: str,
        name: str,
        description: str,
        status: str,
        region: str,
        webhook_url: str | None,
    ) -> BridgeRecord:
        taken = f"a bridge with slug {slug!r} already exists"
        async with self._write(taken) as conn:
            await _require_organization(conn, org_id)
            if await _exists(conn, bridges.c.slug == slug):
                raise Conflict(taken, field="slug")
            now = _now()
            await conn.execute(
                insert(bridges).values(
                    org_id=org_id,
                    slug=slug,
                    name=name,
                    description=description,
                    status=status,
                    region=region,
                    webhook_url=webhook_url,
                    created=now,
                    modified=now,
                )
            )
            return await _own_bridge(conn, org_id, slug)

    async def list_bridges(
        self, org_id: int, *, status: str | None, offset: int, limit: int
    ) -> tuple[list[BridgeRecord], int]:
        _check_page(offset, limit)
        criteria = [bridges.c.org_id == org_id]
        if status is not None:
            criteria.append(bridges.c.status == status)
        async with self._read() as conn:
            total = await conn.scalar(select(func.count()).select_from(bridges).where(*criteria))
            page = await _bridges_where(
                conn,
                select(bridges).where(*criteria).order_by(bridges.c.id).offset(offset).limit(limit),
            )
            return page, int(total or 0)

    async def get_bridge(self, org_id: int, slug: str) -> BridgeRecord | None:
        async with self._read() as conn:
            return await _bridge_where(conn, bridges.c.org_id == org_id, bridges.c.slug == slug)

    async def update_bridge(
        self, org_id: int, slug: str, changes: Mapping[str, Any]
    ) -> BridgeRecord:
        values = _checked_changes(changes, BridgeRecord, _BRIDGE_UPDATABLE)
        new_slug = values.get("slug", slug)
        taken = f"a bridge with slug {new_slug!r} already exists"
        async with self._write(taken) as conn:
            current = await _own_bridge(conn, org_id, slug)
            if not values:
                return current
            if new_slug != slug and await _exists(conn, bridges.c.slug == new_slug):
                raise Conflict(taken, field="slug")
            await _touch_bridge(conn, current.id, **values)
            return await _own_bridge(conn, org_id, new_slug)

    async def delete_bridge(self, org_id: int, slug: str) -> None:
        async with self._write(f"bridge {slug} is in use") as conn:
            bridge = await _own_bridge(conn, org_id, slug)
            await _release_numbers(conn, number_assignments.c.bridge_id == bridge.id)
            await conn.execute(delete(bridges).where(bridges.c.id == bridge.id))

    # --- numbers ---------------------------------------------------------------------------

    async def connect_number(
        self,
        org_id: int,
        slug: str,
        *,
        provider_config_id: int,
        number: str,
        channels_count: int | None = None,
    ) -> BridgeRecord:
        elsewhere = f"{number} is already connected to another bridge"
        na, pn = number_assignments, phone_numbers
        # None leaves the column to its default (new rows) or to its stored value.
        capacity = {} if channels_count is None else {"channels_count": channels_count}
        async with self._write(elsewhere) as conn:
            bridge = await _own_bridge(conn, org_id, slug)
            await _own_config(conn, org_id, provider_config_id)
            held = (
                await conn.execute(
                    select(pn.c.id, pn.c.provider_config_id, na.c.bridge_id, na.c.channels_count)
                    .select_from(pn.join(na, na.c.phone_number_id == pn.c.id))
                    .where(pn.c.number == number)
                )
            ).first()
            changed = False
            if held is None:
                now = _now()
                result = await conn.execute(
                    insert(pn).values(
                        number=number,
                        org_id=org_id,
                        provider_config_id=provider_config_id,
                        created=now,
                    )
                )
                await conn.execute(
                    insert(na).values(
                        phone_number_id=_new_id(result),
                        bridge_id=bridge.id,
                        created=now,
                        **capacity,
                    )
                )
                changed = True
            elif held.bridge_id != bridge.id:
                # Same message whoever owns the other bridge: naming it would leak another
                # organization's data.
                raise Conflict(elsewhere, field="phone_number")
            else:
                changed = await _reconnect(
                    conn,
                    held.id,
                    config_ids=(held.provider_config_id, provider_config_id),
                    counts=(held.channels_count, channels_count),
                )
            if bridge.provider_config_id != provider_config_id:
                await _touch_bridge(conn, bridge.id, provider_config_id=provider_config_id)
            elif changed:
                await _touch_bridge(conn, bridge.id)
            return await _own_bridge(conn, org_id, slug)

    async def set_bridge_provider(
        self, org_id: int, slug: str, provider_config_id: int | None
    ) -> BridgeRecord:
        async with self._write(f"bridge {slug} could not be updated") as conn:
            bridge = await _own_bridge(conn, org_id, slug)
            if provider_config_id is not None:
                await _own_config(conn, org_id, provider_config_id)
            elif bridge.provider_config_id is not None:
                await _release_numbers(
                    conn,
                    number_assignments.c.bridge_id == bridge.id,
                    phone_numbers.c.provider_config_id == bridge.provider_config_id,
                )
            await _touch_bridge(conn, bridge.id, provider_config_id=provider_config_id)
            return await _own_bridge(conn, org_id, slug)

    async def disconnect_number(self, org_id: int, slug: str, number: str) -> BridgeRecord:
        async with self._write(f"{number} could not be released") as conn:
            bridge = await _own_bridge(conn, org_id, slug)
            if not any(held.number == number for held in bridge.numbers):
                raise NotFound(f"{number} is not connected to bridge {slug}", field="phone_number")
            await _release_numbers(
                conn,
                number_assignments.c.bridge_id == bridge.id,
                phone_numbers.c.number == number,
            )
            await _touch_bridge(conn, bridge.id)
            return await _own_bridge(conn, org_id, slug)

    async def route_for_number(self, number: str) -> Route | None:
        na, pn = number_assignments, phone_numbers
        async with self._read() as conn:
            held = (
                await conn.execute(
                    select(na.c.bridge_id, pn.c.provider_config_id)
                    .select_from(pn.join(na, na.c.phone_number_id == pn.c.id))
                    .where(pn.c.number == number)
                )
            ).first()
            if held is None:
                return None
            bridge = await _bridge_where(conn, bridges.c.id == held.bridge_id)
            config = await _config_where(conn, provider_configs.c.id == held.provider_config_id)
            # Foreign keys keep both present; the checks only narrow the types.
            if bridge is None or config is None:
                return None
            assignment = next(n for n in bridge.numbers if n.number == number)
            return Route(bridge=bridge, number=assignment, provider_config=config)

    # --- webhook outbox --------------------------------------------------------------------


async def _reconnect(
    conn: AsyncConnection,
    number_id: int,
    *,
    config_ids: tuple[int, int],
    counts: tuple[int, int | None],
) -> bool:
    """A number connected again to its own bridge: ``config_ids`` and ``counts`` are (stored,
    asked). Moves it to the asked configuration and sets the asked capacity, if any. Whether
    anything changed."""
    changed = False
    if config_ids[0] != config_ids[1]:
        await conn.execute(
            update(phone_numbers)
            .where(phone_numbers.c.id == number_id)
            .values(provider_config_id=config_ids[1])
        )
        changed = True
    if counts[1] is not None and counts[0] != counts[1]:
        na = number_assignments
        await conn.execute(
            update(na).where(na.c.phone_number_id == number_id).values(channels_count=counts[1])
        )
        changed = True
    return changed


if TYPE_CHECKING:
    # Checked by `mypy --strict engine`: SqlStore must keep matching the Store protocol.
    def _conforms(url: str) -> Store:
        return SqlStore(url)
