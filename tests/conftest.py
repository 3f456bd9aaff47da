from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from engine.app import create_app
from engine.config import Settings
from engine.providers.provisioning import LocalOnlyProvisioner
from tests.e2e_checks import check_protocol_errors
from tests.platform_client import Org, make_org

pytest_plugins = ("pytester",)  # tests/test_e2e_checks.py runs small suites of its own

SECRET_KEY = "test-secret-key-" + "k" * 32


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'callbridge.db'}",
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
