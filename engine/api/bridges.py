"""Bridges API (seed 000, 001, 002): create, list, get, update, delete, connect numbers."""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from engine.api.auth import platform_organization
from engine.api.envelopes import FAILURE_MESSAGE, platform_ok
from engine.api.keys import LIVE_LEGS, PROVISIONER, SECRET_BOX, SETTINGS, STORE
from engine.api.validation import (
    e164,
    int_id,
    json_object,
    optional_count,
    optional_str,
    query_int,
    required_str,
)
from engine.api.views import bridge_summary, bridge_view, credential_view, organization_view
from engine.errors import Conflict, NotFound, ValidationError
from engine.logs import get_logger
from engine.store.base import BridgeRecord, ProviderConfigRecord
from engine.url_policy import optional_http_url

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STATUSES = ("ACTIVE", "DRAFT", "INACTIVE")
# A number's channels_count is stored in an INTEGER column: 32-bit signed on PostgreSQL.
MAX_CHANNELS = 2**31 - 1
BASE = "/api/v2/platform/telephony/bridges/"
log = get_logger("callbridge.bridges")


def fails_with(message: str) -> Callable[[Handler], Handler]:
    """Name the headline the error envelope shows when this handler refuses a request."""

    def wrap(handler: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            request[FAILURE_MESSAGE] = message
            return await handler(request)

        wrapped.__name__ = handler.__name__
        wrapped.__doc__ = handler.__doc__
        return wrapped

    return wrap


def private_ok(request: web.Request) -> bool:
    """Whether tenant-given URLs may reach private addresses (engine/url_policy.py)."""
    return request.app[SETTINGS].allow_private_urls


def bridge_not_found() -> NotFound:
    return NotFound("No bridge exists with the provided slug", message="Bridge not found.")


def slugify(name: str) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-")
    return base or "bridge"


def slug_suffix() -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def status_value(body: dict[str, Any], default: str | None) -> str | None:
    status = body.get("status")
    if status is None:
        return default
    # ASCII only: str.upper() makes "ACTIVE" of "actıve" (dotless i), which no schema allows.
    if not isinstance(status, str) or not status.isascii() or status.upper() not in STATUSES:
        raise ValidationError("Invalid status value", field="status")
    return status.upper()


async def load_bridge(request: web.Request) -> BridgeRecord:
    org = await platform_organization(request)
    bridge = await request.app[STORE].get_bridge(org.id, request.match_info["slug"])
    if bridge is None:
        raise bridge_not_found()
    return bridge


async def connected_config(
    request: web.Request, bridge: BridgeRecord
) -> ProviderConfigRecord | None:
    if bridge.provider_config_id is None:
        return None
    return await request.app[STORE].get_provider_config(bridge.org_id, bridge.provider_config_id)


@fails_with("Bridge creation failed.")
async def create_bridge(request: web.Request) -> web.StreamResponse:
    org = await platform_organization(request)
    body = await json_object(request)
    name = required_str(body, "name", missing="Name is required")
    fields = {
        "name": name,
        "description": optional_str(body, "description", max_len=2000, default="") or "",
        "status": status_value(body, "ACTIVE") or "ACTIVE",
        "region": optional_str(body, "region", max_len=16, default="US") or "US",
        "webhook_url": optional_http_url(body, "webhook_url", allow_private=private_ok(request)),
    }
    store = request.app[STORE]
    for _attempt in range(5):
        try:
            slug = f"{slugify(name)}-{slug_suffix()}"
            bridge = await store.create_bridge(org.id, slug=slug, **fields)  # type: ignore[arg-type]
            break
        except Conflict:
            continue  # a random suffix collided; draw another
    else:
        raise Conflict("Could not allocate a unique slug; try again")
    log.info("bridge created", slug=bridge.slug, org_id=org.id)
    data = {**bridge_view(bridge, None), "organization": organization_view(org)}
    return platform_ok("Bridge created successfully.", data, status=201)


@fails_with("Invalid request parameters")
async def list_bridges(request: web.Request) -> web.StreamResponse:
    org = await platform_organization(request)
    page = query_int(request, "page", 1, lo=1, hi=1_000_000)
    page_size = query_int(request, "page_size", 20, lo=1, hi=100)
    status = request.query.get("status")
    if status is not None and (not status.isascii() or status.upper() not in STATUSES):
        raise ValidationError("status must be one of ACTIVE, DRAFT, INACTIVE", field="status")
    rows, count = await request.app[STORE].list_bridges(
        org.id,
        status=status.upper() if status else None,
        offset=(page - 1) * page_size,
        limit=page_size,
    )
    return platform_ok("Success", [bridge_summary(b) for b in rows], count=count)


@fails_with("Bridge not found.")
async def get_bridge(request: web.Request) -> web.StreamResponse:
    bridge = await load_bridge(request)
    config = await connected_config(request, bridge)
    return platform_ok("Bridge fetched successfully.", bridge_view(bridge, config))


@fails_with("Bridge update failed.")
async def update_bridge(request: web.Request) -> web.StreamResponse:
    bridge = await load_bridge(request)
    body = await json_object(request, allow_empty=True)
    changes: dict[str, Any] = {}
    if "name" in body:
        changes["name"] = required_str(body, "name", missing="Name cannot be empty")
    if "description" in body:
        changes["description"] = optional_str(body, "description", max_len=2000) or ""
    if "region" in body:
        changes["region"] = required_str(
            body, "region", missing="Region cannot be empty", max_len=16
        )
    if "webhook_url" in body:
        changes["webhook_url"] = optional_http_url(
            body, "webhook_url", allow_private=private_ok(request)
        )
    if "status" in body:
        changes["status"] = status_value(body, None)
        if changes["status"] is None:
            raise ValidationError("Invalid status value", field="status")
    if changes:
        bridge = await request.app[STORE].update_bridge(bridge.org_id, bridge.slug, changes)
        log.info("bridge updated", slug=bridge.slug, fields=sorted(changes))
    config = await connected_config(request, bridge)
    return platform_ok("Bridge updated successfully.", bridge_view(bridge, config))


@fails_with("Bridge deletion failed.")
async def delete_bridge(request: web.Request) -> web.StreamResponse:
    bridge = await load_bridge(request)
    live = await request.app[LIVE_LEGS].count_for_bridge(bridge.id)  # 503 if unknown
    if live:
        raise Conflict(f"Bridge has {live} live call leg(s); hang them up before deleting it")
    await request.app[STORE].delete_bridge(bridge.org_id, bridge.slug)
    log.info("bridge deleted", slug=bridge.slug, released_numbers=len(bridge.numbers))
    return platform_ok("Bridge deleted successfully.", {})


CONFIG_ID_FIELDS = ("provider_config_id", "provider_credential_id")


def config_id_from(body: dict[str, Any]) -> tuple[int | None, str]:
    """The configuration id of either seed shape, and the field that carried it. Both fields
    given are both checked (neither is accepted and ignored) and must name one configuration."""
    given = [(int_id(body[f], f), f) for f in CONFIG_ID_FIELDS if body.get(f) is not None]
    if not given:
        return None, CONFIG_ID_FIELDS[0]
    if len({config_id for config_id, _ in given}) > 1:
        raise ValidationError(
            "provider_config_id and provider_credential_id name different configurations; "
            "give one of them",
            field=given[1][1],
        )
    return given[0]


def connection_data(
    bridge: BridgeRecord, config: ProviderConfigRecord | None, message: str, number: str | None
) -> dict[str, Any]:
    """A superset of both seed shapes: seed 001/002's fields and seed 000's bridge fields, and
    the connected number's ``channels_count`` (what it holds now, given or kept)."""
    data: dict[str, Any] = {
        "message": message,
        "bridge_slug": bridge.slug,
        "id": bridge.id,
        "name": bridge.name,
        "slug": bridge.slug,
        "provider_credential": credential_view(config),
    }
    if number is not None:
        data["phone_number"] = number
        held = next((n for n in bridge.numbers if n.number == number), None)
        if held is not None:
            data["channels_count"] = held.channels_count
    return data


@fails_with("Failed to connect provider.")
async def connect_provider(request: web.Request) -> web.StreamResponse:
    bridge = await load_bridge(request)
    body = await json_object(request)
    config_id, _field = config_id_from(body)
    number = e164(body["phone_number"]) if body.get("phone_number") is not None else None
    channels = optional_count(body, "channels_count", hi=MAX_CHANNELS)
    if config_id is None:
        raise ValidationError("provider_config_id is required", field="provider_config_id")
    if channels is not None and number is None:
        # The capacity belongs to a number; with none named it would be accepted and ignored.
        raise ValidationError(
            "channels_count is a number's capacity: give the phone_number it applies to",
            field="channels_count",
        )
    store = request.app[STORE]
    config = await store.get_provider_config(bridge.org_id, config_id)
    if config is None or not config.active:
        raise ValidationError("Provider credential not found or inactive", field=_field)
    if number is None:
        bridge = await store.set_bridge_provider(bridge.org_id, bridge.slug, config.id)
    else:
        bridge = await attach_number(request, bridge, config, number, channels)
    log.info(
        "provider connected",
        slug=bridge.slug,
        config_id=config.id,
        number=number,
        channels_count=channels,
    )
    data = connection_data(bridge, config, "Provider connected successfully", number)
    return platform_ok("Provider connected to bridge successfully.", data)


async def attach_number(
    request: web.Request,
    bridge: BridgeRecord,
    config: ProviderConfigRecord,
    number: str,
    channels: int | None,
) -> BridgeRecord:
    store = request.app[STORE]
    route = await store.route_for_number(number)
    if route is not None and route.bridge.id != bridge.id:
        raise ValidationError(
            "Phone number is already connected to another bridge", field="phone_number"
        )
    auth_token = request.app[SECRET_BOX].decrypt(config.auth_token_ciphertext)
    await request.app[PROVISIONER].attach(config, auth_token, number, bridge)
    try:
        return await store.connect_number(
            bridge.org_id,
            bridge.slug,
            provider_config_id=config.id,
            number=number,
            channels_count=channels,
        )
    except Conflict:
        await request.app[PROVISIONER].detach(config, auth_token, number)
        raise ValidationError(
            "Phone number is already connected to another bridge", field="phone_number"
        ) from None


@fails_with("Failed to disconnect provider.")
async def disconnect_provider(request: web.Request) -> web.StreamResponse:
    bridge = await load_bridge(request)
    body = await json_object(request)
    store = request.app[STORE]
    config_id, field = config_id_from(body)
    if body.get("phone_number") is not None:
        number = e164(body["phone_number"])
        assigned = next((n for n in bridge.numbers if n.number == number), None)
        if assigned is None:
            raise ValidationError(
                "Phone number is not connected to this bridge", field="phone_number"
            )
        if config_id is not None and config_id != assigned.provider_config_id:
            raise ValidationError(
                "Phone number is connected through another provider configuration", field=field
            )
        config = await store.get_provider_config(bridge.org_id, assigned.provider_config_id)
        if config is not None:
            auth_token = request.app[SECRET_BOX].decrypt(config.auth_token_ciphertext)
            await request.app[PROVISIONER].detach(config, auth_token, number)
        bridge = await store.disconnect_number(bridge.org_id, bridge.slug, number)
        log.info("number disconnected", slug=bridge.slug, number=number)
        data = connection_data(
            bridge,
            await connected_config(request, bridge),
            "Provider disconnected successfully",
            None,
        )
        return platform_ok("Provider disconnected from bridge successfully.", data)
    if config_id is None:
        raise ValidationError(
            "phone_number or provider_credential_id is required", field="phone_number"
        )
    if bridge.provider_config_id != config_id:
        raise ValidationError("Provider is not connected to this bridge", field=field)
    bridge = await store.set_bridge_provider(bridge.org_id, bridge.slug, None)
    log.info("provider disconnected", slug=bridge.slug, config_id=config_id)
    data = connection_data(bridge, None, "Provider disconnected successfully", None)
    return platform_ok("Provider disconnected from bridge successfully.", data)


def add_routes(app: web.Application) -> None:
    app.router.add_post(BASE, create_bridge)
    app.router.add_get(BASE, list_bridges, allow_head=False)
    app.router.add_get(BASE + "{slug}/", get_bridge, allow_head=False)
    app.router.add_patch(BASE + "{slug}/", update_bridge)
    app.router.add_delete(BASE + "{slug}/", delete_bridge)
    app.router.add_post(BASE + "{slug}/connect-provider/", connect_provider)
    app.router.add_post(BASE + "{slug}/disconnect-provider/", disconnect_provider)
