"""The engine under test: started in this process, spawned as a pinned ``callbridge serve``, or
an engine already running (``--target``); and how its CPU and memory are read.

In-process, the engine and the generator share one event loop and one core: simple, and what
the test suite runs, but the figures are for both together. ``--spawn-engine`` runs
``python -m engine.cli serve`` (exactly ``callbridge serve``) as a child pinned to one core with
``sched_setaffinity`` (taskset semantics) while the generator pins itself to another, and reads
the child's CPU time and RSS from ``/proc/<pid>/stat`` and ``/proc/<pid>/status``.
``--target`` reaches an engine on this host (the simulators listen on 127.0.0.1); give its
``--token`` and ``--org-handle``, and ``--engine-pid`` to have its CPU read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from benchmarks.loadtest.nodes import WebhookFront, children, fresh_postgres, redis_prefix
from engine.api.keys import STORE
from engine.app import create_app
from engine.config import Settings
from engine.crypto import new_api_token, token_digest

__all__ = [
    "Engine",
    "Nodes",
    "ProcessStats",
    "event_loop_runner",
    "open_engine",
    "pin_to_core",
    "process_stats",
]

ORG_HANDLE = "loadtest"
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class ProcessStats:
    cpu_s: float  # user + system CPU seconds so far
    rss_bytes: int


def process_stats(pid: int | None) -> ProcessStats:
    """CPU seconds and resident memory of ``pid`` (None: this process)."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        pid = os.getpid()
        cpu = usage.ru_utime + usage.ru_stime
    else:
        with open(f"/proc/{pid}/stat") as handle:
            # Fields after the parenthesised command name; utime, stime are 14th and 15th.
            fields = handle.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / _TICKS
    with open(f"/proc/{pid}/statm") as handle:
        rss_pages = int(handle.read().split()[1])
    return ProcessStats(cpu, rss_pages * _PAGE)


def pin_to_core(core: int | None, pid: int = 0) -> bool:
    """Pin ``pid`` (0: this process) to ``core``; False where the platform cannot."""
    if core is None or not hasattr(os, "sched_setaffinity"):
        return False
    try:
        os.sched_setaffinity(pid, {core})
    except OSError:
        return False
    return True


@dataclass
class Engine:
    base_url: str
    token: str
    org_handle: str
    pid: int | None  # the engine's own process, when it is not this one
    mode: str  # in-process | spawned | target
    app: web.Application | None = None
    loop: str = "asyncio"
    log_path: Path | None = None
    workers: int = 1  # serve --workers: its children's CPU and memory are the engine's
    node_urls: tuple[str, ...] = ()  # serve --workers: each worker's base URL, in port order
    core: int | None = None  # where this process pinned it (and its workers), if it did

    def facts(self) -> dict[str, Any]:
        """What the report says of the engine."""
        return {"mode": self.mode, "url": self.base_url, "loop": self.loop, "pid": self.pid,
                "core": self.core, "workers": self.workers}  # fmt: skip

    def stats(self) -> ProcessStats | None:
        if self.mode == "in-process":
            return process_stats(None)
        if self.pid is None:
            return None
        pids = [self.pid, *children(self.pid)] if self.workers > 1 else [self.pid]
        try:
            each = [process_stats(pid) for pid in pids]
        except OSError:
            return None
        return ProcessStats(sum(s.cpu_s for s in each), sum(s.rss_bytes for s in each))


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def open_engine(
    *,
    target: str | None = None,
    token: str | None = None,
    org_handle: str | None = None,
    engine_pid: int | None = None,
    spawn: bool = False,
    engine_core: int | None = None,
    engine_loop: str = "asyncio",
    workdir: Path | None = None,
    settings: Mapping[str, Any] | None = None,
    nodes: Nodes | None = None,
) -> AsyncIterator[Engine]:
    """``settings``: ``Settings`` fields changed for an in-process engine (a test's, e.g. fewer
    webhook attempts); refused for an engine this process does not configure."""
    if settings and (target is not None or spawn):
        raise ValueError("settings are given only to an engine started in this process")
    if target is not None:
        if not token or not org_handle:
            raise ValueError("--target needs --token and --org-handle")
        yield Engine(target.rstrip("/"), token, org_handle, engine_pid, "target")
        return
    with tempfile.TemporaryDirectory(prefix="callbridge-loadtest-") as tmp:
        base = Path(tmp) if workdir is None else workdir
        if spawn and nodes is not None:
            async with _spawned_nodes(base, nodes, engine_core, engine_loop) as engine:
                yield engine
        elif spawn:
            async with _spawned(base, engine_core, engine_loop) as engine:
                yield engine
        else:
            async with _in_process(base, settings or {}) as engine:
                yield engine


@contextlib.asynccontextmanager
async def _in_process(base: Path, changes: Mapping[str, Any]) -> AsyncIterator[Engine]:
    sock = _free_socket()
    port = sock.getsockname()[1]
    settings = Settings(
        host="127.0.0.1",
        port=port,
        database_url=f"sqlite:///{base / 'callbridge.db'}",
        public_url=f"http://127.0.0.1:{port}",
        secret_key=secrets.token_urlsafe(48),
        log_level="error",
        recordings_dir=str(base / "recordings"),
        # Simulators, bots and webhook receivers all listen on 127.0.0.1.
        allow_private_urls=True,
    )
    settings = replace(settings, **changes)
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        token = new_api_token()
        await app[STORE].create_organization(ORG_HANDLE, "Load test", token_digest(token))
        loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
        yield Engine(settings.public_url, token, ORG_HANDLE, None, "in-process", app, loop)
    finally:
        await runner.cleanup()


