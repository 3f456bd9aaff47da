"""The organization's webhook-signing keys on the Call Control API.

``GET /v2/public_key`` (Bearer token) answers Telnyx's shape, ``{"data": {"public_key"}}``, with
the key that signs the organization's webhooks now; ``keys`` (callbridge's addition) lists it
together with the keys a rotation replaced, each published until its ``valid_until``.
``POST /v2/public_key/actions/rotate`` (callbridge's extension) makes a new key current and
answers the same document.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from engine.api.auth import organization_for
from engine.api.envelopes import json_response
from engine.api.keys import SIGNING_KEYS
from engine.logs import get_logger
from engine.webhooks.outbox import occurred_at
from engine.webhooks.signing import PublishedKey

log = get_logger("callbridge.api.keys")


def key_view(key: PublishedKey) -> dict[str, Any]:
    return {
        "version": key.version,
        "public_key": key.public_key,
        "status": "current" if key.retired_at is None else "retired",
        "retired_at": None if key.retired_at is None else occurred_at(key.retired_at),
        "valid_until": None if key.valid_until is None else occurred_at(key.valid_until),
    }


def keys_document(keys: list[PublishedKey]) -> dict[str, Any]:
    current = keys[0]  # OrgSigningKeys lists the current key first
    return {"data": {"public_key": current.public_key, "keys": [key_view(k) for k in keys]}}


async def public_key(request: web.Request) -> web.StreamResponse:
    org = await organization_for(request, "Bearer")
    return json_response(keys_document(await request.app[SIGNING_KEYS].published(org.id)))


async def rotate(request: web.Request) -> web.StreamResponse:
    org = await organization_for(request, "Bearer")
    keys = await request.app[SIGNING_KEYS].rotate(org.id)
    log.info("webhook signing key rotated", org_id=org.id, version=keys[0].version)
    return json_response(keys_document(keys))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v2/public_key", public_key, allow_head=False)
    app.router.add_post("/v2/public_key/actions/rotate", rotate)
