"""Operations endpoints: health, Prometheus metrics, the OpenAPI document."""

from __future__ import annotations

from aiohttp import web

from engine.api.envelopes import json_response
from engine.api.keys import ADMISSION, METRICS
from engine.api.openapi import build_openapi
from engine.api.openapi_calls import SCHEMAS as CALL_SCHEMAS
from engine.api.openapi_calls import call_paths
from engine.api.openapi_conferences import SCHEMAS as CONFERENCE_SCHEMAS
from engine.api.openapi_conferences import conference_paths
from engine.api.openapi_ops import ops_paths
from engine.api.openapi_recordings import SCHEMAS as RECORDING_SCHEMAS
from engine.api.openapi_recordings import recording_paths
from engine.api.openapi_webhook_deliveries import SCHEMAS as DELIVERY_SCHEMAS
from engine.api.openapi_webhook_deliveries import webhook_delivery_paths
from engine.metrics import CONTENT_TYPE_LATEST

OPENAPI_DOC = web.AppKey("openapi_doc", dict)


async def healthz(request: web.Request) -> web.StreamResponse:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.StreamResponse:
    """Whether to send this process new work: 503 from the moment it begins to stop (SIGTERM),
    while ``/healthz`` stays 200 (engine/runtime/lifecycle.py), and while its media tick is
    overloaded (engine/admission/gate.py)."""
    admission = request.app[ADMISSION]
    if admission.admitting:
        return json_response({"status": "ready"})
    return json_response({"status": "unavailable", "reason": admission.reason}, status=503)


async def metrics(request: web.Request) -> web.StreamResponse:
    metrics = request.app[METRICS]
    await metrics.refresh()  # the outbox's backlog is a store query
    body = metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.StreamResponse:
    return json_response(request.app[OPENAPI_DOC])


def add_routes(app: web.Application) -> None:
    app[OPENAPI_DOC] = build_openapi(
        {
            **ops_paths(),
            **call_paths(),
            **conference_paths(),
            **recording_paths(),
            **webhook_delivery_paths(),
        },
        {**CALL_SCHEMAS, **CONFERENCE_SCHEMAS, **RECORDING_SCHEMAS, **DELIVERY_SCHEMAS},
    )
    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_get("/readyz", readyz, allow_head=False)
    app.router.add_get("/metrics", metrics, allow_head=False)
    app.router.add_get("/openapi.json", openapi, allow_head=False)
