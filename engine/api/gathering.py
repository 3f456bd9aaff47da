"""A bridge or a conference join naming a leg another node holds, or an enqueue or a bridge
naming a queue another node keeps: the legs are brought to one node before the command is
carried out (issue 16, point 3; engine/cluster/handover.py).

A middleware after the routing to the owner and the rate limit: it runs on the node that
carries the command out (the path leg's owner, or the conference's node). When the body's
``call_control_id`` is a live leg of another node, that node is asked to hand it over here
(``pull``); then the command runs as on one node. A bridge whose other leg cannot move (it is
in a room with others, being recorded, ...) is carried out at the other leg's node instead: the
path leg is handed there (``push``) and the request forwarded to it. When neither can move
the command is refused (422, Telnyx's invalid call state) with both reasons; a conference's
room never moves, so a join whose leg cannot move gets that leg's reason. A queue lives on
the node of its calls: an enqueue or a ``bridge`` with ``queue`` is carried out there, the
path leg handed over first (422 with its reason if it cannot move); a new queue is made on the
node that claimed it first in Redis, so two first enqueues at once make one queue.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from engine.api.auth import organization_for
from engine.api.keys import MOVER, ROUTER, RUNTIME, STORE
from engine.api.routing import body_leg, held_here
from engine.errors import NotFound
from engine.runtime.adoption import LegStays

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BRIDGE = "/v2/calls/{call_control_id}/actions/{action}"
CONFERENCE_ACTION = "/v2/conferences/{conference_id}/actions/{action}"


@web.middleware
async def gather_legs(request: web.Request, handler: Handler) -> web.StreamResponse:
    kind = _kind(request)
    if kind is None:
        return await handler(request)
    if kind != "join":
        queue = await body_leg(request, "queue_name" if kind == "enqueue" else "queue")
        if queue is not None:
            return await _to_queue(request, handler, queue, making=kind == "enqueue")
    other = await body_leg(request, "call_control_id")
    runtime = request.app[RUNTIME]
    if other is None or held_here(request, other):
        return await handler(request)
    owner = await request.app[ROUTER].elsewhere(other)
    if owner is None:
        return await handler(request)  # no node holds it: the handler's 404, as on one node
    org_id = (await organization_for(request, "Bearer")).id
    here = request.match_info.get("call_control_id")
    if kind == "join":
        runtime.machine.conference(request.match_info["conference_id"], org_id)  # else 404
    else:
        runtime.machine.leg(str(here), org_id)  # another organization's: 404, nothing moves
    mover = request.app[MOVER]
    try:
        await mover.pull(other, org_id, owner)
    except NotFound:
        return await handler(request)  # not that organization's: the handler's 404
    except LegStays as stays:
        if kind == "join" or here is None:
            raise
        why_here = runtime.machine.why_it_stays(here)
        if why_here is not None:
            detail = f"{stays.detail}; and call '{here}' cannot move either: {why_here}"
            raise LegStays(f"the two calls are on different nodes: {detail}") from stays
        await mover.push(here, org_id, owner)
        return await request.app[ROUTER].forward(request, here, owner)
    return await handler(request)


async def _to_queue(
    request: web.Request, handler: Handler, name: str, *, making: bool
) -> web.StreamResponse:
    """An enqueue, or a bridge with a queue's longest-waiting call: carried out where the
    queue is (the node of its calls, as stored), the path leg handed there first; 422 with the
    reason if it cannot move. A queue no node has is made by the node that claims it first
    (``new_queue_elsewhere``)."""
    runtime, router = request.app[RUNTIME], request.app[ROUTER]
    here = request.match_info["call_control_id"]
    org_id = (await organization_for(request, "Bearer")).id
    runtime.machine.leg(here, org_id)  # another organization's: 404, nothing moves
    if runtime.machine.queue(org_id, name) is not None:
        return await handler(request)
    queue = await request.app[STORE].live_queue(org_id, name)
    if queue is not None and queue.members:
        owner = await router.elsewhere(queue.members[0])
    elif making:  # a new queue: where the first node to ask makes it (two at once make one)
        owner = await router.new_queue_elsewhere(org_id, name)
    else:  # a bridge with a queue nobody has: refused here, as on one node
        owner = None
    if owner is None:
        return await handler(request)
    why = runtime.machine.why_it_stays(here)
    if why is not None:
        raise LegStays(f"queue '{name}' is on another node and call '{here}' cannot move: {why}")
    await request.app[MOVER].push(here, org_id, owner)
    return await router.forward(request, here, owner)


def _kind(request: web.Request) -> str | None:
    """Which command naming a second leg or a queue this is ("bridge", "join" or "enqueue");
    None for any other request, or on one node."""
    if request.method != "POST" or request.app[ROUTER].single_node:
        return None
    resource = request.match_info.route.resource
    canonical = None if resource is None else resource.canonical
    action = request.match_info.get("action")
    if canonical == BRIDGE and action in ("bridge", "enqueue"):
        return action
    if canonical == CONFERENCE_ACTION and action == "join":
        return "join"
    return None
