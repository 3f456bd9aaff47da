"""The API request rate per organization (engine/admission/limits.py), as a middleware; and dial's
check of the organization's live legs.

Both API families are limited, keyed by the organization that owns the request's token (any of
its tokens share one bucket); a request without a known token passes on to its handler, which
answers 401. Ops endpoints, provider webhooks and media streams are not limited here: they
carry no organization's token, and refusing a provider's webhook would lose call events.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from engine.admission.limits import LEGS_RETRY_AFTER_S, OrgRateLimiter, TooManyRequests, limits_for
from engine.admission.live import Claim, LiveLegsUnavailable
from engine.api.keys import ADMISSION, LIVE_LEGS, RUNTIME, SETTINGS, STORE
from engine.crypto import token_digest
from engine.logs import get_logger
from engine.machine.commands import Dial
from engine.machine.machine import DialResult

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RATE_LIMITER = web.AppKey("org_rate_limiter", OrgRateLimiter)
LIMITED_PREFIXES = ("/api/v2/platform/", "/v2/")
log = get_logger("callbridge.limits")


async def _token_organization(request: web.Request) -> int | None:
    """The id of the organization whose token the request carries, if it carries one."""
    parts = request.headers.get("Authorization", "").split(None, 1)
    if len(parts) != 2 or not parts[1].strip():
        return None
    org = await request.app[STORE].organization_for_token(token_digest(parts[1].strip()))
    return None if org is None else org.id


@web.middleware
async def org_rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Spend one of the organization's requests; over its rate, 429 (``TooManyRequests``,
    answered in the path's envelope with ``Retry-After`` by ``error_envelopes``)."""
    if request.path.startswith(LIMITED_PREFIXES):
        org_id = await _token_organization(request)
        if org_id is not None:
            app = request.app
            limits = await limits_for(app[STORE], app[SETTINGS], org_id)
            try:
                app[RATE_LIMITER].check(org_id, limits)
            except TooManyRequests as exc:
                log.info("organization over its API rate", org_id=org_id, path=request.path,
                         retry_after_s=round(exc.retry_after_s, 3))  # fmt: skip
                raise
    return await handler(request)


async def dial_within_limit(
    request: web.Request, org_id: int, command: Dial, *, default_webhook_url: str | None
) -> DialResult:
    """Place the dial unless the organization already has its ``max_legs`` live: then 429
    (Telnyx's 10011) with ``Retry-After``; 429 too when the live legs cannot be counted (the
    live-leg registry unreachable). The new leg counts until the runtime ends it."""
    app = request.app
    live = app[LIVE_LEGS]
    max_legs = (await limits_for(app[STORE], app[SETTINGS], org_id)).max_legs
    # A placeholder claims the slot, checked and counted in one step (on every node), and
    # holds it while the gateway is resolved and the leg is created.
    placeholder = f"dialling:{uuid.uuid4().hex}"
    try:
        over = await live.claim(placeholder, Claim(org_id, max_legs))
    except LiveLegsUnavailable as exc:
        log.warning("dial refused: live legs cannot be counted", org_id=org_id, error=exc.detail)
        app[ADMISSION].refused("live_legs_unavailable")
        raise TooManyRequests(exc.detail, retry_after_s=LEGS_RETRY_AFTER_S) from exc
    if over is not None:
        log.info("dial over the organization's leg limit", org_id=org_id, max_legs=max_legs)
        raise TooManyRequests(
            f"the organization already has {max_legs} live leg(s), its limit",
            retry_after_s=LEGS_RETRY_AFTER_S,
        )
    runtime = app[RUNTIME]
    try:
        result = await runtime.dial(org_id, command, default_webhook_url=default_webhook_url)
    except BaseException:
        live.release(placeholder)
        raise
    leg = runtime.machine.leg(result.leg.call_control_id)
    # A repeated dial is the first one's leg, counted already; a leg that ended while being
    # placed has been released and must not be counted again. Otherwise the leg takes the
    # placeholder's slot, in one step.
    if not result.duplicate and leg.ended_at is None:
        live.hold(leg.call_control_id, org_id=org_id, replaces=placeholder)
        # Written before the reply: a command on the new leg sent to another node finds
        # this node its owner (engine/cluster/). Best effort: never fails the dial.
        await live.flush()
    else:
        live.release(placeholder)
    return result
