"""Recordings on the Call Control API, in Telnyx's shape (the telnyx SDK's
``resources/recordings/recordings.py`` and ``types/recording_response_data.py``).

``GET /v2/recordings`` lists the organization's recordings newest first, paged with
``page[number]`` and ``page[size]`` and a ``meta`` as Telnyx pages; ``filter[call_control_id]``
keeps one leg's (the way from a ``call.recording.saved`` to its recordings), and
``filter[conference_id]`` one conference's (the SDK's ``RecordingListParams``). A conference's
recording has ``source`` "conference" and its ``conference_id``, its creator's call ids, and
no ``from``/``to``.
``GET /v2/recordings/{id}`` answers one, with ``download_urls`` minted fresh;
``DELETE /v2/recordings/{id}`` removes its file and its record and answers the deleted
recording, as Telnyx's does. Another organization's recording is 404, as an unknown one is.
These take the Bearer token.

``GET /v2/recordings/{id}/download`` takes no token: its signed query (engine/recordings.py)
is the authority, until it expires (403 after, and for a tampered id or signature).
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

from aiohttp import web

from engine.api.auth import organization_for
from engine.api.envelopes import json_response
from engine.api.keys import RUNTIME
from engine.api.validation import query_int
from engine.errors import NotFound, StorageError
from engine.logs import get_logger
from engine.recordings import CONTENT_TYPES, RecordingCatalog
from engine.store.base import RecordingRecord
from engine.webhooks.outbox import occurred_at

log = get_logger("callbridge.api.recordings")
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 250  # Telnyx's
MAX_PAGE_NUMBER = 1_000_000
OCTETS = "application/octet-stream"


def recording_view(record: RecordingRecord, download_url: str) -> dict[str, Any]:
    saved = occurred_at(record.ended_at)
    conference = record.conference_id is not None
    return {
        "record_type": "recording",
        "id": record.id,
        "call_control_id": record.call_control_id,
        "call_leg_id": record.call_leg_id or None,  # a conference whose creator is forgotten
        "call_session_id": record.call_session_id or None,
        "connection_id": record.connection_id,
        "conference_id": record.conference_id,
        "from": None if conference else record.from_,
        "to": None if conference else record.to,
        "channels": record.channels,
        "source": "conference" if conference else "call",
        "status": "completed",
        "duration_millis": record.duration_ms,
        "recording_started_at": occurred_at(record.started_at),
        "recording_ended_at": saved,
        "created_at": saved,
        "updated_at": saved,
        "download_urls": {record.format: download_url},
    }


def _catalog(request: web.Request) -> RecordingCatalog:
    return request.app[RUNTIME].recordings


def _view(catalog: RecordingCatalog, record: RecordingRecord) -> dict[str, Any]:
    return recording_view(record, catalog.urls.download_url(record.id, record.format))


async def _own(request: web.Request, catalog: RecordingCatalog) -> RecordingRecord:
    org = await organization_for(request, "Bearer")
    recording_id = request.match_info["recording_id"]
    record = await catalog.store.get_recording(org.id, recording_id)
    if record is None:  # unknown, or another organization's: the same answer
        raise NotFound(f"no recording with id '{recording_id}'")
    return record


async def list_recordings(request: web.Request) -> web.StreamResponse:
    org = await organization_for(request, "Bearer")
    number = query_int(request, "page[number]", 1, lo=1, hi=MAX_PAGE_NUMBER)
    size = query_int(request, "page[size]", DEFAULT_PAGE_SIZE, lo=1, hi=MAX_PAGE_SIZE)
    catalog = _catalog(request)
    records, total = await catalog.store.list_recordings(
        org.id,
        call_control_id=request.query.get("filter[call_control_id]"),
        conference_id=request.query.get("filter[conference_id]"),
        offset=(number - 1) * size,
        limit=size,
    )
    meta = {
        "page_number": number,
        "page_size": size,
        "total_pages": math.ceil(total / size),
        "total_results": total,
    }
    return json_response({"data": [_view(catalog, r) for r in records], "meta": meta})


async def get_recording(request: web.Request) -> web.StreamResponse:
    catalog = _catalog(request)
    return json_response({"data": _view(catalog, await _own(request, catalog))})


async def delete_recording(request: web.Request) -> web.StreamResponse:
    catalog = _catalog(request)
    record = await _own(request, catalog)
    # The file goes first: if that fails the record stays, and the client's retry finds it.
    path = catalog.file_of(record)
    try:
        await asyncio.get_running_loop().run_in_executor(None, _remove, path)
    except OSError as exc:
        log.error("recording file could not be removed", recording_id=record.id, error=str(exc))
        raise StorageError(f"the recording's file could not be removed: {exc.strerror}") from exc
    await catalog.store.delete_recording(record.org_id, record.id)
    log.info("recording deleted", org_id=record.org_id, recording_id=record.id)
    return json_response({"data": _view(catalog, record)})


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


async def download(request: web.Request) -> web.StreamResponse:
    catalog = _catalog(request)
    recording_id = request.match_info["recording_id"]
    query = request.query
    fmt = query.get("format", "")
    # The signature first: an unsigned guess never reaches the database.
    catalog.urls.check(recording_id, fmt, query.get("expires", ""), query.get("signature", ""))
    record = await catalog.store.recording_by_id(recording_id)
    if record is None or record.format != fmt:
        raise NotFound(f"no recording with id '{recording_id}'")
    path = catalog.file_of(record)
    if not path.is_file():
        log.warning("recording file is missing", recording_id=record.id, path=str(path))
        raise NotFound(f"the file of recording '{recording_id}' is gone")
    content_type = CONTENT_TYPES.get(record.format, OCTETS)
    return web.FileResponse(path, headers={"Content-Type": content_type})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v2/recordings", list_recordings, allow_head=False)
    app.router.add_get("/v2/recordings/{recording_id}", get_recording, allow_head=False)
    app.router.add_delete("/v2/recordings/{recording_id}", delete_recording)
    app.router.add_get("/v2/recordings/{recording_id}/download", download, allow_head=False)
