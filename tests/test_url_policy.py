"""The outbound URL policy (engine/url_policy.py): what tenants may make callbridge connect to.

Without ``allow_private_urls`` (the default) loopback, private, link-local, metadata and other
non-public addresses are refused at the API, naming the field, and again at connect time on the
address actually connected to; with it (``serve --dev``) they are allowed. Host names are
resolved by a fixed resolver here, as a DNS server would answer, so nothing leaves the machine.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestClient, TestServer

from adapters.wiring import adapter_context
from adapters.wsagent.gateway import WebsocketAgentGateway
from engine.admission.live import LiveLegIndex
from engine.app import create_app
from engine.config import Settings
from engine.crypto import SecretBox
from engine.errors import ProviderError, ValidationError
from engine.machine.effects import DialCall
from engine.providers.provisioning import LocalOnlyProvisioner
from engine.store.sql import SqlStore
from engine.url_policy import (
    ForbiddenAddress,
    GuardedConnector,
    check_url,
    host_refusal,
    open_guarded_socket,
    refusal,
)
from engine.webhooks.outbox import WebhookOutbox
from engine.webhooks.signing import OrgSigningKeys
from tests.platform_client import BRIDGES, CONFIGS, Org, make_org

SECRET = "url-policy-test-secret-" + "k" * 32

REFUSED_HOSTS = [
    ("127.0.0.1", "loopback"),
    ("[::1]", "loopback"),
    ("localhost", "loopback"),
    ("api.localhost", "loopback"),
    ("127.1", "loopback"),  # legacy IPv4 forms the socket layer reads as 127.0.0.1
    ("2130706433", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.9", "private"),
    ("192.168.1.1", "private"),
    ("[fd12:3456::1]", "private"),  # ULA
    ("169.254.10.10", "link-local"),
    ("[fe80::1]", "link-local"),
    ("169.254.169.254", "metadata"),
    ("[fd00:ec2::254]", "metadata"),
    ("0.0.0.0", "unspecified"),
    ("[::]", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("[::ffff:127.0.0.1]", "loopback"),  # IPv6 carrying IPv4: mapped, 6to4, NAT64
    ("[2002:a00:1::1]", "private"),
    ("[64:ff9b::a9fe:a9fe]", "metadata"),
    ("100.64.0.1", "not a public address"),  # carrier-grade NAT
]


class FixedResolver(AbstractResolver):
    """DNS as a server would answer it: every name resolves to the given addresses."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in self.addresses
        ]

    async def close(self) -> None:
        return None


def settings_for(tmp_path: Path, *, allow_private: bool) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'callbridge.db'}",
        secret_key=SECRET,
        allow_private_urls=allow_private,
    )


async def start(tmp_path: Path, *, allow_private: bool) -> tuple[TestClient, Org]:  # type: ignore[type-arg]
    app = create_app(
        settings_for(tmp_path, allow_private=allow_private), provisioner=LocalOnlyProvisioner()
    )
    client: TestClient = TestClient(TestServer(app))  # type: ignore[type-arg]
    await client.start_server()
    return client, await make_org(client, "acme", "Acme")


@pytest.fixture
async def strict(tmp_path: Path):  # type: ignore[no-untyped-def]
    client, org = await start(tmp_path, allow_private=False)
    yield org
    await client.close()


@pytest.fixture
async def relaxed(tmp_path: Path):  # type: ignore[no-untyped-def]
    client, org = await start(tmp_path, allow_private=True)
    yield org
    await client.close()


# -- the rule ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "reason"), REFUSED_HOSTS)
def test_non_public_hosts_are_refused_with_their_reason(host: str, reason: str) -> None:
    assert reason in (host_refusal(host.strip("[]")) or "")
    with pytest.raises(ValidationError) as refused:
        check_url(f"https://{host}/x", "webhook_url", schemes=("https",), allow_private=False)
    assert refused.value.field == "webhook_url"
    assert "webhook_url" in refused.value.detail and reason in refused.value.detail
    url = f"https://{host}/x"
    assert check_url(url, "webhook_url", schemes=("https",), allow_private=True) == url


