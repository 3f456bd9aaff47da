"""The composition root: one function builds the whole application.

It wires settings, the store, the secret box, metrics, the live-leg index, the runtime, the
provider adapters and the routes; nothing else constructs these, and no module keeps mutable
state of its own. It is the one module of ``engine`` that imports ``adapters``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from adapters import wiring
from engine.admission.gate import Admission, TickLoad
from engine.admission.limits import OrgRateLimiter
from engine.admission.live import LiveLegIndex, LiveLegs
from engine.admission.live_redis import RedisLiveLegs
from engine.api import (
    bridges,
    calls,
    conferences,
    internal,
    ops,
    provider_configs,
    recordings,
    webhook_deliveries,
)
from engine.api.gathering import gather_legs
from engine.api.keys import (
    ADMISSION,
    LIVE_LEGS,
    METRICS,
    MOVER,
    NODE_AUTH,
    PROVISIONER,
    ROUTER,
    RUNTIME,
    SECRET_BOX,
    SETTINGS,
    SIGNING_KEYS,
    STORE,
)
from engine.api.middleware import error_envelopes, request_context
from engine.api.rate_limit import RATE_LIMITER, org_rate_limit
from engine.api.routing import route_to_owner
from engine.cluster.forward import Forwarder
from engine.cluster.handover import LegMover
from engine.cluster.node_auth import NodeAuth
from engine.cluster.owners import SoleNode
from engine.cluster.owners_redis import RedisLegOwners
from engine.cluster.routing import CallRouter
from engine.config import Settings, node_url_of, resolve_secret_key, sqlite_path
from engine.console import routes as console
from engine.crypto import SecretBox
from engine.live_metrics import LiveMetrics
from engine.machine.machine import CallMachine
from engine.media_plane.audio_fetch import AudioFetcher, AudioFetchLimits
from engine.media_plane.plane import MediaPlane
from engine.media_plane.tick import MediaTick
from engine.metrics import Metrics
from engine.providers.calls import ProviderCalls, RetryPolicy
from engine.providers.gateway import GatewayResolver
from engine.providers.provisioning import NumberProvisioner
from engine.providers.reconcile import ReconcileSettings
from engine.recordings import RecordingCatalog, RecordingUrls
from engine.runtime.ids import new_room_key
from engine.runtime.runtime import ENDED_LEG_RETENTION_S, CallRuntime
from engine.store.base import Store
from engine.store.sql import SqlStore
from engine.url_policy import http_connector
from engine.webhooks.outbox import WebhookOutbox
from engine.webhooks.signing import OrgSigningKeys
from media.blas import pin_blas_to_one_thread
from media.mixer import Mixer


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    provisioner: NumberProvisioner | None = None,
    resolver: GatewayResolver | None = None,
) -> web.Application:
    secret_key, _key_file = resolve_secret_key(settings)
    # The tick's matrix products (DTMF detection, weighted rooms) on this thread alone: a BLAS
    # thread pool woken inside a 20 ms tick costs more than it saves (media/blas.py).
    pin_blas_to_one_thread()
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        # Inside error_envelopes: a request over its organization's rate, or whose leg's node
        # cannot be reached, gets its envelope. A call command for another node's leg goes
        # there before the rate limit: the owner counts it (engine/api/routing.py).
        # A bridge or conference join naming another node's leg brings the legs together
        # after the rate limit: the command is counted once, where it is carried out.
        middlewares=[request_context, error_envelopes, route_to_owner, org_rate_limit, gather_legs],
    )
    app[SETTINGS] = settings
    app[STORE] = store if store is not None else SqlStore(settings.database_url)
    app[SECRET_BOX] = SecretBox(secret_key)
    app[METRICS] = Metrics()
    app[LIVE_LEGS] = live_legs(settings)
    app[ROUTER] = call_router(app[LIVE_LEGS])
    # Monotonic: a wall-clock step must neither refill nor drain the buckets.
    app[RATE_LIMITER] = OrgRateLimiter(time.monotonic)
    if provisioner is not None:
        app[PROVISIONER] = provisioner
    app[SIGNING_KEYS] = OrgSigningKeys(
        secret_key, app[STORE], grace_s=settings.signing_key_grace_s, clock=time.time
    )
    app[ADMISSION] = Admission(
        TickLoad(late_after_s=settings.overload_late_s), on_refused=app[METRICS].admission_refused
    )
    # The one place that knows the adapters: they depend on the engine, never the reverse.
    context, directory = wiring.adapter_context(
        settings=settings,
        store=app[STORE],
        secret_box=app[SECRET_BOX],
        live=app[LIVE_LEGS],
        secret_key=secret_key,
        clock=time.time,
        admission=app[ADMISSION],
    )
    if provisioner is None:
        app[PROVISIONER] = directory
    # Every leg's input starts with its one-frame jitter cushion (media/mixer.py).
    mixer = Mixer(cushion_at_start=True)
    app[RUNTIME] = CallRuntime(
        machine=CallMachine(
            media_wait_s=settings.media_wait_s,
            new_room_key=new_room_key,
            setup_timeout_s=settings.setup_timeout_s,
        ),
        plane=MediaPlane(
            mixer,
            recordings_dir(settings),
            media_dir=Path(settings.media_dir) if settings.media_dir else None,
            remote_audio=audio_fetcher(settings, mixer.sample_rate),
            on_recording_failed=app[METRICS].recording_failed,
        ),
        outbox=WebhookOutbox(
            app[STORE],
            app[SIGNING_KEYS],
            max_attempts=settings.webhook_max_attempts,
            retention_s=settings.webhook_retention_s,
        ),
        store=app[STORE],
        live=app[LIVE_LEGS],
        resolver=resolver if resolver is not None else directory,
        provider_calls=ProviderCalls(retry_policy(settings), observe=app[METRICS].provider_attempt),
        reconcile=ReconcileSettings(
            interval_s=settings.reconcile_interval_s, silence_s=settings.reconcile_silence_s
        ),
        recordings=RecordingCatalog(
            app[STORE],
            RecordingUrls(secret_key, settings.public_url, ttl_s=settings.recording_url_ttl_s),
            recordings_dir(settings),
        ),
        # Every tick's duration and lateness: exported, and judged for admission.
        tick=MediaTick(observers=(app[METRICS], app[ADMISSION].load)),
        observe_commit=app[METRICS].store_commit_seconds.observe,
        allow_private_urls=settings.allow_private_urls,
    )
    if isinstance(registry := app[LIVE_LEGS], RedisLiveLegs):
        # Several nodes: live leg rows name their owner, a dead node's calls are taken over
        # by the first node to notice, and a node that lost its calls meanwhile lets them go.
        app[STORE].fence_as(registry.node)
        registry.on_taken_over = app[RUNTIME].adoption.take_over
        registry.on_lost = app[RUNTIME].adoption.lose
    if not app[ROUTER].single_node:
        app[NODE_AUTH] = NodeAuth(secret_key)
        app[MOVER] = LegMover(
            app[ROUTER], app[NODE_AUTH], app[RUNTIME].adoption, node_url_of(settings)
        )
        internal.add_routes(app)
    app[METRICS].watch_media(app[RUNTIME].plane.stats.totals)
    live_metrics = LiveMetrics(app[RUNTIME])
    app[METRICS].watch(live_metrics, live_metrics.refresh)
    wiring.install(app, context, app[RUNTIME])
    app.cleanup_ctx.append(_store_lifetime)
    app.cleanup_ctx.append(_live_legs_lifetime)  # before the runtime: adoption holds legs
    app.cleanup_ctx.append(_runtime_lifetime)
    ops.add_routes(app)
    bridges.add_routes(app)
    provider_configs.add_routes(app)
    calls.add_routes(app)
    conferences.add_routes(app)
    recordings.add_routes(app)
    webhook_deliveries.add_routes(app)
    console.install(app)  # the operator console at /console
    return app


def live_legs(settings: Settings) -> LiveLegs:
    """The live-leg counts: shared by every node through Redis when CALLBRIDGE_REDIS_URL is
    set (engine/admission/live_redis.py), else this process's own (one node)."""
    if settings.redis_url is None:
        return LiveLegIndex()
    return RedisLiveLegs.from_url(
        settings.redis_url,
        prefix=settings.redis_prefix,
        node_id=settings.node_id,
        ttl_s=settings.redis_node_ttl_s,
        node_url=node_url_of(settings),
        ended_ttl_s=ENDED_LEG_RETENTION_S,  # an ended leg's owner known while it keeps it
    )


