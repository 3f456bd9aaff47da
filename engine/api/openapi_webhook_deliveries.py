"""OpenAPI description of the webhook deliveries on the Call Control API
(engine/api/webhook_deliveries.py)."""

from __future__ import annotations

from engine.api.openapi import Schema, nullable, obj, ref, response, string
from engine.api.openapi_calls import ERRORS, SECURITY
from engine.api.openapi_recordings import INT, PAGE_SIZE, TIME
from engine.api.recordings import MAX_PAGE_NUMBER
from engine.api.webhook_deliveries import MAX_FILTER_TEXT, STATUSES, TEXT_FILTERS, TIME_FILTERS

HEADERS: Schema = {
    "type": "array",
    "items": {"type": "array", "items": string(), "minItems": 2, "maxItems": 2},
}

ATTEMPT: Schema = obj(
    ["status", "started_at", "finished_at", "http"],
    status=string(enum=list(STATUSES)),
    started_at=TIME,
    finished_at=TIME,
    http=obj(
        ["request"],
        request=obj(["url", "headers"], url=string(format="uri"), headers=HEADERS),
        response={
            **nullable(obj(["status"], status=INT, headers=HEADERS, body=nullable(string()))),
            "description": "the receiver's answer (its first kilobyte); null when there was "
            "none (refused, timed out, reset)",
        },
    ),
    error={
        **nullable(string()),
        "description": "callbridge's extension: why the attempt failed, in words",
    },
)

DELIVERY: Schema = obj(
    ["record_type", "id", "status", "webhook", "attempts"],
    record_type=string(enum=["webhook_delivery"]),
    id=string(format="uuid"),
    status={
        **nullable(string(enum=list(STATUSES))),
        "description": "delivered, or failed once every attempt failed (dead-lettered); null "
        "while the webhook is still being delivered",
    },
    webhook=obj(
        ["record_type", "id", "event_type", "occurred_at", "payload"],
        record_type=string(enum=["event"]),
        id=string(format="uuid", description="the event id (data.id), the same in every attempt"),
        event_type=string(),
        occurred_at=TIME,
        payload={"type": "object"},
    ),
    started_at=nullable(TIME),
    finished_at=nullable(TIME),
    attempts={"type": "array", "items": ATTEMPT, "description": "newest first"},
)

SCHEMAS: dict[str, Schema] = {
    "WebhookDelivery": obj(["data"], data=DELIVERY),
    "WebhookDeliveryList": obj(
        ["data", "meta"],
        data={"type": "array", "items": DELIVERY},
        meta=obj(
            ["page_number", "page_size", "total_pages", "total_results"],
            page_number=INT,
            page_size=INT,
            total_pages=INT,
            total_results=INT,
        ),
    ),
}


def _query(name: str, schema: Schema) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def webhook_delivery_paths() -> dict[str, Schema]:
    text = string(minLength=1, maxLength=MAX_FILTER_TEXT)
    return {
        "/v2/webhook_deliveries": {
            "get": {
                "summary": "The organization's webhooks and their delivery, newest first",
                "security": SECURITY,
                "parameters": [
                    _query("page[number]", {**INT, "minimum": 1, "maximum": MAX_PAGE_NUMBER}),
                    _query("page[size]", PAGE_SIZE),
                    _query("filter[status][eq]", string(enum=list(STATUSES))),
                    _query("filter[event_type]", string(description="comma-separated types")),
                    *(_query(name, TIME) for name in TIME_FILTERS),
                    *(_query(name, text) for name in TEXT_FILTERS),
                ],
                "responses": {
                    "200": response("One page", ref("WebhookDeliveryList")),
                    "401": ERRORS["401"],
                    "422": response(
                        "A page parameter out of range, or a bad or unknown filter",
                        ref("TelnyxErrors"),
                    ),
                    "500": ERRORS["500"],
                },
            }
        },
        "/v2/webhook_deliveries/{delivery_id}": {
            "get": {
                "summary": "One webhook and its delivery attempts",
                "security": SECURITY,
                "parameters": [
                    {"name": "delivery_id", "in": "path", "required": True, "schema": string()}
                ],
                "responses": {
                    "200": response("The webhook delivery", ref("WebhookDelivery")),
                    "401": ERRORS["401"],
                    "404": response(
                        "Unknown webhook delivery, or another organization's",
                        ref("TelnyxErrors"),
                    ),
                    "500": ERRORS["500"],
                },
            }
        },
    }
