"""The ``callbridge`` command: ``serve``, ``org create``, ``org limits`` and ``loadtest``."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import stat
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TypeVar

import orjson
from aiohttp import web

from engine import hot_path
from engine.admission.limits import effective_limits
from engine.api.keys import ADMISSION, RUNTIME, SETTINGS, SIGNING_KEYS, STORE
from engine.api.public_keys import keys_document
from engine.app import create_app
from engine.config import Settings, parse_count, parse_rate, resolve_secret_key, sqlite_path
from engine.crypto import new_api_token, token_digest
from engine.errors import CallbridgeError, NotFound, ValidationError
from engine.logs import configure_logging, get_logger
from engine.runtime.lifecycle import drain
from engine.store.base import OrgLimitsRecord, Store
from engine.store.copy import copy_database
from engine.store.sql import SqlStore
from engine.webhooks.signing import OrgSigningKeys
from engine.workers import serve_args_of, supervise, worker_environments

DEV_HANDLE = "dev"
DEFAULT_DRAIN_TIMEOUT_S = 300.0
MAX_DRAIN_TIMEOUT_S = 4 * 3600.0 + 60.0  # a leg lives at most 4 h
_Limit = TypeVar("_Limit", int, float)
log = get_logger("callbridge.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callbridge", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the engine")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--database", dest="database_url", help="database URL or SQLite file")
    serve.add_argument("--public-url", dest="public_url", help="base URL providers reach")
    serve.add_argument(
        "--dev", action="store_true", help="create a development organization and print its token"
    )
    serve.add_argument(
        "--drain",
        action="store_true",
        help="on SIGTERM wait for live calls to end, then hang up the rest (a planned shutdown); "
        "without it live calls are handed over to the next process on the same database",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="run this many engine processes (nodes) on this machine, one per core, on ports "
        "from --port up; needs Redis, PostgreSQL and a per-worker public media URL "
        "(docs/DEPLOY.md)",
    )
    serve.add_argument(
        "--drain-timeout",
        dest="drain_timeout",
        type=float,
        default=DEFAULT_DRAIN_TIMEOUT_S,
        help=f"how long --drain waits for calls to end (default {DEFAULT_DRAIN_TIMEOUT_S:g} s)",
    )

    org = commands.add_parser("org", help="manage organizations")
    org_commands = org.add_subparsers(dest="org_command", required=True)
    create = org_commands.add_parser("create", help="create an organization and its API token")
    create.add_argument("--handle", required=True, help="domain handle (the Org-Handle header)")
    create.add_argument("--name", required=True)
    create.add_argument("--database", dest="database_url")
    limits = org_commands.add_parser(
        "limits",
        help="show or override an organization's limits ('default' clears an override)",
    )
    limits.add_argument("--handle", required=True, help="the organization's domain handle")
    limits.add_argument("--max-legs", dest="max_legs", help="concurrent live legs")
    limits.add_argument("--api-rate", dest="api_rate", help="API requests per second")
    limits.add_argument("--api-burst", dest="api_burst", help="API requests at once")
    limits.add_argument("--database", dest="database_url")
    commands.add_parser(
        "loadtest", help="synthetic-leg load test (callbridge loadtest --help)", add_help=False
    )
    key = commands.add_parser(
        "public-key",
        help="print the Ed25519 public keys that verify an organization's webhooks",
    )
    key.add_argument("--handle", required=True, help="the organization's domain handle")
    key.add_argument("--database", dest="database_url")
    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    copy = db_commands.add_parser(
        "migrate",
        help="copy the whole database (organizations, numbers, live calls, webhooks) into an "
        "empty one, e.g. SQLite to PostgreSQL; stop the engine first",
    )
    copy.add_argument("--database", dest="database_url", help="the source (default: the setting)")
    copy.add_argument("--to", dest="target_url", required=True, help="the empty target's URL")
    return parser


async def create_organization(store: Store, handle: str, name: str) -> dict[str, object]:
    token = new_api_token()
    await store.start()
    try:
        org = await store.create_organization(handle, name, token_digest(token))
    finally:
        await store.close()
    return {"org_id": org.id, "domain_handle": org.domain_handle, "token": token}


async def ensure_dev_organization(store: Store, token_file: Path | None) -> tuple[str, str]:
    """The development organization's handle and a token for it, created on first start.

    Only a token's hash is in the database, so the plain token is kept in a 0600 file beside
    the SQLite file to be shown again on later starts.
    """
    kept = read_token_file(token_file)
    if kept is not None:
        org = await store.organization_for_token(token_digest(kept))
        if org is not None:
            return org.domain_handle, kept
    token = new_api_token()
    org = await store.organization_by_handle(DEV_HANDLE)
    if org is None:
        await store.create_organization(DEV_HANDLE, "Development", token_digest(token))
    else:
        await store.add_token(org.id, token_digest(token))
    if token_file is not None:
        write_token_file(token_file, token)
    return DEV_HANDLE, token


def read_token_file(token_file: Path | None) -> str | None:
    if token_file is None or not token_file.exists():
        return None
    return token_file.read_text().strip() or None


def write_token_file(token_file: Path, token: str) -> None:
    token_file.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(token_file, flags, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")


def serve(args: argparse.Namespace) -> int:
    settings = Settings.from_env().with_overrides(
        host=args.host,
        port=args.port,
        database_url=args.database_url,
        public_url=args.public_url,
        # --dev runs bots, webhooks and simulators on this machine: private URLs are the point.
        allow_private_urls=True if args.dev else None,
    )
    configure_logging(settings.log_format, settings.log_level)
    _key, key_file = resolve_secret_key(settings)
    if key_file is not None:
        log.warning(
            "CALLBRIDGE_SECRET_KEY is not set; using the key kept in a file",
            key_file=str(key_file),
        )
    if not 0 <= args.drain_timeout <= MAX_DRAIN_TIMEOUT_S:
        raise ValidationError(
            f"--drain-timeout must be from 0 to {MAX_DRAIN_TIMEOUT_S:g} seconds",
            field="drain_timeout",
        )
    drain_s = args.drain_timeout if args.drain else None
    if args.workers != 1:
        if args.dev:
            raise ValidationError("--dev runs one process: leave out --workers", field="workers")
        envs = worker_environments(settings, os.environ, args.workers)
        stop_after_s = drain_s if drain_s is not None else settings.shutdown_grace_s
        return supervise(envs, serve_args_of(args.drain, args.drain_timeout), stop_after_s)
    run_event_loop(run_server(settings, dev=args.dev, drain_s=drain_s))
    return 0


def run_event_loop(main_coroutine: Coroutine[None, None, None]) -> None:
    """uvloop when it is installed (the media path's socket work is cheaper on it)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_coroutine)
        return
    uvloop.run(main_coroutine)


async def organization_keys(settings: Settings, handle: str) -> dict[str, object]:
    """What ``GET /v2/public_key`` answers the organization ``handle`` (its ``data``)."""
    secret_key, _file = resolve_secret_key(settings)
    store = SqlStore(settings.database_url)
    await store.start()
    try:
        org = await store.organization_by_handle(handle)
        if org is None:
            raise NotFound(f"no organization has the handle {handle!r}")
        keys = OrgSigningKeys(secret_key, store, grace_s=settings.signing_key_grace_s)
        document = keys_document(await keys.published(org.id))
    finally:
        await store.close()
    data: dict[str, object] = document["data"]
    return data


def public_key(args: argparse.Namespace) -> int:
    settings = Settings.from_env().with_overrides(database_url=args.database_url)
    print(orjson.dumps(asyncio.run(organization_keys(settings, args.handle.strip()))).decode())
    return 0


async def run_server(settings: Settings, *, dev: bool, drain_s: float | None = None) -> None:
    """Serve until SIGTERM or SIGINT. Then stop admitting new calls at once (``/readyz`` 503,
    inbound calls busy, dials 503) and either hand the live calls over (keep answering for
    ``shutdown_grace_s`` so load balancers see the 503, then stop: the store holds every call
    for the next process) or, with ``drain_s``, drain them (engine/runtime/lifecycle.py); then stop
    listening, finish the requests in flight and clean up."""
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=10.0)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        # Listening now: the adopted calls' providers may be told to stream here.
        await app[RUNTIME].resume()
        build = hot_path.Build()
        log.info(
            "listening",
            host=settings.host,
            port=settings.port,
            public_url=settings.public_url,
            database=settings.database_url,
            allow_private_urls=settings.allow_private_urls,
            media_hot_path="compiled" if build.compiled_modules() else "interpreted",
        )
        if changed := build.changed_sources():
            log.warning(
                "the compiled media modules were built from older sources, so old code runs: "
                + hot_path.REBUILD_HINT,
                changed=changed,
            )
        if dev:
            await print_dev_organization(app)
        await stop.wait()
        await leave(app, settings, drain_s)
    finally:
        await runner.cleanup()
        log.info("stopped")


