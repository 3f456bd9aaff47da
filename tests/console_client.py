"""A console client for tests: signs in with an organization's token, reads the feed (server-sent
events) message by message, and sends controls with the session's CSRF token. Each client keeps
its own cookie jar, as two browsers would."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson

WAIT_S = 10.0


class ConsoleClient:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        # unsafe: the engine under test is at 127.0.0.1, an IP address the default jar skips.
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""
        self._feed: aiohttp.ClientResponse | None = None
        self.latest: dict[str, Any] = {}  # the newest data of each event read so far

    async def close(self) -> None:
        if self._feed is not None:
            self._feed.close()
        await self.session.close()

    async def sign_in(self, token: str) -> aiohttp.ClientResponse:
        response = await self.session.post(
            self.base_url + "/console/signin", data={"token": token}, allow_redirects=False
        )
        if response.status == 303 and response.headers["Location"] == "/console":
            info = await self.session.get(self.base_url + "/console/api/session")
            self.csrf = (await info.json())["data"]["csrf_token"]
        return response

    async def act(
        self, leg: str, action: str, body: dict[str, Any] | None = None, *, csrf: str | None = None
    ) -> tuple[int, Any]:
        headers = {"X-CSRF-Token": self.csrf if csrf is None else csrf}
        response = await self.session.post(
            f"{self.base_url}/console/api/calls/{leg}/actions/{action}",
            json=body or {},
            headers=headers,
        )
        return response.status, await response.json()

    async def open_feed(self) -> aiohttp.ClientResponse:
        self._feed = await self.session.get(self.base_url + "/console/api/feed")
        return self._feed

    async def next_message(self, event: str) -> Any:
        """The data of the feed's next ``event`` message (others are read and kept in
        ``latest``)."""
        assert self._feed is not None
        name = ""
        async with asyncio.timeout(WAIT_S):
            while True:
                line = (await self._feed.content.readline()).decode().rstrip("\n")
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    self.latest[name] = orjson.loads(line.removeprefix("data: "))
                    if name == event:
                        return self.latest[name]

    async def message_where(self, event: str, holds: Any = lambda data: True) -> Any:
        """The newest ``event`` data for which ``holds(data)`` is true: the latest one read if
        it holds, else the next such message."""
        if event in self.latest and holds(self.latest[event]):
            return self.latest[event]
        async with asyncio.timeout(WAIT_S):
            while True:
                data = await self.next_message(event)
                if holds(data):
                    return data
