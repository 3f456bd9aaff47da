"""Everything survives a restart; provider secrets never leave in a response or a log line."""

from __future__ import annotations

import logging

import pytest

from engine.app import create_app
from engine.config import Settings
from engine.logs import configure_logging
from engine.providers.provisioning import LocalOnlyProvisioner
from tests.platform_client import BRIDGES, CONFIGS, make_org

SECRET = "s3cr3t-auth-token-value-0123456789"


@pytest.fixture
def json_logging():  # type: ignore[no-untyped-def]
    configure_logging("json", "debug")
    yield
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_callbridge", False)]:
        root.removeHandler(handler)


async def test_state_survives_a_restart(aiohttp_client, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    first = await aiohttp_client(create_app(settings, provisioner=LocalOnlyProvisioner()))
    org = await make_org(first, "acme")
    config = await org.create_config("twilio", auth_token=SECRET)
    bridge = await org.create_bridge("Persistent", webhook_url="https://app.example/hook")
    await org.call(
        "POST",
        f"{BRIDGES}{bridge['slug']}/connect-provider/",
        {"provider_config_id": config["id"], "phone_number": "+14155550100"},
    )
    await first.close()

    second = await aiohttp_client(create_app(settings, provisioner=LocalOnlyProvisioner()))
    org.client = second
    got = await org.call("GET", f"{BRIDGES}{bridge['slug']}/")
    assert got.status == 200, "the token must still authenticate after a restart"
    data = got.body["data"]
    assert data["webhook_url"] == "https://app.example/hook"
    assert [n["number"] for n in data["numbers"]] == ["+14155550100"]
    assert data["provider_credential"]["id"] == config["id"]
    configs = await org.call("GET", CONFIGS)
    assert configs.body["count"] == 1


async def test_auth_token_never_in_responses_or_logs(
    aiohttp_client,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
    capsys: pytest.CaptureFixture[str],
    json_logging: None,
) -> None:
    caplog.set_level(logging.DEBUG)
    client = await aiohttp_client(create_app(settings, provisioner=LocalOnlyProvisioner()))
    org = await make_org(client, "acme")
    bodies: list[str] = []

    async def call(method: str, path: str, json: object = None) -> dict:  # type: ignore[type-arg]
        reply = await org.call(method, path, json)
        bodies.append(reply.text)
        return reply.body  # type: ignore[no-any-return]

    created = await call(
        "POST", CONFIGS, {"provider": "twilio", "account_sid": "AC9", "auth_token": SECRET}
    )
    config_id = created["data"]["id"]
    await call("GET", CONFIGS)
    await call("GET", f"{CONFIGS}{config_id}/")
    await call("PATCH", f"{CONFIGS}{config_id}/", {"auth_token": SECRET + "-rotated"})
    await call("PATCH", f"{CONFIGS}{config_id}/", {"auth_token": 12})
    bridge = (await call("POST", BRIDGES, {"name": "Leak check"}))["data"]
    await call(
        "POST",
        f"{BRIDGES}{bridge['slug']}/connect-provider/",
        {"provider_config_id": config_id, "phone_number": "+14155550101"},
    )
    await call("GET", f"{BRIDGES}{bridge['slug']}/")
    await call(
        "POST",
        f"{BRIDGES}{bridge['slug']}/connect-provider/",
        {"provider_credential_id": config_id},
    )
    await call("POST", CONFIGS, {"provider": "twilio", "account_sid": "AC9", "auth_token": SECRET})

    assert len(bodies) == 10
    for body in bodies:
        assert SECRET not in body
        assert "auth_token_ciphertext" not in body
    assert caplog.records, "the cycle must have been logged"
    assert SECRET not in caplog.text
    for record in caplog.records:
        assert SECRET not in str(record.msg)
    captured = capsys.readouterr()
    assert "provider configuration created" in captured.err
    assert SECRET not in captured.err + captured.out
