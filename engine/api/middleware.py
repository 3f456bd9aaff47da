"""Request middleware: request ids and access logs, metrics, and error envelopes.

Nothing a client sends may crash the process or leak a traceback: every exception ends here
as an envelope, and unexpected ones are logged with the request's context.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from engine.admission.limits import TooManyRequests
from engine.api.envelopes import (
    error_response,
    http_error_response,
    platform_error,
    telnyx_error,
    uses_telnyx_envelope,
)
from engine.api.keys import METRICS
from engine.errors import CallbridgeError, InputNotStored, StoreUnreachable
from engine.logs import get_logger

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = get_logger("callbridge.http")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get("X-Request-ID", "")
    request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers["X-Request-ID"] = request_id
        return response
    finally:
        elapsed = time.perf_counter() - started
        route = _route_name(request)
        metrics = request.app[METRICS]
        metrics.http_requests.labels(request.method, route, str(status)).inc()
        metrics.http_latency.labels(route).observe(elapsed)
        log.info(
            "request",
            method=request.method,
            path=request.path,
            status=status,
            ms=round(elapsed * 1000, 2),
        )
        structlog.contextvars.clear_contextvars()


@web.middleware
async def error_envelopes(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except CallbridgeError as exc:
        log.info(
            "request refused",
            error=type(exc).__name__,
            status=exc.status,
            detail=exc.detail,
            field=exc.field,
        )
        response = error_response(request, exc)
        if isinstance(exc, TooManyRequests | StoreUnreachable | InputNotStored):
            response.headers["Retry-After"] = exc.retry_after_header
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        log.info("request refused", status=exc.status, reason=exc.reason)
        return http_error_response(request, exc)
    except Exception:
        # The fault id ties the client's answer to the one log line with the traceback.
        fault_id = str(uuid.uuid4())
        log.exception(
            "unexpected error while handling request", path=request.path, fault_id=fault_id
        )
        detail = f"An unexpected error occurred (fault id {fault_id})"
        if uses_telnyx_envelope(request.path):
            return telnyx_error(500, "10007", "Unexpected error", detail)
        return platform_error(500, "Internal server error.", detail)