@pytest.mark.parametrize("address", ["8.8.8.8", "203.0.114.7", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


def test_a_name_is_not_judged_before_it_is_resolved() -> None:
    # The API cannot know what a name resolves to at connect time: only the connector can.
    url = "https://hooks.example.com/cb"
    assert check_url(url, "webhook_url", schemes=("https",), allow_private=False) == url


def test_private_urls_are_refused_by_default_and_allowed_by_the_switch() -> None:
    assert Settings().allow_private_urls is False
    assert Settings.from_env({}).allow_private_urls is False
    on = Settings.from_env({"CALLBRIDGE_ALLOW_PRIVATE_URLS": "true"})
    assert on.allow_private_urls is True
    assert Settings.from_env({"CALLBRIDGE_ALLOW_PRIVATE_URLS": "0"}).allow_private_urls is False
    with pytest.raises(ValidationError) as bad:
        Settings.from_env({"CALLBRIDGE_ALLOW_PRIVATE_URLS": "perhaps"})
    assert bad.value.field == "CALLBRIDGE_ALLOW_PRIVATE_URLS"


# -- the APIs ---------------------------------------------------------------------------------

API_REFUSED = [
    "http://127.0.0.1:9/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/",
    "http://10.0.0.7/hook",
    "http://localhost:8080/hook",
]


@pytest.mark.parametrize("url", API_REFUSED)
async def test_bridges_api_refuses_a_private_webhook_url_with_400(strict: Org, url: str) -> None:
    created = await strict.call("POST", BRIDGES, {"name": "Support", "webhook_url": url})
    assert created.status == 400, created.text
    assert created.body["message"] == "Bridge creation failed."
    assert created.body["errors"].startswith("webhook_url must point to a public address")
    bridge = await strict.create_bridge("Support", webhook_url="https://hooks.example.com/cb")
    patched = await strict.call("PATCH", f"{BRIDGES}{bridge['slug']}/", {"webhook_url": url})
    assert patched.status == 400, patched.text
    assert "webhook_url" in patched.body["errors"]
    kept = await strict.call("GET", f"{BRIDGES}{bridge['slug']}/")
    assert kept.body["data"]["webhook_url"] == "https://hooks.example.com/cb"


@pytest.mark.parametrize("url", API_REFUSED)
async def test_provider_api_base_url_follows_the_same_policy(strict: Org, url: str) -> None:
    body = {"provider": "twilio", "account_sid": "AC" + "1" * 32, "auth_token": "t"}
    created = await strict.call("POST", CONFIGS, {**body, "api_base_url": url})
    assert created.status == 400, created.text
    assert created.body["errors"].startswith("api_base_url must point to a public address")
    config = await strict.create_config(api_base_url="https://api.twilio.com")
    patched = await strict.call("PATCH", f"{CONFIGS}{config['id']}/", {"api_base_url": url})
    assert patched.status == 400, patched.text
    assert "api_base_url" in patched.body["errors"]


async def test_with_the_switch_private_urls_are_accepted(relaxed: Org) -> None:
    for n, url in enumerate(API_REFUSED):
        bridge = await relaxed.create_bridge("Support", webhook_url=url)
        assert bridge["webhook_url"] == url
        config = await relaxed.create_config(account_sid=f"AC{n:032d}", api_base_url=url)
        assert config["api_base_url"] == url
        reply = await relaxed.call(
            "POST",
            "/v2/calls",
            CALL | {"to": url.replace("http", "ws", 1), "webhook_url": url},
            headers={"Authorization": f"Bearer {relaxed.token}"},
        )
        assert reply.status == 200, reply.text


CALL = {"connection_id": "support", "from": "+15550001111", "to": "+15550002222"}


def call_control_error(reply: Any, field: str) -> str:
    assert reply.status == 422, reply.text
    (error,) = reply.body["errors"]
    assert error["source"] == {"pointer": f"/{field}"}, error
    assert field in error["detail"]
    return str(error["detail"])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("to", "ws://127.0.0.1:9000/bot"),
        ("to", "wss://169.254.169.254/bot"),
        ("to", "ws://[::1]/bot"),
        ("webhook_url", "http://192.168.0.10/hook"),
        ("webhook_url", "http://169.254.169.254/"),
    ],
)
async def test_call_control_refuses_private_dial_targets_with_422(
    strict: Org, field: str, value: str
) -> None:
    bearer = {"Authorization": f"Bearer {strict.token}"}
    reply = await strict.call("POST", "/v2/calls", CALL | {field: value}, headers=bearer)
    assert "must point to a public address" in call_control_error(reply, field)


