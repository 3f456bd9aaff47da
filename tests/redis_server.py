"""Redis for the tests of the shared live-leg counts (issue 16, point 2), as tests/postgres.py is
for PostgreSQL.

The server is the machine's (``CALLBRIDGE_TEST_REDIS``, default ``redis://127.0.0.1:6379/0``, as
on every machine of this project and in CI). Each test gets a key prefix of its own, so tests
never see each other's keys (nor a deployment's sharing the server), and its keys are deleted
when it ends. Without a reachable server the Redis tests are skipped with the reason, except
under CI (``CI=true``), where a missing server fails the run.

``TcpRelay`` stands between an engine and Redis so a test can cut Redis away and bring it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

REDIS_URL = os.environ.get("CALLBRIDGE_TEST_REDIS", "redis://127.0.0.1:6379/0")


async def _client() -> Redis:
    client = Redis.from_url(REDIS_URL, socket_timeout=5, socket_connect_timeout=5)
    try:
        await client.ping()
    except (OSError, RedisError) as exc:
        await client.aclose()
        reason = f"Redis at {REDIS_URL} is not reachable: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI must run the Redis tests)")
        pytest.skip(reason)
    return client


@asynccontextmanager
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of the test's own (``CALLBRIDGE_REDIS_PREFIX``); its keys go at the end."""
    client = await _client()
    prefix = f"test-{uuid.uuid4().hex[:16]}"
    try:
        yield prefix
    finally:
        try:
            keys = [key async for key in client.scan_iter(match=f"callbridge:{{{prefix}}}:*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


async def keys_of(prefix: str) -> list[str]:
    client = await _client()
    try:
        found = [key async for key in client.scan_iter(match=f"callbridge:{{{prefix}}}:*")]
        return sorted(k.decode() if isinstance(k, bytes) else str(k) for k in found)
    finally:
        await client.aclose()


class TcpRelay:
    """A TCP relay to the test Redis (or to the server of ``target``, any URL with a host and
    port): ``url`` (``target`` with the relay's port) reaches it through the relay until ``cut``
    (open connections closed, new ones closed at once), and again after ``mend``."""

    def __init__(self, target: str = REDIS_URL) -> None:
        self._parts = urlsplit(target)
        self._target = (self._parts.hostname or "127.0.0.1", self._parts.port or 6379)
        self._path = self._parts.path
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.cut_off = False
        self.url = ""

    async def start(self) -> TcpRelay:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        user = f"{self._parts.username}@" if self._parts.username else ""
        query = f"?{self._parts.query}" if self._parts.query else ""
        self.url = f"{self._parts.scheme}://{user}127.0.0.1:{port}{self._path}{query}"
        return self

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> None:
        self.cut_off = True
        for writer in list(self._writers):
            writer.close()

    def mend(self) -> None:
        self.cut_off = False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers |= {writer, up_writer}
        pipes = [
            asyncio.ensure_future(self._pipe(reader, up_writer)),
            asyncio.ensure_future(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        for pipe in pipes:
            pipe.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
