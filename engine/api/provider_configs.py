"""Provider catalog and provider configurations (seed 004).

The auth token is encrypted before it reaches the store, is never part of a response and is
never logged (``engine.logs`` masks the key even if a caller tried).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from aiohttp import web

from engine.api.auth import platform_organization
from engine.api.bridges import fails_with, private_ok
from engine.api.envelopes import platform_ok
from engine.api.keys import SECRET_BOX, STORE
from engine.api.validation import (
    digits,
    json_object,
    optional_bool,
    optional_str,
    query_int,
    required_str,
)
from engine.api.views import config_view
from engine.errors import NotFound, ValidationError
from engine.logs import get_logger
from engine.providers.catalog import CATALOG, Provider, find_provider
from engine.store.base import ProviderConfigRecord
from engine.url_policy import optional_http_url

BASE = "/api/v2/platform/telephony/providers-configurations/"
log = get_logger("callbridge.provider_configs")


def config_not_found() -> NotFound:
    return NotFound(
        "No provider configuration exists with the provided id",
        message="Provider configuration not found.",
    )


def public_key_value(body: dict[str, Any], provider: Provider) -> str | None:
    value = body.get("public_key")
    if value is None or value == "":
        return None
    if not provider.takes_public_key:
        raise ValidationError(
            f"{provider.name} configurations take no public_key", field="public_key"
        )
    if not isinstance(value, str):
        raise ValidationError("public_key must be a base64 string", field="public_key")
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("public_key must be valid base64", field="public_key") from None
    if len(raw) != 32:
        raise ValidationError(
            "public_key must be a base64 Ed25519 public key of 32 bytes", field="public_key"
        )
    return value.strip()


async def load_config(request: web.Request) -> ProviderConfigRecord:
    org = await platform_organization(request)
    config_id = digits(request.match_info["config_id"])
    # An id the store cannot hold (it keeps signed 64-bit integers) names no configuration.
    if config_id is None or not 0 < config_id < 2**63:
        raise config_not_found()
    config = await request.app[STORE].get_provider_config(org.id, config_id)
    if config is None:
        raise config_not_found()
    return config


async def list_providers(request: web.Request) -> web.StreamResponse:
    await platform_organization(request)
    data = [{"id": p.id, "name": p.name, "slug": p.slug, "type": p.type} for p in CATALOG]
    return platform_ok("Success", data, count=len(data))


@fails_with("Provider configuration creation failed.")
async def create_config(request: web.Request) -> web.StreamResponse:
    org = await platform_organization(request)
    body = await json_object(request)
    provider = find_provider(body.get("provider"))
    account_sid = required_str(body, "account_sid", missing="account_sid is required", max_len=128)
    auth_token = required_str(body, "auth_token", missing="auth_token is required", max_len=512)
    name = optional_str(body, "name", max_len=255) or f"{provider.name} {account_sid}"
    config = await request.app[STORE].create_provider_config(
        org.id,
        provider=provider.slug,
        name=name,
        account_sid=account_sid,
        auth_token_ciphertext=request.app[SECRET_BOX].encrypt(auth_token),
        public_key=public_key_value(body, provider),
        api_base_url=optional_http_url(body, "api_base_url", allow_private=private_ok(request)),
    )
    log.info("provider configuration created", config_id=config.id, provider=provider.slug)
    return platform_ok(
        "Provider configuration created successfully.", config_view(config), status=201
    )


@fails_with("Invalid request parameters")
async def list_configs(request: web.Request) -> web.StreamResponse:
    org = await platform_organization(request)
    page = query_int(request, "page", 1, lo=1, hi=1_000_000)
    page_size = query_int(request, "page_size", 20, lo=1, hi=100)
    rows, count = await request.app[STORE].list_provider_configs(
        org.id, offset=(page - 1) * page_size, limit=page_size
    )
    return platform_ok("Success", [config_view(c) for c in rows], count=count)


@fails_with("Provider configuration not found.")
async def get_config(request: web.Request) -> web.StreamResponse:
    config = await load_config(request)
    return platform_ok("Provider configuration fetched successfully.", config_view(config))


@fails_with("Provider configuration update failed.")
async def update_config(request: web.Request) -> web.StreamResponse:
    config = await load_config(request)
    body = await json_object(request, allow_empty=True)
    provider = find_provider(config.provider)
    if "provider" in body and find_provider(body["provider"]).slug != provider.slug:
        raise ValidationError(
            "provider cannot be changed; create a new configuration", field="provider"
        )
    changes: dict[str, Any] = {}
    if "name" in body:
        changes["name"] = required_str(body, "name", missing="name cannot be empty")
    if "account_sid" in body:
        changes["account_sid"] = required_str(
            body, "account_sid", missing="account_sid cannot be empty", max_len=128
        )
    if "auth_token" in body:
        token = required_str(body, "auth_token", missing="auth_token cannot be empty", max_len=512)
        changes["auth_token_ciphertext"] = request.app[SECRET_BOX].encrypt(token)
    if "public_key" in body:
        changes["public_key"] = public_key_value(body, provider)
    if "api_base_url" in body:
        changes["api_base_url"] = optional_http_url(
            body, "api_base_url", allow_private=private_ok(request)
        )
    if "active" in body:
        changes["active"] = optional_bool(body, "active")
        if changes["active"] is None:
            raise ValidationError("active must be true or false", field="active")
    if changes:
        config = await request.app[STORE].update_provider_config(config.org_id, config.id, changes)
        fields = sorted("auth_token" if k == "auth_token_ciphertext" else k for k in changes)
        log.info("provider configuration updated", config_id=config.id, fields=fields)
    return platform_ok("Provider configuration updated successfully.", config_view(config))


@fails_with("Provider configuration deletion failed.")
async def delete_config(request: web.Request) -> web.StreamResponse:
    config = await load_config(request)
    await request.app[STORE].delete_provider_config(config.org_id, config.id)
    log.info("provider configuration deleted", config_id=config.id)
    return platform_ok("Provider configuration deleted successfully.", {})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v2/platform/telephony/providers/", list_providers, allow_head=False)
    app.router.add_post(BASE, create_config)
    app.router.add_get(BASE, list_configs, allow_head=False)
    app.router.add_get(BASE + "{config_id}/", get_config, allow_head=False)
    app.router.add_patch(BASE + "{config_id}/", update_config)
    app.router.add_delete(BASE + "{config_id}/", delete_config)
