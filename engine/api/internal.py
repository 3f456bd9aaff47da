"""Requests between nodes (engine/cluster/handover.py): a leg handed over to another node, and
a leg taken over from one. Only with Redis (several nodes); signed by the sending node with
the deployment's secret key (engine/cluster/node_auth.py), never by a client's token. Errors
come back in Telnyx's envelope (``{"errors": [{"code", "title", "detail"}]}``), which the
sending node reads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from engine.api.envelopes import json_response, telnyx_error
from engine.api.keys import MOVER, NODE_AUTH, RUNTIME
from engine.cluster.handover import LEG_PATH
from engine.cluster.node_auth import HEADER
from engine.cluster.owners import Owner
from engine.errors import CallbridgeError, ValidationError
from engine.logs import get_logger

log = get_logger("callbridge.cluster")
Body = dict[str, object]


def add_routes(app: web.Application) -> None:
    app.router.add_post(LEG_PATH + "/hand-over", _node_request(_hand_over))
    app.router.add_post(LEG_PATH + "/adopt", _node_request(_adopt))


async def _hand_over(request: web.Request, leg_id: str, body: Body) -> None:
    """This node's leg to the node the body names (``node``, ``url``)."""
    node, url = body.get("node"), body.get("url")
    if not isinstance(node, str) or not isinstance(url, str):
        raise ValidationError("node and url must name the node taking the call")
    await request.app[MOVER].push(leg_id, _org(body), Owner(node, url))


async def _adopt(request: web.Request, leg_id: str, body: Body) -> None:
    await request.app[RUNTIME].adoption.adopt_leg(leg_id, _org(body))


def _org(body: Body) -> int:
    org_id = body.get("org_id")
    if not isinstance(org_id, int) or isinstance(org_id, bool):
        raise ValidationError("org_id must name the organization the call belongs to")
    return org_id


def _node_request(
    act: Callable[[web.Request, str, Body], Awaitable[None]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        leg_id = request.match_info["leg_id"]
        raw = await request.read()
        try:
            request.app[NODE_AUTH].verify("POST", request.path, raw, request.headers.get(HEADER))
            body = orjson.loads(raw) if raw else {}
            if not isinstance(body, dict):
                raise ValidationError("the body must be a JSON object")
            await act(request, leg_id, body)
        except orjson.JSONDecodeError:
            return telnyx_error(400, "10015", "Bad request", "the body must be JSON")
        except CallbridgeError as exc:
            log.info("node request refused", path=request.path, leg_id=leg_id,
                     status=exc.status, detail=exc.detail)  # fmt: skip
            return telnyx_error(exc.status, exc.code, exc.title, exc.detail)
        return json_response({"data": {"call_control_id": leg_id}}, 200)

    return handle
