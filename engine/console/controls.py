"""The console's controls: Call Control actions on the organization's legs, each audited.

``POST /console/api/calls/{call_control_id}/actions/{action}`` takes the action's JSON body, as
the Call Control API does, for the actions the console offers (``CONTROLS``); it is parsed by
the API's own ``parse_command`` and carried out by ``CallRuntime.command`` under the session's
organization, so the console can do exactly what the API can, and answers alike (404 for a leg
of another organization, 422 naming a bad field or a refused state). Mute, unmute, hold and
unhold are the Conferences API's actions on the leg's conference (``call_control_ids`` naming
the leg; hold plays the built-in hold tone): the Call Control API has none of them on a plain
leg, so a leg in no conference is refused (422).

Every attempt, carried out or refused, is written to the audit log (who: organization and API
token id; what: action, leg and body; when; outcome) and logged. ``GET /console/api/audit``
lists the organization's newest entries.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from engine.api.keys import RUNTIME, SETTINGS, STORE
from engine.api.validation import json_object
from engine.console.guard import check_csrf, check_origin, require_session
from engine.console.keys import HUB
from engine.console.sessions import ConsoleSession
from engine.console.views import audit_view
from engine.errors import CallbridgeError, InvalidState, NotFound
from engine.logs import get_logger
from engine.machine.commands import parse_command
from engine.machine.conference_commands import parse_action
from engine.machine.conference_events import ROOM_PREFIX, conference_id_of
from engine.store.audit_log import AuditRecord

__all__ = ["CONTROLS", "audit_list", "control"]

log = get_logger("callbridge.console")

#: Hang up, take out of its room, record, and move into a new room with another leg (bridge).
CALL_CONTROLS = frozenset({"hangup", "unbridge", "record_start", "record_stop", "bridge"})
#: The Conferences API's actions on one participant, addressed by its leg.
CONFERENCE_CONTROLS = frozenset({"mute", "unmute", "hold", "unhold"})
CONTROLS = CALL_CONTROLS | CONFERENCE_CONTROLS
AUDIT_LISTED = 100


async def control(request: web.Request) -> web.StreamResponse:
    session = require_session(request)
    check_origin(request)
    check_csrf(request, session)
    action = request.match_info["action"]
    leg_id = request.match_info["call_control_id"]
    if action not in CONTROLS:
        raise NotFound(f"the console has no action '{action}'")
    body = await json_object(request, allow_empty=True)
    outcome = "unexpected error"  # replaced unless the action fails unexpectedly
    try:
        if action in CONFERENCE_CONTROLS:
            await _on_conference(request, session.org_id, leg_id, action)
        else:
            command = parse_command(
                action, body, allow_private_urls=request.app[SETTINGS].allow_private_urls
            )
            await request.app[RUNTIME].command(session.org_id, leg_id, command)
        outcome = "ok"
    except CallbridgeError as exc:
        outcome = exc.detail
        raise
    finally:
        await _audit(request, session, action, leg_id, body, outcome)
    return web.json_response({"data": {"result": "ok"}})


async def _on_conference(request: web.Request, org_id: int, leg_id: str, action: str) -> None:
    """The conference action on the leg, as ``POST /v2/conferences/{id}/actions/{action}``
    with ``call_control_ids: [leg]`` would carry it out."""
    runtime = request.app[RUNTIME]
    room_id = runtime.machine.leg(leg_id, org_id).room_id  # NotFound: not the organization's
    if room_id is None or not room_id.startswith(ROOM_PREFIX):
        raise InvalidState(f"{action} applies to a conference participant; the leg is in none")
    command = parse_action(action, {"call_control_ids": [leg_id]})
    await runtime.command(org_id, conference_id_of(room_id), command)


async def _audit(
    request: web.Request,
    session: ConsoleSession,
    action: str,
    leg_id: str,
    body: dict[str, Any],
    outcome: str,
) -> None:
    runtime = request.app[RUNTIME]
    entry = AuditRecord(
        org_id=session.org_id,
        token_id=session.token_id,
        action=action,
        call_control_id=leg_id,
        body=orjson.dumps(body).decode(),
        outcome=outcome,
        at=runtime.now(),
    )
    log.info(
        "console action",
        org_id=session.org_id,
        token_id=session.token_id,
        action=action,
        leg_id=leg_id,
        outcome=outcome,
    )
    try:
        await request.app[STORE].add_audit_entry(entry)
    except CallbridgeError as exc:  # the action stands; the log line above still records it
        log.error("console action not audited in the store", action=action, error=str(exc))
    request.app[HUB].refresh(session.org_id)


async def audit_list(request: web.Request) -> web.StreamResponse:
    session = require_session(request)
    entries = await request.app[STORE].audit_entries(session.org_id, AUDIT_LISTED)
    return web.json_response({"data": audit_view(entries)})
