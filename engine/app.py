"""The composition root: one function builds the whole application.

It wires settings, the store, the secret box, metrics, the live-leg index and the routes;
nothing else constructs these, and no module keeps mutable state of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from engine.api import bridges, ops, provider_configs
from engine.api.keys import LIVE_LEGS, METRICS, PROVISIONER, SECRET_BOX, SETTINGS, STORE
from engine.api.middleware import error_envelopes, request_context
from engine.config import Settings, resolve_secret_key
from engine.crypto import SecretBox
from engine.live import LiveLegIndex
from engine.metrics import Metrics
from engine.provisioning import LocalOnlyProvisioner, NumberProvisioner
from engine.store.base import Store
from engine.store.sql import SqlStore


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    provisioner: NumberProvisioner | None = None,
) -> web.Application:
    secret_key, _key_file = resolve_secret_key(settings)
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[request_context, error_envelopes],
    )
    app[SETTINGS] = settings
    app[STORE] = store if store is not None else SqlStore(settings.database_url)
    app[SECRET_BOX] = SecretBox(secret_key)
    app[METRICS] = Metrics()
    app[LIVE_LEGS] = LiveLegIndex()
    app[PROVISIONER] = provisioner if provisioner is not None else LocalOnlyProvisioner()
    app.cleanup_ctx.append(_store_lifetime)
    ops.add_routes(app)
    bridges.add_routes(app)
    provider_configs.add_routes(app)
    return app


async def _store_lifetime(app: web.Application) -> AsyncIterator[None]:
    store = app[STORE]
    await store.start()
    yield
    await store.close()
