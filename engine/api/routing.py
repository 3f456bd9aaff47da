"""Call and conference commands reaching a node that does not hold their leg go to the node
that does (engine/cluster/routing.py; issue 16, point 4).

A middleware inside ``error_envelopes`` (an owner that cannot be reached is answered 503 in
Telnyx's envelope) and before the rate limit and the handlers: neither runs on the forwarding
node, so the organization's request is counted once, and authenticated, by the owner. Routed:
``GET /v2/calls/{id}``, ``POST /v2/calls/{id}/actions/{action}`` and the client_state update
(by the leg); ``POST /v2/conferences`` (by the body's ``call_control_id``, the leg that creates
it); ``POST /v2/calls`` naming a live leg (``supervise_call_control_id`` or ``link_to``: the
new leg joins it, so it is placed where that leg is); a conference's GET, participants and
actions (by its creator, read from the stored conference record when this node does not keep
it: the creator's owner made the conference's room and holds it; a creator that ended on a node
since gone, by a member of its stored room). A request without
``Authorization`` is answered here (its 401, as the owner's).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from engine.api.keys import ROUTER, RUNTIME, STORE
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
CONFERENCE_ROUTED = frozenset(
    {
        "/v2/conferences/{conference_id}",
        "/v2/conferences/{conference_id}/participants",
        "/v2/conferences/{conference_id}/participants/{participant_id}",
        "/v2/conferences/{conference_id}/actions/{action}",
    }
)
CONFERENCES = "/v2/conferences"
CALLS = "/v2/calls"


@web.middleware
async def route_to_owner(request: web.Request, handler: Handler) -> web.StreamResponse:
    leg_id = await _routed_leg(request)
    if leg_id is None or held_here(request, leg_id):
        return await handler(request)
    router = request.app[ROUTER]
    owner = await router.elsewhere(leg_id)
    if owner is None:
        return await handler(request)
    return await router.forward(request, leg_id, owner)


async def _routed_leg(request: web.Request) -> str | None:
    """The leg of a call or conference command that may be another node's; None for any other
    request, one forwarded already (never forwarded twice: no loops), or one without
    credentials."""
    if request.app[ROUTER].single_node or FORWARDED_BY in request.headers:
        return None
    if "Authorization" not in request.headers:
        return None
    resource = request.match_info.route.resource
    canonical = None if resource is None else resource.canonical
    if canonical in ROUTED:
        return request.match_info.get("call_control_id")
    if canonical in CONFERENCE_ROUTED:
        return await _creator(request, request.match_info["conference_id"])
    if canonical == CONFERENCES and request.method == "POST":
        return await body_leg(request, "call_control_id")
    if canonical == CALLS and request.method == "POST":
        # A dial tied to a live leg (transfer's link_to, a supervisor) is placed by that leg's
        # node, so the new leg is born where the leg it joins lives.
        return await body_leg(request, "supervise_call_control_id") or await body_leg(
            request, "link_to"
        )
    return None


async def _creator(request: web.Request, conference_id: str) -> str | None:
    """The leg that created a conference this node does not keep (None: answered here, its
    404 if no node keeps it). Organizations are the owner's to check, as for a leg.

    A creator that ended on a node since gone names no live node: the node that took that
    node's calls over keeps the conference with its room, so a member of the stored room
    leads there instead."""
    if request.app[RUNTIME].machine.keeps_conference(conference_id):
        return None
    store = request.app[STORE]
    record = await store.live_conference(conference_id)
    if record is None:
        return None
    owners = request.app[ROUTER].owners
    creator = await owners.owner_of(record.creator)
    if creator is not None and (creator.alive or not creator.ended):
        return record.creator
    room = await store.live_room(record.room_id)
    for member in () if room is None else room.members:
        owner = await owners.owner_of(member)
        if owner is not None and owner.alive and not owner.ended:
            return member
    return record.creator


async def body_leg(request: web.Request, field: str) -> str | None:
    """The leg the body's ``field`` names; None for a body the handler refuses (answered
    here)."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return None
    leg_id = body.get(field) if isinstance(body, dict) else None
    return leg_id if isinstance(leg_id, str) and leg_id else None


def held_here(request: web.Request, leg_id: str) -> bool:
    try:
        request.app[RUNTIME].machine.leg(leg_id)
    except NotFound:
        return False
    return True
