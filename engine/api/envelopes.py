"""The two wire envelopes, and the one place errors become responses.

Platform API (Unpod): ``{"status_code", "message", "data"}`` on success and
``{"status_code", "message", "errors"}`` on failure. Call Control API (Telnyx):
``{"data": ...}`` on success and ``{"errors": [{"code", "title", "detail", "source"?}]}``.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from engine.errors import CallbridgeError

JSON = "application/json"


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=JSON)


def platform_ok(message: str, data: Any, status: int = 200, **extra: Any) -> web.Response:
    return json_response({**extra, "status_code": status, "message": message, "data": data}, status)


def platform_error(status: int, message: str, errors: Any) -> web.Response:
    return json_response({"status_code": status, "message": message, "errors": errors}, status)


def telnyx_error(
    status: int, code: str, title: str, detail: str, field: str | None = None
) -> web.Response:
    error: dict[str, Any] = {"code": code, "title": title, "detail": detail}
    if field is not None:
        error["source"] = {"pointer": "/" + field.replace(".", "/")}
    return json_response({"errors": [error]}, status)


def uses_telnyx_envelope(path: str) -> bool:
    return path.startswith(("/v2/", "/webhooks/telnyx"))


def error_response(request: web.Request, exc: CallbridgeError) -> web.Response:
    if uses_telnyx_envelope(request.path):
        # Telnyx answers bad parameters with 422, where the platform API uses 400.
        status = 422 if exc.status == 400 else exc.status
        return telnyx_error(status, exc.code, exc.message or exc.title, exc.detail, exc.field)
    headline = exc.message or request.get(FAILURE_MESSAGE) or exc.title
    return platform_error(exc.status, headline, exc.detail)


def http_error_response(request: web.Request, exc: web.HTTPException) -> web.Response:
    """Render aiohttp's own errors (unknown route, wrong method, body too large)."""
    detail = exc.text or exc.reason
    if exc.status == 404:
        detail = f"No route for {request.method} {request.path}"
    elif exc.status == 405:
        detail = f"Method {request.method} is not allowed on {request.path}"
    elif exc.status == 413:
        detail = "Request body is too large"
    if uses_telnyx_envelope(request.path):
        code = {401: "10009", 404: "10005", 413: "10015"}.get(exc.status, "10015")
        response = telnyx_error(exc.status, code, exc.reason, detail)
    else:
        response = platform_error(exc.status, request.get(FAILURE_MESSAGE) or exc.reason, detail)
    if exc.status == 405 and "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


# Request-scoped key under which a handler names its failure headline ("Bridge update failed.")
FAILURE_MESSAGE = web.RequestKey("failure_message", str)
