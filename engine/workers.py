"""``callbridge serve --workers N``: N engine processes on one machine, as N nodes (issue 16,
point 6). One process uses one core; N of them, one per core, share the database and Redis and
act as one engine (docs/DEPLOY.md), exactly as nodes on several machines do.

Each worker is a ``callbridge serve`` child with its own node: name ``<node id>-w<i>``, HTTP
port ``port + i`` (the API, provider webhooks and the console; the other workers reach it there:
``CALLBRIDGE_NODE_URL``), media port ``media port + i`` when there is one, and its own public
media URL, made from ``CALLBRIDGE_PUBLIC_MEDIA_URL`` with ``{worker}``, ``{port}`` or
``{media_port}`` filled in (a stream must reach the worker that holds its call, so the reverse
proxy routes each worker's media URL to it and the rest to any worker). Several workers need
what several nodes need: Redis, and a database every process can write (PostgreSQL).

This process only supervises: it starts the workers, starts again one that dies (at the same
ports and URLs, so it takes its predecessor's calls back at once), and passes SIGTERM and SIGINT
on, then waits for them all to stop.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from types import FrameType

from engine.config import Settings, sqlite_path
from engine.errors import ValidationError
from engine.logs import get_logger

__all__ = ["MAX_WORKERS", "supervise", "worker_environments"]

log = get_logger("callbridge.workers")

MAX_WORKERS = 64
PLACEHOLDERS = ("{worker}", "{port}", "{media_port}")
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)  # a worker that keeps dying is started less often
STABLE_AFTER_S = 30.0  # a worker up this long starts its backoff again
STOP_GRACE_S = 30.0  # after the workers' own drain or hand-over time


def worker_environments(
    settings: Settings, environ: Mapping[str, str], workers: int
) -> list[dict[str, str]]:
    """Each worker's environment: ``environ`` with its node's settings, or ValidationError
    naming what several workers need and is missing."""
    if not 2 <= workers <= MAX_WORKERS:
        raise ValidationError(
            f"--workers must be from 1 (one process, as without it) to {MAX_WORKERS}",
            field="workers",
        )
    if settings.redis_url is None:
        raise ValidationError(
            "--workers needs CALLBRIDGE_REDIS_URL: the workers share live calls through Redis",
            field="CALLBRIDGE_REDIS_URL",
        )
    if sqlite_path(settings.database_url) is not None or "sqlite" in settings.database_url:
        raise ValidationError(
            "--workers needs a PostgreSQL CALLBRIDGE_DATABASE_URL: SQLite takes one writer",
            field="CALLBRIDGE_DATABASE_URL",
        )
    if not settings.secret_key:
        raise ValidationError(
            "--workers needs CALLBRIDGE_SECRET_KEY: every worker must hold the same key",
            field="CALLBRIDGE_SECRET_KEY",
        )
    template = settings.public_media_url
    if template is None or not any(p in template for p in PLACEHOLDERS):
        raise ValidationError(
            "--workers needs CALLBRIDGE_PUBLIC_MEDIA_URL with {worker}, {port} or {media_port} "
            "(e.g. wss://calls.example.com/w{worker}): each worker's streams must reach it",
            field="CALLBRIDGE_PUBLIC_MEDIA_URL",
        )
    node = settings.node_id or socket.gethostname()
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    found = []
    for i in range(workers):
        port = settings.port + i
        media_port = settings.media_port + i if settings.media_port is not None else port
        env = dict(environ)
        env.update(
            CALLBRIDGE_HOST=settings.host,
            CALLBRIDGE_PORT=str(port),
            CALLBRIDGE_DATABASE_URL=settings.database_url,
            CALLBRIDGE_PUBLIC_URL=settings.public_url,
            CALLBRIDGE_NODE_ID=f"{node}-w{i}",
            CALLBRIDGE_NODE_URL=f"http://{host}:{port}",
            CALLBRIDGE_PUBLIC_MEDIA_URL=template.replace("{worker}", str(i))
            .replace("{port}", str(port))
            .replace("{media_port}", str(media_port)),
        )
        if settings.media_port is not None:
            env["CALLBRIDGE_MEDIA_PORT"] = str(media_port)
        found.append(env)
    return found


class _Worker:
    def __init__(self, index: int, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.index, self._argv, self._env = index, list(argv), dict(env)
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.failures = 0
        self.due = 0.0  # when to start it again after it died

    def start(self) -> None:
        self.process = subprocess.Popen(self._argv, env=self._env)
        self.started_at = time.monotonic()
        env = self._env
        log.info("worker started", worker=self.index, pid=self.process.pid,
                 port=env["CALLBRIDGE_PORT"], node=env["CALLBRIDGE_NODE_ID"])  # fmt: skip

    def died(self, now: float) -> bool:
        """Whether it has exited since it was started (then its restart is scheduled)."""
        if self.process is None or self.process.poll() is None:
            return False
        code = self.process.returncode
        self.process = None
        stable = now - self.started_at >= STABLE_AFTER_S
        self.failures = 0 if stable else self.failures + 1
        wait = RESTART_BACKOFF_S[min(self.failures, len(RESTART_BACKOFF_S) - 1)]
        self.due = now + wait
        log.warning("worker exited; starting it again", worker=self.index, code=code, in_s=wait)
        return True


def supervise(
    envs: Sequence[Mapping[str, str]], serve_args: Sequence[str], stop_after_s: float
) -> int:
    """Run one ``callbridge serve`` per environment until SIGTERM or SIGINT, starting again a
    worker that dies; then pass the signal on and wait (``stop_after_s``, then kill)."""
    argv = [sys.executable, "-m", "engine.cli", "serve", *serve_args]
    workers = [_Worker(i, argv, env) for i, env in enumerate(envs)]
    stopping: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for worker in workers:
            worker.start()
        while not stopping:
            now = time.monotonic()
            for worker in workers:
                if worker.process is None and now >= worker.due:
                    worker.start()
                else:
                    worker.died(now)
            time.sleep(0.2)
        return _stop(workers, stopping[0], stop_after_s)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stop(workers: Sequence[_Worker], signum: int, stop_after_s: float) -> int:
    running = [w.process for w in workers if w.process is not None]
    log.info("stopping the workers", signal=signal.Signals(signum).name, workers=len(running))
    for process in running:
        process.send_signal(signum)
    deadline = time.monotonic() + stop_after_s + STOP_GRACE_S
    code = 0
    for process in running:
        try:
            code |= process.wait(timeout=max(0.0, deadline - time.monotonic())) != 0
        except subprocess.TimeoutExpired:
            log.error("worker did not stop in time; killed", pid=process.pid)
            process.kill()
            process.wait()
            code = 1
    return code


def serve_args_of(drain: bool, drain_timeout_s: float) -> list[str]:
    """The arguments each worker's ``serve`` gets (everything else is in its environment)."""
    return ["--drain", "--drain-timeout", str(drain_timeout_s)] if drain else []
