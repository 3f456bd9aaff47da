"""Call commands reaching a node that does not hold their leg go to the node that does
(engine/cluster/routing.py; issue 16, point 4).

A middleware inside ``error_envelopes`` (an owner that cannot be reached is answered 503 in
Telnyx's envelope) and before the rate limit and the handlers: neither runs on the forwarding
node, so the organization's request is counted once, and authenticated, by the owner. Only
``GET /v2/calls/{id}``, ``POST /v2/calls/{id}/actions/{action}`` and the client_state update
are routed; a request without ``Authorization`` is answered here (its 401, as the owner's).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from engine.api.keys import ROUTER, RUNTIME
from engine.cluster.forward import FORWARDED_BY
from engine.errors import NotFound

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ROUTED = frozenset(
    {
        "/v2/calls/{call_control_id}",
        "/v2/calls/{call_control_id}/actions/{action}",
        "/v2/calls/{call_control_id}/actions/client_state_update",
    }
)


@web.middleware
async def route_to_owner(request: web.Request, handler: Handler) -> web.StreamResponse:
    leg_id = _routed_leg(request)
    if leg_id is None or _held_here(request, leg_id):
        return await handler(request)
    router = request.app[ROUTER]
    owner = await router.elsewhere(leg_id)
    if owner is None:
        return await handler(request)
    return await router.forward(request, leg_id, owner)


def _routed_leg(request: web.Request) -> str | None:
    """The leg of a call command that may be another node's; None for any other request, one
    forwarded already (never forwarded twice: no loops), or one without credentials."""
    if request.app[ROUTER].single_node or FORWARDED_BY in request.headers:
        return None
    if "Authorization" not in request.headers:
        return None
    resource = request.match_info.route.resource
    if resource is None or resource.canonical not in ROUTED:
        return None
    return request.match_info.get("call_control_id")


def _held_here(request: web.Request, leg_id: str) -> bool:
    try:
        request.app[RUNTIME].machine.leg(leg_id)
    except NotFound:
        return False
    return True
