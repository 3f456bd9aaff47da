"""Who is asking: the session cookie, the CSRF token of controls, the origin of POSTs.

The cookie is HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it),
scoped to ``/console`` and Secure whenever the console is reached over https. A control also
needs the session's CSRF token in the ``X-CSRF-Token`` header, which only the console's own page
can read (``GET /console/api/session``, same-origin), and a POST that names its ``Origin`` must
name this one: defence in depth, should a browser ignore SameSite.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from aiohttp import web

from engine.api.keys import SETTINGS
from engine.console.keys import SESSIONS
from engine.console.sessions import ConsoleSession
from engine.errors import AuthenticationError, PermissionDenied

__all__ = [
    "COOKIE",
    "CSRF_HEADER",
    "check_csrf",
    "check_origin",
    "forget_cookie",
    "page_session",
    "require_session",
    "see_other",
    "set_cookie",
]

COOKIE = "callbridge_console"
CSRF_HEADER = "X-CSRF-Token"


def _session(request: web.Request) -> ConsoleSession | None:
    return request.app[SESSIONS].get(request.cookies.get(COOKIE))


def require_session(request: web.Request) -> ConsoleSession:
    """The console API's caller; 401 without a live session."""
    session = _session(request)
    if session is None:
        raise AuthenticationError("sign in to the console first", message="Not signed in.")
    return session


def page_session(request: web.Request) -> ConsoleSession | None:
    """A page's viewer; None without a live session (the page sends it to sign in)."""
    return _session(request)


def see_other(location: str) -> web.Response:
    """Where the browser goes next, after a form or without a session (303: as a GET)."""
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def check_csrf(request: web.Request, session: ConsoleSession) -> None:
    sent = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(sent.encode(), session.csrf_token.encode()):
        raise PermissionDenied(
            f"the {CSRF_HEADER} header is missing or wrong", message="Forbidden."
        )


def check_origin(request: web.Request) -> None:
    """A POST that says where it comes from must come from this console."""
    origin = request.headers.get("Origin")
    if origin is None:  # not a browser's cross-site request (browsers send Origin on POST)
        return
    if origin not in _own_origins(request):
        raise PermissionDenied(f"requests from {origin} are not accepted", message="Forbidden.")


def _own_origins(request: web.Request) -> set[str]:
    public = urlsplit(request.app[SETTINGS].public_url)
    return {f"{request.scheme}://{request.host}", f"{public.scheme}://{public.netloc}"}


def _secure(request: web.Request) -> bool:
    return request.secure or request.app[SETTINGS].public_url.startswith("https://")


def set_cookie(response: web.StreamResponse, request: web.Request, session: ConsoleSession) -> None:
    response.set_cookie(
        COOKIE,
        session.session_id,
        max_age=int(request.app[SESSIONS].ttl_s),
        path="/console",
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
    )


def forget_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path="/console")