def call_router(live: LiveLegs) -> CallRouter:
    """Which node carries out a call command: with Redis, the owner of its leg, read from the
    live-leg registry (engine/cluster/); one node without."""
    if isinstance(live, RedisLiveLegs):
        return CallRouter(RedisLegOwners(live), Forwarder(live.node))
    return CallRouter(SoleNode(), None)


def audio_fetcher(settings: Settings, sample_rate: int) -> AudioFetcher:
    limits = AudioFetchLimits(
        max_bytes=settings.audio_max_bytes,
        timeout_s=settings.audio_fetch_timeout_s,
        max_seconds=settings.audio_max_seconds,
        cache_ttl_s=settings.audio_cache_ttl_s,
        cache_max_bytes=settings.audio_cache_max_bytes,
    )
    return AudioFetcher(sample_rate, limits, allow_private=settings.allow_private_urls)


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        budget_s=settings.provider_retry_budget_s,
        persistent_cap_s=settings.hangup_retry_cap_s,
    )


def recordings_dir(settings: Settings) -> Path:
    if settings.recordings_dir is not None:
        return Path(settings.recordings_dir)
    db_file = sqlite_path(settings.database_url)
    return (db_file.parent if db_file is not None else Path()) / "recordings"


async def _store_lifetime(app: web.Application) -> AsyncIterator[None]:
    store = app[STORE]
    await store.start()
    yield
    await store.close()


