"""Provider webhooks reaching a node that does not hold their call go to the node that does
(issue 16, point 4: "a command or provider webhook that reaches a node that does not own the
leg is carried out by the owner, with the same reply and the same webhooks as on one node").

Each adapter wraps its webhook routes with ``to_owner``, giving a ``locate`` that reads what a
request names without trusting it: the leg (in the URL callbridge gave the provider for a
dialled call) or the provider call (``provider_call``: its key is written with the leg's claim,
engine/admission/live_scripts.py), and None for a call this node holds or a request it answers
anyway (malformed, a new inbound call: taken where it lands, that node becomes the owner). The
request goes raw to the owner (body bytes, the provider's signature headers, ``Content-Type``),
which verifies the signature itself, as on one node, and its reply (TwiML, status) comes back
unchanged. The forwarding node never verifies and never changes anything.

An owner that is not alive, or cannot be reached: 503 with a plain-text reason, logged, for
the provider to try again. Redis unreachable (no owner can be looked up): answered here, as on
one node (a new call is refused busy by its admission, which cannot count it either).
Telnyx sends a webhook that did not get a 2xx to the connection's failover URL (callbridge's,
set at connect; developers.telnyx.com/docs/voice/programmable-voice/receiving-webhooks);
Twilio fetches a failed voice webhook's fallback URL and retries a status callback only when
its URL asks for it (connection overrides, twilio.com/docs/usage/webhooks/
webhooks-connection-overrides). By then a node may have adopted the call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

from aiohttp import web

from engine.api.keys import ROUTER, STORE
from engine.cluster.forward import FORWARDED_BY, WEBHOOK_HEADERS
from engine.cluster.owners import Owner, OwnersUnavailable, OwnerUnreachable
from engine.errors import CallbridgeError
from engine.logs import get_logger

log = get_logger("callbridge.cluster")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """What a provider webhook names: its leg, else its provider call."""

    leg_id: str | None = None
    call: str | None = None
    # The number a new incoming call dialled: a bridge without webhook_url answers it into
    # its conference, whose room is on the node holding the bridge's live legs.
    number: str | None = None


Locate = Callable[[web.Request], Awaitable[WebhookTarget | None]]


def to_owner(handler: Handler, locate: Locate, signed_by: Collection[str]) -> Handler:
    """``handler`` where the webhook's call is this node's (or no node's), else the owner's
    answer; ``signed_by``: the provider's signature headers, carried to the owner."""
    carried = (*WEBHOOK_HEADERS, *signed_by)

    async def routed(request: web.Request) -> web.StreamResponse:
        router = request.app[ROUTER]
        if router.single_node or FORWARDED_BY in request.headers:
            return await handler(request)  # one node, or forwarded already: never twice
        target = await locate(request)
        if target is None:
            return await handler(request)
        try:
            found = await _owner(request, target)
        except OwnersUnavailable as exc:
            # Redis unreachable: answered as on one node (a new call is refused busy by its
            # admission, which cannot count it either; another node's call is unknown here).
            log.warning("provider webhook answered here: its owner cannot be looked up",
                        path=request.path, call=target.call, leg_id=target.leg_id,
                        reason=exc.detail)  # fmt: skip
            return await handler(request)
        except OwnerUnreachable as exc:
            return _retry(request, target, exc)
        if found is None:
            return await handler(request)
        try:
            return await router.forward(request, found[0], found[1], carried)
        except OwnerUnreachable as exc:
            return _retry(request, target, exc)

    return routed


def _retry(request: web.Request, target: WebhookTarget, exc: OwnerUnreachable) -> web.Response:
    log.warning("provider webhook answered 503 for its provider to retry", path=request.path,
                leg_id=target.leg_id, call=target.call, reason=exc.detail)  # fmt: skip
    return web.Response(status=503, text=exc.detail)


async def _owner(request: web.Request, target: WebhookTarget) -> tuple[str, Owner] | None:
    router = request.app[ROUTER]
    if target.leg_id is not None:
        owner = await router.elsewhere(target.leg_id)
        return None if owner is None else (target.leg_id, owner)
    if target.call is not None:
        found = await router.call_elsewhere(target.call)
        if found is not None or target.number is None:
            return found
        return await _conference_node(request, target.number)
    return None


async def _conference_node(request: web.Request, number: str) -> tuple[str, Owner] | None:
    """For a new call to ``number``: the node of its bridge's conference room, when the bridge
    routes calls there (no webhook_url) and another node holds its live legs (all in that
    room). None to take the call here (the store unreachable too: its admission refuses it)."""
    try:
        route = await request.app[STORE].route_for_number(number)
    except CallbridgeError:
        return None
    if route is None or route.bridge.webhook_url is not None:
        return None
    return await request.app[ROUTER].bridge_elsewhere(route.bridge.id)
