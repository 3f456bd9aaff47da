"""Platform API authentication: ``Authorization: Token <token>`` plus ``Org-Handle``.

Missing or unknown token -> 401; a handle that is not the token's organization -> 403.
``Product-ID`` is accepted and ignored (callbridge has one product per organization).
"""

from __future__ import annotations

from aiohttp import web

from engine.api.keys import STORE
from engine.crypto import token_digest
from engine.errors import AuthenticationError, PermissionDenied
from engine.store.base import OrganizationRecord, Store

ORGANIZATION = web.RequestKey("organization", OrganizationRecord)


def bearer_credentials(header: str, scheme: str) -> str:
    parts = header.split(None, 1)
    if len(parts) != 2 or parts[0].lower() != scheme.lower() or not parts[1].strip():
        raise AuthenticationError(
            f"Authorization header must be '{scheme} <token>'",
            message="Authentication credentials were not provided.",
        )
    return parts[1].strip()


async def organization_for(request: web.Request, scheme: str) -> OrganizationRecord:
    header = request.headers.get("Authorization", "")
    if not header:
        raise AuthenticationError(
            "Authorization header is missing",
            message="Authentication credentials were not provided.",
        )
    return await organization_by_token(request.app[STORE], bearer_credentials(header, scheme))


async def organization_by_token(store: Store, token: str) -> OrganizationRecord:
    """The organization owning the API token; 401 if none does (the console signs in here)."""
    org = await store.organization_for_token(token_digest(token))
    if org is None:
        raise AuthenticationError("Invalid token", message="Invalid token.")
    return org


async def platform_organization(request: web.Request) -> OrganizationRecord:
    """Authenticate a platform request and check its Org-Handle."""
    cached: OrganizationRecord | None = request.get(ORGANIZATION)
    if cached is not None:
        return cached
    org = await organization_for(request, "Token")
    handle = request.headers.get("Org-Handle", "").strip()
    if not handle:
        raise PermissionDenied("Org-Handle header is required", message="Forbidden.")
    if handle != org.domain_handle:
        raise PermissionDenied(
            "The token does not belong to the organization named by Org-Handle",
            message="Forbidden.",
        )
    request[ORGANIZATION] = org
    return org