async def _live_legs_lifetime(app: web.Application) -> AsyncIterator[None]:
    """Redis reachable and this node registered before anything is adopted or admitted: a
    process that cannot count live legs does not start (``LiveLegsUnavailable``, naming
    CALLBRIDGE_REDIS_URL)."""
    live = app[LIVE_LEGS]
    await live.start()
    await app[ROUTER].start()
    yield
    await app[ROUTER].close()
    await live.close()


async def _runtime_lifetime(app: web.Application) -> AsyncIterator[None]:
    """The media tick and webhook delivery run while the app serves; on shutdown they stop,
    timers are cancelled, in-flight provider calls finish and recordings in progress are
    flushed and closed without ending (the next process continues them)."""
    runtime = app[RUNTIME]
    stop = asyncio.Event()
    # Webhook URLs are the tenants': the connector applies the URL policy at connect time.
    connector = http_connector(allow_private=app[SETTINGS].allow_private_urls)
    async with aiohttp.ClientSession(connector=connector) as session:
        # The calls an earlier process on this store left, before any new input; whoever serves
        # the app calls runtime.resume() once it listens (engine/cli.py run_server).
        await runtime.adopt(app[ROUTER].owners)  # with Redis: only calls no live node holds
        workers = [
            asyncio.create_task(runtime.outbox.run(session, stop)),
            asyncio.create_task(runtime.outbox.purge_loop(stop)),
            asyncio.create_task(runtime.run_media(stop)),
            asyncio.create_task(runtime.run_reconciliation(stop)),
            asyncio.create_task(app[METRICS].watch_loop_lag(stop)),
        ]
        yield
        stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
        await runtime.close()
        # Recordings in progress are not over: their files are closed properly (MP3 tail
        # encoded, WAV header final) for the next process to continue them.
        loop = asyncio.get_running_loop()
        unstored = await loop.run_in_executor(None, runtime.plane.recordings.suspend_all)
        for stored in unstored:  # opened since the last tick: the next process continues them
            await runtime.recording_files.store(stored)
        if runtime.plane.remote_audio is not None:
            await runtime.plane.remote_audio.close()
