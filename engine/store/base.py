"""The store interface: everything callbridge keeps across restarts.

One small async interface that the SQLite implementation (``engine.store.sql``) satisfies today
and a PostgreSQL one can satisfy later. Every method is one transaction: it either applies all
of its change or none. Records are frozen dataclasses; the store never returns ORM objects.

Secrets arrive here already encrypted (``auth_token_ciphertext``); the store never sees a
plaintext provider secret and never logs one. API tokens arrive as their SHA-256 hex digest.

Tenancy is enforced here too: every read or write of a bridge or configuration names the
organization, and a row of another organization is simply not found (``None`` / ``NotFound``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class OrganizationRecord:
    id: int
    domain_handle: str
    name: str
    created: datetime
    modified: datetime


@dataclass(frozen=True, slots=True)
class ProviderConfigRecord:
    id: int
    org_id: int
    provider: str  # catalog slug: "twilio" | "telnyx"
    name: str
    account_sid: str
    auth_token_ciphertext: str
    public_key: str | None
    api_base_url: str | None
    active: bool
    created_at: datetime
    modified: datetime


@dataclass(frozen=True, slots=True)
class NumberRecord:
    """A phone number assigned to a bridge (the seed's number object)."""

    id: int  # the assignment id
    number_id: int  # the phone number's own id
    number: str  # E.164
    bridge_id: int
    provider_config_id: int
    state: str  # "ASSIGNED"
    active: bool
    channels_count: int
    status: str  # "active"
    created: datetime


@dataclass(frozen=True, slots=True)
class BridgeRecord:
    id: int
    org_id: int
    slug: str
    name: str
    description: str
    status: str  # ACTIVE | DRAFT | INACTIVE
    documents_status: str
    hub: int
    region: str
    webhook_url: str | None
    provider_config_id: int | None  # the connected configuration, if any
    numbers: tuple[NumberRecord, ...]
    created: datetime
    modified: datetime


@dataclass(frozen=True, slots=True)
class Route:
    """What inbound routing needs for one dialled number."""

    bridge: BridgeRecord
    number: NumberRecord
    provider_config: ProviderConfigRecord


class Store(Protocol):
    """Persistence for organizations, tokens, provider configurations, bridges and numbers.

    Errors: ``engine.errors.Conflict`` for uniqueness and in-use violations, ``NotFound`` for
    a missing row on a write, ``StorageError`` when the database itself fails.
    """

    async def start(self) -> None:
        """Open the database, create or migrate the schema."""

    async def close(self) -> None: ...

    # organizations and tokens
    async def create_organization(
        self, domain_handle: str, name: str, token_sha256: str
    ) -> OrganizationRecord:
        """Create an organization with its first API token. Conflict if the handle exists."""

    async def add_token(self, org_id: int, token_sha256: str) -> None: ...

    async def organization_for_token(self, token_sha256: str) -> OrganizationRecord | None: ...

    async def organization_by_handle(self, domain_handle: str) -> OrganizationRecord | None: ...

    # provider configurations
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
        """Conflict if this organization already has (provider, account_sid)."""

    async def list_provider_configs(
        self, org_id: int, *, offset: int, limit: int
    ) -> tuple[list[ProviderConfigRecord], int]:
        """One page, ordered by id, and the total count."""

    async def get_provider_config(
        self, org_id: int, config_id: int
    ) -> ProviderConfigRecord | None: ...

    async def update_provider_config(
        self, org_id: int, config_id: int, changes: Mapping[str, Any]
    ) -> ProviderConfigRecord:
        """Apply the given column changes (names as in the record). NotFound / Conflict."""

    async def delete_provider_config(self, org_id: int, config_id: int) -> None:
        """NotFound if absent; Conflict if a bridge or a number uses it."""

    # bridges
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
        """Conflict if the slug exists (the caller retries with another suffix)."""

    async def list_bridges(
        self, org_id: int, *, status: str | None, offset: int, limit: int
    ) -> tuple[list[BridgeRecord], int]: ...

    async def get_bridge(self, org_id: int, slug: str) -> BridgeRecord | None: ...

    async def update_bridge(
        self, org_id: int, slug: str, changes: Mapping[str, Any]
    ) -> BridgeRecord: ...

    async def delete_bridge(self, org_id: int, slug: str) -> None:
        """Delete the bridge and release its numbers. NotFound if absent."""

    # numbers
    async def connect_number(
        self, org_id: int, slug: str, *, provider_config_id: int, number: str
    ) -> BridgeRecord:
        """Assign ``number`` to the bridge through the configuration and mark the configuration
        connected to the bridge. Conflict if the number is on another bridge (any organization).
        Connecting the same number to the same bridge again is a no-op."""

    async def set_bridge_provider(
        self, org_id: int, slug: str, provider_config_id: int | None
    ) -> BridgeRecord:
        """The older seed shape: connect (or, with None, disconnect) a configuration with no
        number. Disconnecting also releases the numbers assigned through that configuration."""

    async def disconnect_number(self, org_id: int, slug: str, number: str) -> BridgeRecord:
        """Release the number; NotFound if it is not on this bridge. When the bridge has no
        number left through its configuration, the configuration stays connected."""

    async def route_for_number(self, number: str) -> Route | None:
        """Inbound routing: the bridge, assignment and configuration of a dialled number."""
