"""The small application behind a bridge's ``webhook_url``: it answers and bridges pairs.

callbridge sends it Telnyx-shaped webhooks; it acts on them through the Call Control API, as a
customer's application would: ``call.initiated`` -> ``actions/answer``; once both legs of a pair
have sent ``call.answered`` -> ``actions/bridge`` (the pair's first seat as A, its second as B,
with ``bridge_options`` such as ``record``). A leg is recognised by its caller number, which the
plan gives each leg. Every webhook is acknowledged at once and handled in the background, and
kept with its arrival time on the shared monotonic clock, as is every command (sent, answered),
for the demo's account of events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from adapters.simulators.common import LocalServer
from benchmarks.loadtest.plan import Plan

__all__ = ["CallControl", "Event", "PairingApp"]


@dataclass(frozen=True, slots=True)
class Event:
    at: float  # monotonic
    event_type: str
    leg: int | None  # plan index, None if the caller is not in the plan
    payload: dict[str, Any]


class CallControl:
    """The Call Control API of one organization."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}

    async def action(
        self, call_control_id: str, action: str, body: Mapping[str, Any] | None = None
    ) -> tuple[int, Any]:
        url = f"{self._base}/v2/calls/{call_control_id}/actions/{action}"
        async with self._session.post(url, json=dict(body or {}), headers=self._headers) as reply:
            return reply.status, await reply.json(content_type=None)


@dataclass
class _Pair:
    answered: set[int] = field(default_factory=set)
    bridging: bool = False


class PairingApp:
    def __init__(
        self,
        plan: Plan,
        calls: CallControl | None = None,
        *,
        bridge_options: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan = plan
        self.calls = calls
        self.bridge_options = dict(bridge_options or {})
        self.clock = clock
        self.by_caller = {leg.caller: leg.index for leg in plan.legs}
        self.leg_ids: dict[int, str] = {}
        self.bridged: set[int] = set()
        self.events: list[Event] = []
        self.commands: list[tuple[float, float, str, int | None]] = []  # sent, answered, ...
        self.errors: list[str] = []
        self.closing = False  # the run is over: webhooks are kept but not acted on
        self.url = ""
        self._pairs: dict[int, _Pair] = {}
        self._server = LocalServer(self._app())
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hooks", self._hook)
        return app

    async def start(self) -> str:
        self.url = await self._server.start() + "/hooks"
        return self.url

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.close()

    async def _hook(self, request: web.Request) -> web.Response:
        data = orjson.loads(await request.read())["data"]
        payload = data.get("payload") or {}
        leg = self.by_caller.get(str(payload.get("from")))
        event = Event(self.clock(), str(data.get("event_type")), leg, payload)
        self.events.append(event)
        task = asyncio.ensure_future(self._handle(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._changed.set()
        return web.Response(text="ok")

    async def _handle(self, event: Event) -> None:
        leg = event.leg
        if leg is None or self.closing:
            return
        call_control_id = str(event.payload.get("call_control_id"))
        try:
            if event.event_type == "call.initiated":
                self.leg_ids[leg] = call_control_id
                await self._act(call_control_id, "answer", {})
            elif event.event_type == "call.answered":
                await self._answered(leg)
            elif event.event_type == "call.bridged":
                self.bridged.add(leg)
        except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
            if not self.closing:
                self.errors.append(f"{event.event_type} of leg {leg}: {exc!r}")
        finally:
            self._changed.set()

    async def _answered(self, leg: int) -> None:
        room = self.plan.legs[leg].room
        members = self.plan.rooms[room].legs
        if len(members) != 2:
            return
        pair = self._pairs.setdefault(room, _Pair())
        pair.answered.add(leg)
        if pair.bridging or len(pair.answered) < 2:
            return
        pair.bridging = True
        a, b = members
        body = {"call_control_id": self.leg_ids[b], **self.bridge_options}
        await self._act(self.leg_ids[a], "bridge", body)

    async def _act(self, call_control_id: str, action: str, body: dict[str, Any]) -> None:
        if self.calls is None:
            raise RuntimeError("the application has no Call Control API to act through")
        sent = self.clock()
        status, reply = await self.calls.action(call_control_id, action, body)
        leg = next((i for i, c in self.leg_ids.items() if c == call_control_id), None)
        self.commands.append((sent, self.clock(), action, leg))
        if status != 200:
            self.errors.append(f"{action} {call_control_id}: HTTP {status} {reply}")

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """True once ``predicate()`` holds (re-checked on every webhook), False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            return False
        return True
