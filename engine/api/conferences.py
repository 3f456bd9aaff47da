"""Conferences on the Call Control API, in Telnyx's shape (the telnyx SDK's
``resources/conferences/conferences.py`` and ``actions.py``; ``types/conference.py``,
``conference_list_participants_response.py``, ``conference_participant.py``).

``POST /v2/conferences`` makes a conference from a leg, which joins it; ``GET /v2/conferences``
lists the organization's (oldest first, paged with ``page[number]``/``page[size]`` and a
``meta`` as the SDK's ``DefaultFlatPagination`` reads it; ``filter[name]`` (exact, case-sensitive)
and ``filter[status]``), live and ended, default-routed ones included; ``GET
/v2/conferences/{id}`` one. ``GET /v2/conferences/{id}/participants`` lists who is in it now
(``filter[muted]``, ``filter[on_hold]``, ``filter[whispering]``), ``GET
.../participants/{participant_id}`` one, by its ``id`` (the leg's ``call_leg_id``) or its
``call_control_id``. Actions: ``join``, ``leave``, ``mute``, ``unmute``, ``hold``, ``unhold``,
``play``, ``stop``, ``send_dtmf``, ``end`` (``engine.machine.conference_commands``); audio URLs
are checked as ``/v2/calls`` actions check them. Another organization's conference or leg is 404, as
an unknown one. Query parameters of the SDK's other filters are refused (422 naming them).
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from engine.api.auth import organization_for
from engine.api.calls import media_dir_of, require_media_file
from engine.api.envelopes import json_response
from engine.api.keys import ROUTER, RUNTIME, SETTINGS, STORE
from engine.api.validation import json_object, query_int
from engine.errors import NotFound, ValidationError
from engine.machine.conference_commands import (
    HoldParticipants,
    PlayConference,
    parse_action,
    parse_create,
)
from engine.machine.model import DEFAULT_TIME_LIMIT_SECS, Conference, Leg, SupervisorRole
from engine.runtime.runtime import CallRuntime
from engine.webhooks.outbox import occurred_at

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 250
MAX_PAGE_NUMBER = 1_000_000
STATUSES = ("init", "in_progress", "completed")  # the SDK's filter[status] values
LIST_QUERY = ("page[number]", "page[size]", "filter[name]", "filter[status]")
PARTICIPANT_FILTERS = ("filter[muted]", "filter[on_hold]", "filter[whispering]")
OK = {"data": {"result": "ok"}}


def conference_view(record: Conference) -> dict[str, Any]:
    return {
        "record_type": "conference",
        "id": record.conference_id,
        "name": record.name,
        "status": record.status,
        "connection_id": record.connection_id,
        "created_at": occurred_at(record.created_at),
        "updated_at": occurred_at(record.updated_at),
        # The SDK's create docstring: conferences expire "after 4 hours regardless".
        "expires_at": occurred_at(record.created_at + DEFAULT_TIME_LIMIT_SECS),
        "end_reason": record.end_reason,
        "ended_by": None,  # "all there or all null": callbridge names no leg that ended it
        "region": None,
    }


def participant_view(record: Conference, leg: Leg) -> dict[str, Any]:
    joined = occurred_at(leg.joined_room_at if leg.joined_room_at is not None else leg.start_time)
    return {
        "record_type": "participant",
        "id": leg.call_leg_id,
        "call_control_id": leg.call_control_id,
        "call_leg_id": leg.call_leg_id,
        "conference": {"id": record.conference_id, "name": record.name},
        "conference_id": record.conference_id,
        "status": "joined",
        "muted": leg.muted,
        "on_hold": leg.on_hold,
        "end_conference_on_exit": False,
        "soft_end_conference_on_exit": False,
        "whisper_call_control_ids": list(whispering_to(leg)),
        "label": None,
        "created_at": joined,
        "updated_at": joined,
    }


def whispering_to(leg: Leg) -> tuple[str, ...]:
    """The participants a whisper supervisor reaches (the SDK's whisper_call_control_ids)."""
    return leg.whisper_to if leg.supervisor_role is SupervisorRole.WHISPER else ()


def _runtime(request: web.Request) -> CallRuntime:
    return request.app[RUNTIME]


async def _org_id(request: web.Request) -> int:
    return (await organization_for(request, "Bearer")).id


def _only(request: web.Request, known: tuple[str, ...]) -> None:
    """Refuse a query parameter callbridge would otherwise ignore (the SDK's other filters)."""
    for name in request.query:
        if name not in known:
            raise ValidationError(f"'{name}' is not supported here", field=name)


def _page(request: web.Request, items: list[Any]) -> web.Response:
    number = query_int(request, "page[number]", 1, lo=1, hi=MAX_PAGE_NUMBER)
    size = query_int(request, "page[size]", DEFAULT_PAGE_SIZE, lo=1, hi=MAX_PAGE_SIZE)
    start = (number - 1) * size
    meta = {
        "page_number": number,
        "page_size": size,
        "total_pages": math.ceil(len(items) / size),
        "total_results": len(items),
    }
    return json_response({"data": items[start : start + size], "meta": meta})


async def create(request: web.Request) -> web.StreamResponse:
    org_id = await _org_id(request)
    command = parse_create(await json_object(request))
    runtime = _runtime(request)
    await runtime.command(org_id, command.call_control_id, command)
    # The creating leg is in the new conference's room now (a repeated command_id: still).
    leg = runtime.machine.leg(command.call_control_id, org_id)
    record = next(r for r in runtime.machine.conferences_of(org_id) if r.room_id == leg.room_id)
    return json_response({"data": conference_view(record)})


async def list_conferences(request: web.Request) -> web.StreamResponse:
    org_id = await _org_id(request)
    _only(request, LIST_QUERY)
    name, status = request.query.get("filter[name]"), request.query.get("filter[status]")
    if status is not None and status not in STATUSES:
        raise ValidationError(
            f"filter[status] must be one of: {', '.join(STATUSES)}", field="filter[status]"
        )
    found = [
        conference_view(r)
        for r in await _conferences_of(request, org_id)
        if (name is None or r.name == name) and (status is None or r.status == status)
    ]
    return _page(request, found)


async def _conferences_of(request: web.Request, org_id: int) -> list[Conference]:
    """The organization's conferences, oldest first: this node's, or with several nodes all of
    them, as stored (each node keeps those its legs created; the store has every one)."""
    if request.app[ROUTER].single_node:
        return _runtime(request).machine.conferences_of(org_id)
    stored = await request.app[STORE].live_conferences(org_id)
    return sorted(stored, key=lambda r: (r.created_at, r.conference_id))


async def _conference(request: web.Request) -> Conference:
    org_id = await _org_id(request)
    return _runtime(request).machine.conference(request.match_info["conference_id"], org_id)


async def get_conference(request: web.Request) -> web.StreamResponse:
    return json_response({"data": conference_view(await _conference(request))})


async def list_participants(request: web.Request) -> web.StreamResponse:
    record = await _conference(request)
    _only(request, ("page[number]", "page[size]", *PARTICIPANT_FILTERS))
    wanted = {
        name: _flag(request, f"filter[{name}]") for name in ("muted", "on_hold", "whispering")
    }
    found = [
        participant_view(record, leg)
        for leg in _runtime(request).machine.participants(record)
        if all(
            want is None or have == want
            for have, want in zip(
                (leg.muted, leg.on_hold, leg.supervisor_role is SupervisorRole.WHISPER),
                wanted.values(),
                strict=True,
            )
        )
    ]
    return _page(request, found)


def _flag(request: web.Request, name: str) -> bool | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if raw not in ("true", "false"):
        raise ValidationError(f"{name} must be true or false", field=name)
    return raw == "true"


async def get_participant(request: web.Request) -> web.StreamResponse:
    record = await _conference(request)
    wanted = request.match_info["participant_id"]
    for leg in _runtime(request).machine.participants(record):
        if wanted in (leg.call_leg_id, leg.call_control_id):
            return json_response({"data": participant_view(record, leg)})
    raise NotFound(f"no participant '{wanted}' in this conference")


async def action(request: web.Request) -> web.StreamResponse:
    org_id = await _org_id(request)
    conference_id = request.match_info["conference_id"]
    # An unknown or foreign conference is 404 before the body is judged, as a leg's is.
    _runtime(request).machine.conference(conference_id, org_id)
    settings = request.app[SETTINGS]
    media_dir = media_dir_of(settings.media_dir)
    command = parse_action(
        request.match_info["action"],
        await json_object(request, allow_empty=True),
        allow_private_urls=settings.allow_private_urls,
        media_dir=media_dir,
    )
    if isinstance(command, HoldParticipants | PlayConference) and media_dir:
        url = command.audio_url
        if url is not None and url.startswith("file:"):
            require_media_file(url, media_dir, "audio_url")
    await _runtime(request).command(org_id, conference_id, command)
    return json_response(OK)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v2/conferences", create)
    app.router.add_get("/v2/conferences", list_conferences, allow_head=False)
    app.router.add_get("/v2/conferences/{conference_id}", get_conference, allow_head=False)
    participants = "/v2/conferences/{conference_id}/participants"
    app.router.add_get(participants, list_participants, allow_head=False)
    app.router.add_get(participants + "/{participant_id}", get_participant, allow_head=False)
    app.router.add_post("/v2/conferences/{conference_id}/actions/{action}", action)
