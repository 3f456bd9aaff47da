"""A thin client for the platform API in tests: auth headers and JSON in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestClient

from engine.api.keys import STORE
from engine.crypto import new_api_token, token_digest

BRIDGES = "/api/v2/platform/telephony/bridges/"
CONFIGS = "/api/v2/platform/telephony/providers-configurations/"
PROVIDERS = "/api/v2/platform/telephony/providers/"


@dataclass
class Reply:
    status: int
    body: Any
    text: str


@dataclass
class Org:
    client: TestClient  # type: ignore[type-arg]
    org_id: int
    handle: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Token {self.token}",
            "Org-Handle": self.handle,
            "Product-ID": "test-product",
        }

    async def call(self, method: str, path: str, json: Any = None, **kwargs: Any) -> Reply:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        resp = await self.client.request(method, path, json=json, headers=headers, **kwargs)
        text = await resp.text()
        body = await resp.json() if resp.content_type == "application/json" else None
        return Reply(resp.status, body, text)

    async def create_bridge(self, name: str = "Support Bridge", **fields: Any) -> dict[str, Any]:
        reply = await self.call("POST", BRIDGES, {"name": name, **fields})
        assert reply.status == 201, reply.text
        return reply.body["data"]  # type: ignore[no-any-return]

    async def create_config(self, provider: str = "twilio", **fields: Any) -> dict[str, Any]:
        body = {"provider": provider, "account_sid": "AC" + "1" * 32, "auth_token": "tok-secret"}
        reply = await self.call("POST", CONFIGS, {**body, **fields})
        assert reply.status == 201, reply.text
        return reply.body["data"]  # type: ignore[no-any-return]


async def make_org(client: TestClient, handle: str, name: str = "Org") -> Org:  # type: ignore[type-arg]
    token = new_api_token()
    org = await client.app[STORE].create_organization(handle, name, token_digest(token))
    return Org(client, org.id, handle, token)