async def leave(app: web.Application, settings: Settings, drain_s: float | None) -> None:
    app[ADMISSION].close("shutting down")
    if drain_s is None:
        log.info("shutting down: live calls are handed over", grace_s=settings.shutdown_grace_s)
        await asyncio.sleep(settings.shutdown_grace_s)  # still serving, /readyz 503
        return
    log.info("shutting down: draining live calls", timeout_s=drain_s)
    await drain(app[RUNTIME], app[STORE], drain_s, time.monotonic)


async def print_dev_organization(app: web.Application) -> None:
    db_file = sqlite_path(app[SETTINGS].database_url)
    token_file = db_file.with_name(db_file.name + ".dev-token") if db_file else None
    handle, token = await ensure_dev_organization(app[STORE], token_file)
    org = await app[STORE].organization_by_handle(handle)
    if org is None:  # ensure_dev_organization has just found or created it
        raise NotFound(f"the development organization {handle!r} vanished")
    current, *_retired = await app[SIGNING_KEYS].published(org.id)
    settings = app[SETTINGS]
    base = f"http://{settings.host}:{settings.port}"
    print(
        "\ncallbridge development organization\n"
        f"  URL:        {base}\n"
        f"  Org-Handle: {handle}\n"
        f"  Token:      {token}\n"
        f"  Webhook public key (Ed25519): {current.public_key}\n"
        f"  try: curl -H 'Authorization: Token {token}' -H 'Org-Handle: {handle}' "
        f"{base}/api/v2/platform/telephony/bridges/\n",
        flush=True,
    )


