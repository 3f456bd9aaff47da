"""Sign-in, sign-out, the console page, its session details and its files.

``POST /console/signin`` takes a form field ``token``: an API token of an organization, checked
with the API's own ``organization_by_token``. A good one opens a session (its id in the cookie,
``engine.console.guard``) and goes to ``/console``; a bad one goes back to the sign-in page with
a message. ``GET /console/api/session`` gives the page the organization's name and the session's
CSRF token, which the page sends with each control.

Every page and file carries a Content-Security-Policy that allows scripts, styles and
connections from the console's own origin only, and no framing.
"""

from __future__ import annotations

from aiohttp import web

from engine.api.auth import organization_by_token
from engine.api.keys import STORE
from engine.console.guard import (
    check_csrf,
    check_origin,
    forget_cookie,
    page_session,
    require_session,
    see_other,
    set_cookie,
)
from engine.console.keys import ASSETS, SESSIONS
from engine.crypto import token_digest
from engine.errors import AuthenticationError
from engine.logs import get_logger

__all__ = ["asset", "console_page", "session_info", "sign_in", "sign_in_page", "sign_out"]

log = get_logger("callbridge.console")

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # Not "no-referrer": with it Chromium sends "Origin: null" on the sign-in form's POST,
    # which the origin check must refuse. Same-origin requests only carry a referrer.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
ERROR_SLOT = b"<!--error-->"
REFUSED = "/console/signin?error=invalid"
SIGN_IN_REFUSED = b'<p class="error" role="alert">That token is not valid.</p>'


def _page(request: web.Request, name: str, replace: bytes = b"") -> web.Response:
    asset = request.app[ASSETS].get(name)
    assert asset is not None  # the pages are loaded at start (ConsoleAssets.load)
    body = asset.body.replace(ERROR_SLOT, replace)
    return web.Response(body=body, content_type="text/html", headers=SECURITY_HEADERS)


async def sign_in_page(request: web.Request) -> web.StreamResponse:
    refused = request.query.get("error") == "invalid"
    return _page(request, "signin.html", SIGN_IN_REFUSED if refused else b"")


async def sign_in(request: web.Request) -> web.StreamResponse:
    check_origin(request)
    form = await request.post()
    token = form.get("token")
    token = token.strip() if isinstance(token, str) else ""
    try:
        org = await organization_by_token(request.app[STORE], token)
    except AuthenticationError:
        log.info("console sign-in refused")
        return see_other(REFUSED)
    token_id = await request.app[STORE].api_token_id(token_digest(token))
    if token_id is None:  # revoked between the two reads
        return see_other(REFUSED)
    session = request.app[SESSIONS].open(org, token_id)
    log.info("console sign-in", org_id=org.id, token_id=token_id)
    response = see_other("/console")
    set_cookie(response, request, session)
    return response


async def sign_out(request: web.Request) -> web.StreamResponse:
    session = require_session(request)
    check_origin(request)
    check_csrf(request, session)
    request.app[SESSIONS].close(session.session_id)
    response = web.json_response({"data": {"result": "ok"}})
    forget_cookie(response)
    return response


async def console_page(request: web.Request) -> web.StreamResponse:
    if page_session(request) is None:
        return see_other("/console/signin")
    return _page(request, "console.html")


async def session_info(request: web.Request) -> web.StreamResponse:
    session = require_session(request)
    return web.json_response(
        {
            "data": {
                "organization": {
                    "id": session.org_id,
                    "domain_handle": session.org_handle,
                    "name": session.org_name,
                },
                "token_id": session.token_id,
                "csrf_token": session.csrf_token,
            }
        },
        headers={"Cache-Control": "no-store"},
    )


async def asset(request: web.Request) -> web.StreamResponse:
    found = request.app[ASSETS].served(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound()
    return web.Response(
        body=found.body,
        content_type=found.content_type,
        headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"},
    )
