"""How the adapters plug into the app: shared context, provider kits, routes, HTTP session.

The composition root (``engine.app.create_app``) calls ``adapter_context`` before it builds the
runtime (the directory is the runtime's gateway resolver) and ``install`` after, which lets each
provider register its kit and its routes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web

from adapters.context import AdapterContext, ProviderDirectory
from adapters.leg_tokens import LegTokens
from adapters.media_session import StreamSessions
from adapters.picows_media import serve_media
from adapters.telnyx import kit as telnyx_kit
from adapters.twilio import kit as twilio_kit
from adapters.wsagent import kit as wsagent_kit
from engine.admission.gate import Admission
from engine.admission.live import LiveLegs
from engine.api.keys import METRICS
from engine.config import Settings
from engine.crypto import SecretBox
from engine.runtime.runtime import CallRuntime
from engine.store.base import Store
from engine.url_policy import http_connector

ADAPTERS = web.AppKey("adapters", AdapterContext)


def adapter_context(
    *,
    settings: Settings,
    store: Store,
    secret_box: SecretBox,
    live: LiveLegs,
    secret_key: str,
    clock: Callable[[], float],
    admission: Admission | None = None,
) -> tuple[AdapterContext, ProviderDirectory]:
    context = AdapterContext(
        settings=settings,
        store=store,
        secret_box=secret_box,
        live=live,
        tokens=LegTokens(secret_key, clock),
        clock=clock,
        admission=admission if admission is not None else Admission(),
    )
    return context, ProviderDirectory(context)


def install(app: web.Application, context: AdapterContext, runtime: CallRuntime) -> None:
    context.runtime = runtime
    context.sessions = StreamSessions(runtime, app[METRICS])
    runtime.has_stream = context.sessions.has_stream
    app[ADAPTERS] = context
    app.cleanup_ctx.append(_http_session)
    if context.settings.media_port is not None:
        app.cleanup_ctx.append(_media_port)
    # Before the server waits for its handlers: a media socket would hold it up to its timeout.
    app.on_shutdown.append(_close_media)
    # Each provider adapter registers its kit and routes here, one import and one call each.
    telnyx_kit.install(app, context)
    twilio_kit.install(app, context)
    wsagent_kit.install(app, context)


async def _close_media(app: web.Application) -> None:
    sessions = app[ADAPTERS].sessions
    if sessions is not None:
        await sessions.close_all()


async def _media_port(app: web.Application) -> AsyncIterator[None]:
    async for _server in serve_media(app[ADAPTERS]):
        yield


async def _http_session(app: web.Application) -> AsyncIterator[None]:
    context = app[ADAPTERS]
    timeout = aiohttp.ClientTimeout(total=15.0)
    # Provider API bases are set by tenants: the connector applies the URL policy at connect time.
    connector = http_connector(allow_private=context.settings.allow_private_urls)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        context.http = session
        yield
        context.http = None
