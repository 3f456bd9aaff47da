"""The Twilio simulator's REST wire: Twilio's JSON error body, form fields, and which
operation a request is (for ``rest_faults``). Shapes from twilio.com/docs/api/errors and the
twilio SDK's request forms."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from aiohttp import web


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status=status,
    )


def _operation(request: web.Request, form: Mapping[str, list[str]]) -> str:
    """The operation a request is, as ``faults`` names it."""
    if request.path.endswith("/Calls.json") and request.method == "POST":
        return "dial"
    if request.match_info.get("sid") is not None and "/Calls/" in request.path:
        if request.method == "GET":
            return "status"
        twiml = " ".join(form.get("Twiml", []))
        return "update" if twiml and "<Hangup" not in twiml else "hangup"
    return f"{request.method} {request.path}"


def _not_found(request: web.Request) -> web.Response:
    return _error(404, 20404, f"The requested resource {request.path} was not found")


def _field(form: Mapping[str, object], key: str) -> str | None:
    """A form field as text (None if absent); repeated fields give their first value."""
    value = form.get(key)
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    # A file upload is not a field Twilio takes; its name is as good as any text here.
    return value if isinstance(value, str) else str(getattr(value, "filename", ""))


def _http_url(value: str) -> bool:
    split = urlsplit(value)
    return split.scheme in ("http", "https") and bool(split.netloc)
