"""Call Control API, Telnyx-compatible: dial, status, and every leg action.

``Authorization: Bearer <token>`` (an organization's API token). Success is ``{"data": ...}``;
errors are ``{"errors": [{"code", "title", "detail", "source"?}]}`` with Telnyx's statuses:
404 for a leg that is unknown or another organization's, 422 for bad parameters (naming the
field) and for commands the leg's state refuses (``90018`` once it has ended).

``unbridge`` is callbridge's own extension (Telnyx has none): it takes the leg out of its room.
``connection_id`` on dial names a bridge (its slug): the bridge's ``webhook_url`` receives the
new leg's events unless the dial gives its own, and its provider configuration places the call.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from aiohttp import web

from engine.admission.limits import TooManyRequests
from engine.api import public_keys
from engine.api.auth import organization_for
from engine.api.envelopes import json_response
from engine.api.keys import ADMISSION, RUNTIME, SETTINGS, STORE
from engine.api.rate_limit import dial_within_limit
from engine.api.transfer import transfer
from engine.api.validation import json_object
from engine.errors import ShuttingDown
from engine.machine.command_body import not_a_media_file
from engine.machine.commands import (
    Command,
    GatherUsingAudio,
    PlaybackStart,
    parse_command,
    parse_dial,
)
from engine.machine.model import CallStatus
from engine.store.base import OrganizationRecord
from engine.webhooks.outbox import occurred_at

OK = {"data": {"result": "ok"}}


async def bearer_organization(request: web.Request) -> OrganizationRecord:
    return await organization_for(request, "Bearer")


def status_view(status: CallStatus) -> dict[str, Any]:
    return {
        "record_type": status.record_type,
        "call_control_id": status.call_control_id,
        "call_leg_id": status.call_leg_id,
        "call_session_id": status.call_session_id,
        "client_state": status.client_state,
        "is_alive": status.is_alive,
        "call_duration": status.call_duration,
        "state": status.state,
        "start_time": occurred_at(status.start_time),
        "end_time": occurred_at(status.end_time) if status.end_time is not None else None,
    }


async def dial(request: web.Request) -> web.StreamResponse:
    org = await bearer_organization(request)
    admission = request.app[ADMISSION]
    refused = admission.refusal()
    if refused == "shutting_down":
        raise ShuttingDown(f"callbridge is {admission.reason}: it places no new calls")
    if refused == "overloaded":
        raise TooManyRequests(
            f"callbridge is {admission.reason}: it places no new calls until it keeps time",
            retry_after_s=admission.load.retry_after_s,
        )
    allow_private = request.app[SETTINGS].allow_private_urls
    command = parse_dial(await json_object(request), allow_private_urls=allow_private)
    bridge = await request.app[STORE].get_bridge(org.id, command.connection_id)
    result = await dial_within_limit(
        request, org.id, command, default_webhook_url=bridge.webhook_url if bridge else None
    )
    leg = result.leg
    return json_response(
        {
            "data": {
                "record_type": "call",
                "call_control_id": leg.call_control_id,
                "call_leg_id": leg.call_leg_id,
                "call_session_id": leg.call_session_id,
                "client_state": leg.client_state,
                "is_alive": False,
                "start_time": occurred_at(leg.start_time),
            }
        }
    )


async def call_status(request: web.Request) -> web.StreamResponse:
    org = await bearer_organization(request)
    runtime = request.app[RUNTIME]
    status = runtime.machine.status(request.match_info["call_control_id"], org.id, runtime.now())
    view = status_view(status)
    # callbridge's extension to Telnyx's shape: what the leg's media streams carried
    # (engine/media_plane/stats.py); null for a leg that never had media.
    view["media"] = runtime.plane.stats.view(status.call_control_id)
    return json_response({"data": view})


async def action(request: web.Request) -> web.StreamResponse:
    org = await bearer_organization(request)
    name = request.match_info["action"]
    body = await json_object(request, allow_empty=True)
    settings = request.app[SETTINGS]
    if name == "transfer":  # a dial of the new party, bridged on answer (engine/api/transfer.py)
        leg_id = request.match_info["call_control_id"]
        await transfer(
            request, org.id, leg_id, body, allow_private_urls=settings.allow_private_urls
        )
        return json_response(OK)
    media_dir = media_dir_of(settings.media_dir)
    command = parse_command(
        name, body, allow_private_urls=settings.allow_private_urls, media_dir=media_dir
    )
    for field, url in _audio_urls(command):
        if url.startswith("file:") and media_dir:
            require_media_file(url, media_dir, field)
    await request.app[RUNTIME].command(org.id, request.match_info["call_control_id"], command)
    return json_response(OK)


def _audio_urls(command: Command) -> list[tuple[str, str]]:
    """The command's audio URLs, with the field naming each."""
    if isinstance(command, PlaybackStart):
        found = [("audio_url", command.audio_url)]
    elif isinstance(command, GatherUsingAudio):
        invalid = command.invalid_prompt
        found = [
            ("audio_url", command.prompt.audio_url),
            ("invalid_audio_url", invalid.audio_url if invalid else None),
        ]
    else:
        return []
    return [(field, url) for field, url in found if url is not None]


def require_media_file(url: str, media_dir: str, field: str) -> None:
    """The file must exist in the media directory, symlinks followed: a missing file gets the
    same answer as one outside (the command checked the path alone). The media plane checks
    again when it opens the file, as it may have changed since."""
    path = Path(unquote(urlsplit(url).path)).resolve()
    if not (path.is_relative_to(Path(media_dir).resolve()) and path.is_file()):
        raise not_a_media_file(field)


def media_dir_of(configured: str | None) -> str | None:
    # Absolute, because the command checks file:// paths against it; a string operation on the
    # configured value and the working directory, nothing read from disk.
    return os.path.abspath(configured) if configured else None


async def client_state_update(request: web.Request) -> web.StreamResponse:
    org = await bearer_organization(request)
    command = parse_command("client_state_update", await json_object(request))
    await request.app[RUNTIME].command(org.id, request.match_info["call_control_id"], command)
    return json_response(OK)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v2/calls", dial)
    app.router.add_get("/v2/calls/{call_control_id}", call_status, allow_head=False)
    state_update = "/v2/calls/{call_control_id}/actions/client_state_update"
    app.router.add_put(state_update, client_state_update)
    # POST as well, as the other actions take it: its own route, so that /openapi.json and the
    # Allow header of this path name both methods (the {action} route below never sees it).
    app.router.add_post(state_update, client_state_update)
    app.router.add_post("/v2/calls/{call_control_id}/actions/{action}", action)
    public_keys.add_routes(app)
