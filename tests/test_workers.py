"""``callbridge serve --workers N`` (issue 16, point 6): N engine processes as N nodes.

The plan of each worker (its node, ports and URLs) is checked as data; the supervisor runs for
real: two workers on a fresh PostgreSQL database and the test Redis, one killed with SIGKILL
and started again, then both stopped with the supervisor's SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from engine.config import Settings
from engine.errors import ValidationError
from engine.workers import worker_environments
from tests.postgres import fresh_database
from tests.redis_server import REDIS_URL, redis_prefix

KEY = "workers-test-secret-" + "x" * 32
PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/callbridge"
BASE = {
    "CALLBRIDGE_SECRET_KEY": KEY,
    "CALLBRIDGE_DATABASE_URL": PG,
    "CALLBRIDGE_REDIS_URL": "redis://127.0.0.1:6379/0",
    "CALLBRIDGE_PORT": "8080",
    "CALLBRIDGE_MEDIA_PORT": "9000",
    "CALLBRIDGE_PUBLIC_URL": "https://calls.example.com",
    "CALLBRIDGE_PUBLIC_MEDIA_URL": "wss://calls.example.com/w{worker}",
    "CALLBRIDGE_NODE_ID": "box",
}
START_S = 40.0  # two processes starting on a loaded machine


def test_each_worker_is_a_node_with_its_own_ports_and_media_url() -> None:
    envs = worker_environments(Settings.from_env(BASE), BASE, 3)
    nodes = [Settings.from_env(env) for env in envs]
    assert [(s.port, s.media_port) for s in nodes] == [(8080, 9000), (8081, 9001), (8082, 9002)]
    assert [s.node_id for s in nodes] == ["box-w0", "box-w1", "box-w2"]
    assert [s.node_url for s in nodes] == [f"http://127.0.0.1:{p}" for p in (8080, 8081, 8082)]
    assert [s.public_media_url for s in nodes] == [
        f"wss://calls.example.com/w{i}" for i in range(3)
    ]
    shared = {(s.public_url, s.database_url, s.redis_url, s.secret_key) for s in nodes}
    assert len(shared) == 1


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"CALLBRIDGE_REDIS_URL": ""}, "CALLBRIDGE_REDIS_URL"),
        ({"CALLBRIDGE_DATABASE_URL": "sqlite:///x.db"}, "CALLBRIDGE_DATABASE_URL"),
        ({"CALLBRIDGE_SECRET_KEY": ""}, "CALLBRIDGE_SECRET_KEY"),
        ({"CALLBRIDGE_PUBLIC_MEDIA_URL": "wss://calls.example.com"}, "{worker}"),
    ],
)
def test_workers_need_redis_postgresql_one_key_and_a_media_url_per_worker(
    change: dict[str, str], named: str
) -> None:
    env = {**BASE, **change}
    with pytest.raises(ValidationError) as caught:
        worker_environments(Settings.from_env(env), env, 2)
    assert named in caught.value.detail


def two_free_ports() -> int:
    """A port p with p + 1 free too (the two workers' ports)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
        return port
    raise RuntimeError("no two consecutive free ports")


async def healthy(session: aiohttp.ClientSession, port: int) -> bool:
    with contextlib.suppress(aiohttp.ClientError):
        async with session.get(f"http://127.0.0.1:{port}/healthz") as reply:
            return reply.status == 200
    return False


async def alive_nodes(prefix: str) -> dict[str, str]:
    """node name -> the URL it registered, for every live node on ``prefix``."""
    client = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        found: dict[str, str] = {}
        async for key in client.scan_iter(match=f"callbridge:{{{prefix}}}:node:*:alive"):
            name = str(key).split(":node:", 1)[1].removesuffix(":alive")
            found[name] = str(await client.get(key) or "")
        return found
    finally:
        await client.aclose()


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until it holds: processes and Redis give no event to wait on."""
    try:
        async with asyncio.timeout(START_S):
            while True:
                if await check():
                    return
                await asyncio.sleep(0.1)  # polling other processes
    except TimeoutError:
        raise AssertionError(f"not within {START_S:g} s: {what}") from None


@pytest.mark.slow_family
async def test_two_workers_serve_restart_one_killed_and_stop_on_sigterm(tmp_path: Path) -> None:
    async with fresh_database() as url, redis_prefix() as prefix:
        port = two_free_ports()
        env = {
            **os.environ,
            **BASE,
            "CALLBRIDGE_DATABASE_URL": url,
            "CALLBRIDGE_REDIS_URL": REDIS_URL,
            "CALLBRIDGE_REDIS_PREFIX": prefix,
            "CALLBRIDGE_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "CALLBRIDGE_PUBLIC_MEDIA_URL": "ws://127.0.0.1:{port}",
            "CALLBRIDGE_RECORDINGS_DIR": str(tmp_path / "recordings"),
            "CALLBRIDGE_LOG_FORMAT": "json",
        }
        del env["CALLBRIDGE_MEDIA_PORT"]
        log = (tmp_path / "serve.log").open("wb")
        supervisor = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "engine.cli", "serve", "--workers", "2",
            "--host", "127.0.0.1", "--port", str(port),
            stdout=log, stderr=log, env=env,
        )  # fmt: skip
        try:
            async with aiohttp.ClientSession() as session:

                async def both_up() -> bool:
                    nodes = await alive_nodes(prefix)
                    return (
                        await healthy(session, port)
                        and await healthy(session, port + 1)
                        and sorted(nodes.values())
                        == [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"]
                    )

                await until(both_up, "both workers serving and registered")
                nodes = await alive_nodes(prefix)
                (first,) = [n for n, u in nodes.items() if u.endswith(f":{port}")]
                assert first.startswith("box-w0.")
                pid = int(first.split(".")[1])  # node names are <id>.<pid>.<random>

                os.kill(pid, signal.SIGKILL)  # worker 0 dies; the supervisor starts it again

                async def replaced() -> bool:
                    names = await alive_nodes(prefix)
                    again = [n for n, u in names.items() if u.endswith(f":{port}") and n != first]
                    return bool(again) and await healthy(session, port)

                await until(replaced, "worker 0 started again at its port")
            supervisor.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(supervisor.wait(), START_S) == 0
            async with aiohttp.ClientSession() as session:
                assert not await healthy(session, port) and not await healthy(session, port + 1)
        finally:
            if supervisor.returncode is None:
                supervisor.kill()
                await supervisor.wait()
            log.close()
        text = (tmp_path / "serve.log").read_text(errors="replace")
        assert text.count("worker started") == 3, text[-3000:]
        assert "worker exited; starting it again" in text
