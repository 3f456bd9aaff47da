"""``install``: the composition root's one call to add the console to the app."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from aiohttp import web

from engine.api.keys import RUNTIME, STORE
from engine.api.ops import OPENAPI_DOC
from engine.console import controls, feed, listening, pages
from engine.console.assets import ConsoleAssets
from engine.console.hub import ConsoleHub
from engine.console.keys import ASSETS, HUB, SESSIONS
from engine.console.openapi import SECURITY_SCHEME, console_paths
from engine.console.sessions import ConsoleSessions

__all__ = ["install"]


def install(app: web.Application) -> None:
    """Sessions, the hub over the app's runtime and store, the files, the routes; the hub runs
    while the app does, and open feeds end when it shuts down."""
    app[SESSIONS] = ConsoleSessions(time.time)
    app[HUB] = ConsoleHub(app[RUNTIME], app[STORE], time.time)
    app[ASSETS] = ConsoleAssets.load()
    app.cleanup_ctx.append(_hub_lifetime)
    app.on_shutdown.append(_end_feeds)
    # /openapi.json describes every route (tests/test_ops.py); ops built it before this call.
    doc = app[OPENAPI_DOC]
    doc["paths"].update(console_paths())
    doc["components"]["securitySchemes"]["ConsoleSession"] = SECURITY_SCHEME
    router = app.router
    router.add_get("/console", pages.console_page)
    router.add_get("/console/signin", pages.sign_in_page)
    router.add_post("/console/signin", pages.sign_in)
    router.add_post("/console/signout", pages.sign_out)
    router.add_get("/console/static/{name:.+}", pages.asset)
    router.add_get("/console/api/session", pages.session_info)
    router.add_get("/console/api/feed", feed.feed)
    router.add_get("/console/api/rooms/{room_id}/audio", listening.room_audio)
    router.add_get("/console/api/audit", controls.audit_list)
    router.add_post("/console/api/calls/{call_control_id}/actions/{action}", controls.control)


async def _hub_lifetime(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB]
    task = asyncio.create_task(hub.run())
    yield
    hub.stop()
    await task


async def _end_feeds(app: web.Application) -> None:
    app[HUB].end_streams()
