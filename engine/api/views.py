"""JSON shapes of platform resources, as the seed documents show them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from engine.providers.catalog import provider_by_slug
from engine.store.base import BridgeRecord, NumberRecord, OrganizationRecord, ProviderConfigRecord


def timestamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def number_view(number: NumberRecord) -> dict[str, Any]:
    return {
        "id": number.id,
        "number_id": number.number_id,
        "number": number.number,
        "state": number.state,
        "active": number.active,
        "channels_count": number.channels_count,
        "status": number.status,
    }


def credential_view(config: ProviderConfigRecord | None) -> dict[str, Any] | None:
    """The ``provider_credential`` object of seed 000."""
    if config is None:
        return None
    provider = provider_by_slug(config.provider)
    return {
        "id": config.id,
        "name": config.name,
        "provider": provider.id,
        "provider_details": {"id": provider.id, "name": provider.name, "type": provider.type},
        "active": config.active,
    }


def bridge_summary(bridge: BridgeRecord) -> dict[str, Any]:
    """A row of the bridge list."""
    return {
        "id": bridge.id,
        "name": bridge.name,
        "slug": bridge.slug,
        "status": bridge.status,
        "description": bridge.description,
    }


def bridge_view(bridge: BridgeRecord, config: ProviderConfigRecord | None) -> dict[str, Any]:
    return {
        "id": bridge.id,
        "name": bridge.name,
        "description": bridge.description,
        "status": bridge.status,
        "documents_status": bridge.documents_status,
        "slug": bridge.slug,
        "numbers": [number_view(n) for n in bridge.numbers],
        "hub": bridge.hub,
        "region": bridge.region,
        "webhook_url": bridge.webhook_url,
        "provider_credential": credential_view(config),
        "created": timestamp(bridge.created),
        "modified": timestamp(bridge.modified),
    }


def organization_view(org: OrganizationRecord) -> dict[str, Any]:
    """The organization object of seed 000. The token is never returned: only its hash is kept."""
    return {
        "logo": None,
        "account_type": "self_hosted",
        "seeking": [],
        "tags": [],
        "org_id": org.id,
        "created": timestamp(org.created),
        "modified": timestamp(org.modified),
        "name": org.name,
        "token": None,
        "domain": org.domain_handle,
        "domain_handle": org.domain_handle,
        "is_private_domain": True,
        "privacy_type": "private",
        "color": None,
        "org_type": "self_hosted",
        "status": "active",
    }


def config_view(config: ProviderConfigRecord) -> dict[str, Any]:
    """A provider configuration; the auth token is never part of it."""
    return {
        "id": config.id,
        "provider": config.provider,
        "name": config.name,
        "account_sid": config.account_sid,
        "public_key": config.public_key,
        "api_base_url": config.api_base_url,
        "active": config.active,
        "created_at": timestamp(config.created_at),
        "modified": timestamp(config.modified),
    }
