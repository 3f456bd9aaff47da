"""The console's application keys (set by ``engine.console.routes.install``)."""

from __future__ import annotations

from aiohttp import web

from engine.console.assets import ConsoleAssets
from engine.console.hub import ConsoleHub
from engine.console.sessions import ConsoleSessions

SESSIONS = web.AppKey("console_sessions", ConsoleSessions)
HUB = web.AppKey("console_hub", ConsoleHub)
ASSETS = web.AppKey("console_assets", ConsoleAssets)
