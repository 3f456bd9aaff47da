"""Setting up a load test through the platform API, as a customer would.

``Accounts`` starts one simulated Twilio account and one simulated Telnyx account (a Call
Control connection) and creates a provider configuration for each, pointing at the simulator
(``api_base_url``). ``Platform.add_rooms`` then, per room: adds each leg's number to its
provider's simulated account and connects it to a bridge, which provisions it on the simulator
(the number's voice URL, or the connection's webhook URL, now point at callbridge). Pairs share
one bridge whose ``webhook_url`` is the pairing application; each larger room gets a bridge of
its own without ``webhook_url``, whose callers callbridge answers into the bridge's conference.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aiohttp

from adapters.simulators import TelnyxSimulator, TwilioSimulator
from benchmarks.loadtest.plan import Plan, Provider, RoomPlan

__all__ = ["Accounts", "Platform", "SetupError"]

BRIDGES = "/api/v2/platform/telephony/bridges/"
CONFIGS = "/api/v2/platform/telephony/providers-configurations/"
CONCURRENCY = 8


class SetupError(RuntimeError):
    """The platform API refused part of the setup."""


class Platform:
    """The Bridges platform API of one organization."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, token: str, org_handle: str
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Token {token}", "Org-Handle": org_handle}
        self.pairs_bridge: str | None = None
        self.room_bridges: dict[int, str] = {}

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self._session.post(self._base + path, json=body, headers=self._headers) as reply:
            document = await reply.json(content_type=None)
            if reply.status not in (200, 201):
                raise SetupError(f"POST {path}: HTTP {reply.status} {document}")
            data: dict[str, Any] = document["data"]
            return data

    async def create_bridge(self, name: str, webhook_url: str | None = None) -> str:
        body: dict[str, Any] = {"name": name}
        if webhook_url is not None:
            body["webhook_url"] = webhook_url
        return str((await self.post(BRIDGES, body))["slug"])

    async def connect(self, slug: str, config_id: int, number: str) -> None:
        body = {"provider_config_id": config_id, "phone_number": number}
        await self.post(f"{BRIDGES}{slug}/connect-provider/", body)

    async def add_rooms(
        self, accounts: Accounts, plan: Plan, rooms: Sequence[RoomPlan], app_url: str
    ) -> None:
        """Bridges and numbers for ``rooms`` (a few connections at a time)."""
        todo: list[tuple[str, int]] = []  # (bridge slug, leg)
        for room in rooms:
            if room.kind == "pair":
                if self.pairs_bridge is None:
                    self.pairs_bridge = await self.create_bridge("Load test pairs", app_url)
                slug = self.pairs_bridge
            else:
                slug = await self.create_bridge(f"Load test room {room.index}")
                self.room_bridges[room.index] = slug
            todo += [(slug, leg) for leg in room.legs]
        gate = asyncio.Semaphore(CONCURRENCY)

        async def connect(slug: str, leg: int) -> None:
            spec = plan.legs[leg]
            accounts.add_number(spec.provider, spec.number)
            async with gate:
                await self.connect(slug, accounts.config_ids[spec.provider], spec.number)

        await asyncio.gather(*(connect(slug, leg) for slug, leg in todo))


class Accounts:
    """One simulated Twilio account and one simulated Telnyx account (one Call Control
    connection), and callbridge's provider configuration of each."""

    def __init__(self) -> None:
        self.twilio = TwilioSimulator(webhook_timeout_s=30.0)
        self.telnyx = TelnyxSimulator(webhook_timeout_s=30.0)
        self.connection_id = ""
        self.config_ids: dict[Provider, int] = {}

    async def start(self) -> None:
        await self.twilio.start()
        await self.telnyx.start()
        self.connection_id = self.telnyx.add_connection(webhook_url=None)

    async def configure(self, platform: Platform) -> None:
        """callbridge's provider configurations, pointing at the simulators."""
        twilio = await platform.post(CONFIGS, {
            "provider": "twilio", "name": "Twilio (simulated)",
            "account_sid": self.twilio.account_sid, "auth_token": self.twilio.auth_token,
            "api_base_url": self.twilio.base_url,
        })  # fmt: skip
        telnyx = await platform.post(CONFIGS, {
            "provider": "telnyx", "name": "Telnyx (simulated)",
            "account_sid": self.connection_id, "auth_token": self.telnyx.api_key,
            "public_key": self.telnyx.public_key, "api_base_url": self.telnyx.base_url,
        })  # fmt: skip
        self.config_ids = {"twilio": int(twilio["id"]), "telnyx": int(telnyx["id"])}

    def add_number(self, provider: Provider, number: str) -> None:
        if provider == "twilio":
            if number not in self.twilio.numbers:
                self.twilio.add_number(number)
        elif number not in self.telnyx.numbers:
            self.telnyx.add_number(number)

    async def close(self) -> None:
        await asyncio.gather(self.twilio.close(), self.telnyx.close(), return_exceptions=True)
