from __future__ import annotations

import asyncio
import gc
import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from adapters.simulators import TwilioSimulator
from engine import hot_path
from engine.app import create_app
from engine.config import Settings
from engine.providers.provisioning import LocalOnlyProvisioner
from tests.e2e_checks import check_protocol_errors
from tests.platform_client import Org, make_org
from tests.postgres import both_databases, drop_all, made_now
from tests.twilio_env import TwilioEnv

pytest_plugins = ("pytester",)  # tests/test_e2e_checks.py runs small suites of its own

SECRET_KEY = "test-secret-key-" + "k" * 32


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compiled hot-path modules built from older sources would test old code."""
    if changed := hot_path.Build().changed_sources():
        pytest.exit(
            f"the compiled media modules were built from older sources: {hot_path.REBUILD_HINT}"
            f"; changed: {', '.join(changed)}",
            returncode=2,
        )


#: Tests between two full garbage collections (see ``pytest_runtest_setup``).
FULL_COLLECTION_EVERY = 50
_tests_run = itertools.count()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Keep the run's heap out of each test's garbage collections.

    Many tests judge real-time audio per 20 ms frame. Once a few thousand tests have run, a
    full collection of the run's whole heap takes hundreds of milliseconds (549 ms measured
    here), and one landing inside such a test stalls its engine and simulators together: frames
    go missing or pile up in a simulator's playout, a stall a production engine's heap never
    has. So what exists when a test starts is frozen (collections during the test scan only what
    it makes), and every ``FULL_COLLECTION_EVERY`` tests, between two tests, everything is
    unfrozen and collected, so earlier tests' garbage is still freed."""
    if next(_tests_run) % FULL_COLLECTION_EVERY == 0:
        gc.unfreeze()
        gc.collect()
    else:
        gc.collect(1)  # the young generations: cheap, and less garbage frozen with the rest
    gc.freeze()


@pytest.fixture(scope="session", autouse=True)
def postgres_databases_dropped() -> Iterator[None]:
    """The PostgreSQL databases the run made (tests/postgres.py) go when it ends."""
    yield
    asyncio.run(drop_all())


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # A module's own pytest_generate_tests runs too: theirs parametrize what they ask for.
    if metafunc.definition.get_closest_marker("both_databases") is not None:
        both_databases(metafunc)


@pytest.fixture
def database_kind() -> str:
    """SQLite, unless the test is marked ``both_databases`` (then it runs on each)."""
    return "sqlite"


@pytest.fixture
def settings(tmp_path: Path, database_kind: str) -> Settings:
    return Settings(
        database_url=made_now(database_kind, str(tmp_path / "callbridge.db")),
        secret_key=SECRET_KEY,
        public_url="http://127.0.0.1:8080",
        max_body_bytes=64 * 1024,
        # Simulators, bots and webhook receivers all listen on 127.0.0.1.
        allow_private_urls=True,
        # file:// playback reads from here only; recordings and the database stay outside it.
        media_dir=str(tmp_path / "media"),
    )


@pytest.fixture
def app(settings: Settings) -> web.Application:
    # Platform tests run callbridge in its local-only numbers mode: no provider is asked.
    return create_app(settings, provisioner=LocalOnlyProvisioner())


@pytest.fixture
async def client(aiohttp_client, app):  # type: ignore[no-untyped-def]
    return await aiohttp_client(app)


@pytest.fixture
async def org(client) -> Org:  # type: ignore[no-untyped-def]
    return await make_org(client, "acme", "Acme Inc")


@pytest.fixture
async def other_org(client) -> Org:  # type: ignore[no-untyped-def]
    return await make_org(client, "globex", "Globex")


@pytest.fixture(autouse=True)
def no_unexpected_protocol_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every test (and its other fixtures' teardown, since autouse fixtures are set up
    first): no simulator passed to ``tests.e2e_checks.watch`` recorded a protocol error, unless
    the test's ``expect_protocol_errors`` marker names its code; a marked test must record one."""
    yield
    marker = request.node.get_closest_marker("expect_protocol_errors")
    check_protocol_errors(None if marker is None else marker.args)


@pytest.fixture
async def twilio_sim() -> AsyncIterator[TwilioSimulator]:
    """The Twilio simulator, for tests of the app behind Twilio (``twilio_env``)."""
    async with TwilioSimulator() as simulator:
        yield simulator


@pytest.fixture
async def twilio_env(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, twilio_sim: TwilioSimulator
) -> TwilioEnv:
    """The app behind the Twilio simulator, with an organization (tests/twilio_env.py)."""
    return await TwilioEnv.start(aiohttp_server, aiohttp_client, tmp_path, twilio_sim)
