from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web

from engine.app import create_app
from engine.config import Settings
from engine.provisioning import LocalOnlyProvisioner
from tests.platform_client import Org, make_org

SECRET_KEY = "test-secret-key-" + "k" * 32


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'callbridge.db'}",
        secret_key=SECRET_KEY,
        public_url="http://127.0.0.1:8080",
        max_body_bytes=64 * 1024,
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