_UVLOOP_BOOT = (
    "import sys, uvloop; uvloop.install(); from engine.cli import main; "
    "sys.exit(main(sys.argv[1:]))"
)


@contextlib.asynccontextmanager
async def _spawned(base: Path, core: int | None, loop: str) -> AsyncIterator[Engine]:
    database = f"sqlite:///{base / 'callbridge.db'}"
    env = _engine_env(base)
    org = await asyncio.to_thread(_create_org, database, env)
    with _free_socket() as probe:
        port = probe.getsockname()[1]
    env["CALLBRIDGE_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
    log_path = base / "engine.log"
    process = await asyncio.to_thread(_serve, port, database, env, loop, log_path)
    try:
        pinned = core if pin_to_core(core, process.pid) else None
        base_url = f"http://127.0.0.1:{port}"
        await _wait_healthy(base_url, process)
        yield Engine(base_url, org["token"], ORG_HANDLE, process.pid, "spawned", None, loop,
                     log_path, core=pinned)  # fmt: skip
    finally:
        await asyncio.to_thread(_stop, process)


@dataclass(frozen=True, slots=True)
class Nodes:
    """``serve --workers count`` on the PostgreSQL server and Redis these URLs name."""

    count: int
    database_url: str
    redis_url: str


@contextlib.asynccontextmanager
async def _spawned_nodes(
    base: Path, nodes: Nodes, core: int | None, loop: str
) -> AsyncIterator[Engine]:
    """``callbridge serve --workers`` on a fresh database and Redis prefix, behind a front;
    with ``core``, the supervisor and every worker pinned to it (the workers then share one
    core, as one node's legs do; unpinned, they share the machine with the generator)."""
    with _free_socket() as probe:
        port = probe.getsockname()[1]  # workers listen on port .. port + count - 1
    urls = [f"http://127.0.0.1:{port + i}" for i in range(nodes.count)]
    front = WebhookFront(urls)
    async with fresh_postgres(nodes.database_url) as database:
        env = {
            **_engine_env(base),
            "CALLBRIDGE_PUBLIC_URL": await front.start(),
            "CALLBRIDGE_PUBLIC_MEDIA_URL": "ws://127.0.0.1:{port}",
            "CALLBRIDGE_REDIS_URL": nodes.redis_url,
            "CALLBRIDGE_REDIS_PREFIX": redis_prefix(),
        }
        try:
            org = await asyncio.to_thread(_create_org, database, env)
            log_path = base / "engine.log"
            extra = ("--workers", str(nodes.count))
            process = await asyncio.to_thread(_serve, port, database, env, loop, log_path, extra)
            try:
                pinned = core if pin_to_core(core, process.pid) else None  # workers inherit it
                for url in urls:
                    await _wait_healthy(url, process)
                for worker in children(process.pid):  # any started before
                    pin_to_core(core, worker)
                # The API through the first node (it forwards commands on the others' legs).
                yield Engine(urls[0], org["token"], ORG_HANDLE, process.pid, "spawned", None,
                             loop, log_path, nodes.count, tuple(urls), pinned)  # fmt: skip
            finally:
                await asyncio.to_thread(_stop, process)
        finally:
            await front.close()


def _engine_env(base: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CALLBRIDGE_SECRET_KEY": secrets.token_urlsafe(48),
        "CALLBRIDGE_LOG_LEVEL": "warning",
        "CALLBRIDGE_LOG_FORMAT": "json",
        "CALLBRIDGE_RECORDINGS_DIR": str(base / "recordings"),
        # The load generator's bots and webhook receiver listen on 127.0.0.1.
        "CALLBRIDGE_ALLOW_PRIVATE_URLS": "true",
    }


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()


def _create_org(database: str, env: dict[str, str]) -> dict[str, str]:
    created = subprocess.run(
        [sys.executable, "-m", "engine.cli", "org", "create", "--handle", ORG_HANDLE,
         "--name", "Load test", "--database", database],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    org: dict[str, str] = json.loads(created.stdout)
    return org


def _serve(
    port: int,
    database: str,
    env: dict[str, str],
    loop: str,
    log_path: Path,
    extra: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    """``callbridge serve`` as a child (``-m engine.cli``, or under uvloop), logging to a file."""
    boot = ["-c", _UVLOOP_BOOT] if loop == "uvloop" else ["-m", "engine.cli"]
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, *boot, "serve", "--host", "127.0.0.1", "--port", str(port),
             "--database", database, *extra],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


async def _wait_healthy(base_url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the engine exited with status {process.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{base_url}/healthz") as reply:
                    if reply.status == 200:
                        return
            await asyncio.sleep(0.1)  # a child process starting: nothing to wait on but time
    raise RuntimeError("the engine did not answer /healthz within 20 s")


T = TypeVar("T")


def event_loop_runner(use_uvloop: bool) -> Callable[[Coroutine[Any, Any, T]], T]:
    """``uvloop.run`` when asked for and installed, else ``asyncio.run``."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            return asyncio.run
        return uvloop.run
    return asyncio.run