def _limit_change(
    raw: str | None, current: _Limit | None, parse: Callable[[str], _Limit]
) -> _Limit | None:
    """Not given: keep the override; "default": drop it; otherwise the parsed value."""
    if raw is None:
        return current
    return None if raw.strip().lower() == "default" else parse(raw)


async def set_org_limits(settings: Settings, args: argparse.Namespace) -> dict[str, object]:
    """Apply the given overrides and return the organization's limits in force."""
    store = SqlStore(settings.database_url)
    await store.start()
    try:
        org = await store.organization_by_handle(args.handle.strip())
        if org is None:
            raise NotFound(f"no organization has the handle {args.handle.strip()!r}")
        old = await store.org_limits(org.id)
        new = OrgLimitsRecord(
            max_legs=_limit_change(
                args.max_legs, old.max_legs, lambda v: parse_count("--max-legs", v)
            ),
            api_rate=_limit_change(
                args.api_rate, old.api_rate, lambda v: parse_rate("--api-rate", v)
            ),
            api_burst=_limit_change(
                args.api_burst, old.api_burst, lambda v: parse_count("--api-burst", v, minimum=1)
            ),
        )
        if new != old:
            await store.set_org_limits(org.id, new)
    finally:
        await store.close()
    return {
        "domain_handle": org.domain_handle,
        **asdict(effective_limits(settings, new)),
        "overrides": asdict(new),
    }


def org_limits(args: argparse.Namespace) -> int:
    settings = Settings.from_env().with_overrides(database_url=args.database_url)
    print(orjson.dumps(asyncio.run(set_org_limits(settings, args))).decode())
    return 0


def org_create(args: argparse.Namespace) -> int:
    settings = Settings.from_env().with_overrides(database_url=args.database_url)
    result = asyncio.run(
        create_organization(SqlStore(settings.database_url), args.handle.strip(), args.name)
    )
    print(orjson.dumps(result).decode())
    return 0


def db_migrate(args: argparse.Namespace) -> int:
    settings = Settings.from_env().with_overrides(database_url=args.database_url)
    counts = asyncio.run(copy_database(settings.database_url, args.target_url))
    print(orjson.dumps({"copied": counts}).decode())
    return 0


def loadtest(argv: Sequence[str]) -> int:
    """The load generator lives in ``benchmarks.loadtest`` (installed with the project)."""
    cli = importlib.import_module("benchmarks.loadtest.cli")
    return int(cli.main(argv))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["loadtest"]:
        return loadtest(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return serve(args)
        if args.command == "public-key":
            return public_key(args)
        if args.command == "db":
            return db_migrate(args)
        if args.org_command == "limits":
            return org_limits(args)
        return org_create(args)
    except CallbridgeError as exc:
        print(f"callbridge: {exc.detail}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