async def test_call_control_refuses_a_private_webhook_url_on_answer(strict: Org) -> None:
    bearer = {"Authorization": f"Bearer {strict.token}"}
    path = "/v2/calls/v3:no-such-leg/actions/answer"
    reply = await strict.call("POST", path, {"webhook_url": "http://127.0.0.1/h"}, headers=bearer)
    call_control_error(reply, "webhook_url")


# -- connect time -----------------------------------------------------------------------------


async def hook_server(aiohttp_server: Any) -> tuple[str, list[bytes]]:
    received: list[bytes] = []

    async def handle(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", handle)
    server = await aiohttp_server(app)
    return str(server.make_url("/hook")), received


async def test_the_connector_refuses_loopback_and_allows_it_with_the_switch(
    aiohttp_server: Any,
) -> None:
    url, received = await hook_server(aiohttp_server)
    async with aiohttp.ClientSession(connector=GuardedConnector()) as guarded:
        with pytest.raises(aiohttp.ClientConnectorError) as refused:
            await guarded.post(url, data=b"{}")
    assert isinstance(refused.value.os_error, ForbiddenAddress)
    assert received == []
    async with aiohttp.ClientSession() as plain, plain.post(url, data=b"{}") as resp:
        assert resp.status == 200
    assert received == [b"{}"]


@pytest.mark.parametrize("answer", ["10.9.8.7", "169.254.169.254", "fd00:ec2::254", "127.0.0.1"])
async def test_a_name_that_resolves_to_a_private_address_is_refused(answer: str) -> None:
    resolver = FixedResolver(answer)
    connector = GuardedConnector(resolver=resolver, use_dns_cache=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as refused:
            await session.get("http://rebound.example.com/")
    assert resolver.asked == ["rebound.example.com"]
    assert isinstance(refused.value.os_error, ForbiddenAddress)
    with pytest.raises(ForbiddenAddress):
        await open_guarded_socket("rebound.example.com", 80, FixedResolver(answer))


async def test_only_the_checked_public_addresses_are_connected_to() -> None:
    # One public and one private answer: the private one is dropped, never tried.
    resolver = FixedResolver("10.0.0.1", "93.184.215.14", "169.254.169.254")
    connector = GuardedConnector(resolver=resolver, use_dns_cache=False)
    try:
        resolved = await connector._resolve_host("mixed.example.com", 80)
    finally:
        await connector.close()
    assert [r["host"] for r in resolved] == ["93.184.215.14"]


async def test_a_refused_webhook_is_logged_counted_and_not_retried(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    url, received = await hook_server(aiohttp_server)
    store = SqlStore(f"sqlite:///{tmp_path / 'hooks.db'}")
    await store.start()
    try:
        outbox = WebhookOutbox(store, OrgSigningKeys(SECRET, store), max_attempts=8)
        await outbox.publish(org_id=1, leg_id="a", url=url, event_type="call.hangup", payload={})
        async with aiohttp.ClientSession(connector=GuardedConnector()) as session:
            assert await outbox.deliver_due(session) == 1
            assert await outbox.deliver_due(session) == 0, "a refused address is not retried"
        assert (outbox.refused, outbox.failed_attempts, outbox.delivered) == (1, 1, 0)
        assert await store.due_webhooks(float("inf"), 10) == []
        assert received == []
    finally:
        await store.close()


async def test_a_websocket_agent_at_a_private_address_fails_the_dial(tmp_path: Path) -> None:
    store = SqlStore("sqlite:///:memory:")
    context, _ = adapter_context(
        settings=settings_for(tmp_path, allow_private=False),
        store=store,
        secret_box=SecretBox(SECRET),
        live=LiveLegIndex(),
        secret_key=SECRET,
        clock=lambda: 0.0,
    )
    resolver = FixedResolver("169.254.169.254")
    gateway = WebsocketAgentGateway(context, resolver)
    for to in ("ws://bot.example.com/agent", "ws://127.0.0.1:9/agent"):
        dial = DialCall(
            call_control_id="v3:a",
            org_id=1,
            connection_id="support",
            from_="+15550001111",
            to=to,
            timeout_secs=5,
        )
        with pytest.raises(ProviderError, match="refused"):
            await gateway.dial(dial)
    assert gateway.counters.refused == 2
    assert resolver.asked == ["bot.example.com"]
