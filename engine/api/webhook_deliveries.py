"""Webhook deliveries on the Call Control API, in Telnyx's shape (the telnyx SDK's
``resources/webhook_deliveries.py``, ``types/webhook_delivery.py``, ``types/attempt.py``,
``types/http.py`` and ``types/webhook_delivery_list_params.py``).

``GET /v2/webhook_deliveries`` lists the organization's webhooks newest first, paged with
``page[number]`` and ``page[size]`` and a ``meta`` as Telnyx pages, filtered with Telnyx's
``filter[status][eq]``, ``filter[event_type]`` (several, comma-separated),
``filter[webhook][contains]``, ``filter[attempts][contains]`` (case-insensitive text in the
event's or the attempts' JSON) and ``filter[started_at|finished_at][gte|lte]`` (ISO 8601; a time
without a zone is UTC). Any other ``filter[...]`` is refused (422), never ignored.
``GET /v2/webhook_deliveries/{id}`` answers one; another organization's is 404, as an unknown
one is. Both take the Bearer token.

``status`` is ``delivered`` or ``failed`` (every attempt failed: dead-lettered), the SDK's two
values, both final ("'delivered' when successfully delivered or 'failed' if all attempts have
failed"). A webhook still being delivered is listed too, with ``status`` null (the SDK types the
field Optional) and ``finished_at`` null, its attempts so far in ``attempts``: naming it
``failed`` would say its retries are over, and a third value would be outside the SDK's type.
Each attempt carries callbridge's own ``error`` (why it failed, in words) besides Telnyx's
fields; Telnyx's numeric ``errors`` (e.g. 75499 in its API reference's example) come with no
published meaning, so they are not imitated. ``user_id`` is left out: callbridge has no users,
and the organization is the caller's own.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from engine.api.auth import organization_for
from engine.api.envelopes import json_response
from engine.api.keys import STORE
from engine.api.recordings import DEFAULT_PAGE_SIZE, MAX_PAGE_NUMBER, MAX_PAGE_SIZE
from engine.api.validation import query_int
from engine.errors import NotFound, ValidationError
from engine.store.base import AttemptRecord, DeliveryFilter, OutboxRecord
from engine.webhooks.outbox import occurred_at

STATUSES = ("delivered", "failed")
MAX_FILTER_TEXT = 255
TIME_FILTERS = {
    "filter[started_at][gte]": "started_gte",
    "filter[started_at][lte]": "started_lte",
    "filter[finished_at][gte]": "finished_gte",
    "filter[finished_at][lte]": "finished_lte",
}
TEXT_FILTERS = {
    "filter[webhook][contains]": "webhook_contains",
    "filter[attempts][contains]": "attempts_contains",
}
FILTERS = frozenset({"filter[status][eq]", "filter[event_type]", *TIME_FILTERS, *TEXT_FILTERS})


def _when(epoch: float | None) -> str | None:
    return occurred_at(epoch) if epoch is not None else None


def attempt_view(tried: AttemptRecord) -> dict[str, Any]:
    response = None
    if tried.response_status is not None:
        response = {
            "status": tried.response_status,
            "headers": [list(pair) for pair in tried.response_headers],
            "body": tried.response_body,
        }
    return {
        "status": tried.status,
        "started_at": occurred_at(tried.started_at),
        "finished_at": occurred_at(tried.finished_at),
        "http": {
            "request": {"url": tried.url, "headers": [list(p) for p in tried.request_headers]},
            "response": response,
        },
        "error": tried.error,
    }


def delivery_view(record: OutboxRecord) -> dict[str, Any]:
    return {
        "record_type": "webhook_delivery",
        "id": record.public_id,
        "status": record.status if record.status in STATUSES else None,
        "webhook": orjson.loads(record.body),
        "started_at": _when(record.started_at),
        "finished_at": _when(record.finished_at),
        "attempts": [attempt_view(tried) for tried in record.attempts],
    }


def _epoch(name: str, raw: str) -> float:
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise ValidationError(
            f"{name} must be an ISO 8601 date and time (e.g. 2026-12-02T10:00:00Z)", field=name
        ) from None
    return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).timestamp()


def _text(name: str, raw: str) -> str:
    if not raw or len(raw) > MAX_FILTER_TEXT:
        raise ValidationError(f"{name} must be 1 to {MAX_FILTER_TEXT} characters", field=name)
    return raw


def delivery_filter(request: web.Request) -> DeliveryFilter:
    """Telnyx's filters from the query string; 422 naming the parameter for a bad or unknown
    one."""
    query = request.query
    unknown = sorted(k for k in query if k.startswith("filter") and k not in FILTERS)
    if unknown:
        raise ValidationError(
            f"unknown filter {unknown[0]}; known: {', '.join(sorted(FILTERS))}", field=unknown[0]
        )
    status = query.get("filter[status][eq]")
    if status is not None and status not in STATUSES:
        raise ValidationError(
            "filter[status][eq] must be delivered or failed", field="filter[status][eq]"
        )
    kinds: tuple[str, ...] = ()
    if (raw := query.get("filter[event_type]")) is not None:
        kinds = tuple(_text("filter[event_type]", k.strip()) for k in raw.split(","))
    found: dict[str, Any] = {}
    for name, field in TIME_FILTERS.items():
        if (raw := query.get(name)) is not None:
            found[field] = _epoch(name, raw)
    for name, field in TEXT_FILTERS.items():
        if (raw := query.get(name)) is not None:
            found[field] = _text(name, raw)
    return DeliveryFilter(status=status, event_types=kinds, **found)


async def list_deliveries(request: web.Request) -> web.StreamResponse:
    org = await organization_for(request, "Bearer")
    number = query_int(request, "page[number]", 1, lo=1, hi=MAX_PAGE_NUMBER)
    size = query_int(request, "page[size]", DEFAULT_PAGE_SIZE, lo=1, hi=MAX_PAGE_SIZE)
    records, total = await request.app[STORE].list_webhook_deliveries(
        org.id, delivery_filter(request), offset=(number - 1) * size, limit=size
    )
    meta = {
        "page_number": number,
        "page_size": size,
        "total_pages": math.ceil(total / size),
        "total_results": total,
    }
    return json_response({"data": [delivery_view(r) for r in records], "meta": meta})


async def get_delivery(request: web.Request) -> web.StreamResponse:
    org = await organization_for(request, "Bearer")
    delivery_id = request.match_info["delivery_id"]
    record = await request.app[STORE].get_webhook_delivery(org.id, delivery_id)
    if record is None:  # unknown, or another organization's: the same answer
        raise NotFound(f"no webhook delivery with id '{delivery_id}'")
    return json_response({"data": delivery_view(record)})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v2/webhook_deliveries", list_deliveries, allow_head=False)
    app.router.add_get("/v2/webhook_deliveries/{delivery_id}", get_delivery, allow_head=False)
