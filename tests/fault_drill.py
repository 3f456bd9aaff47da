"""A fault drill: every fault the engine's metrics count, made for real against an engine running
a load test, and each fault's metrics seen moving on ``GET /metrics`` (issue 15).

The drill is a second organization on the same engine, with its own simulated Telnyx account,
so it also shows that one tenant's faults do not reach another's calls. Nothing is faked inside
the engine: the faults are on the wire, on the disk, in a receiver and in the event loop.

- **A room of three** (a bridge without ``webhook_url``: callbridge answers its callers into the
  bridge's conference, a mixed room). Caller A's network loses and reorders frames (lost, late,
  reordered; the mixer finds A's frame missing at its tick) and sends junk (dropped). Caller B's
  media server jumps a dozen frames ahead (the mixer drops what its queue cannot hold, then sheds
  the standing queue) and later stops reading its socket (output dropped). Caller C's stream is
  cut: Telnyx reports ``streaming.failed``, callbridge asks for a new stream (a reconnect).
- **A receiver that is down** (answers 503): a call to a bridge whose ``webhook_url`` it is
  leaves its webhooks waiting (the backlog and the age of its oldest) and, with the engine set to
  two attempts, dead-lettered.
- **A recording whose disk fails**: the organization's recording directory cannot be created
  (a file is in its place), so ``record_start`` ends in ``call.recording.error``.
- **A stalled event loop** (the engine runs in this process): one long stall skips ticks; then
  a run of short ones makes most ticks late, the engine says it is overloaded, and a dial is
  refused 429 (an admission refusal).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from adapters.simulators import TelnyxCall
from adapters.simulators.audio import ToneSource
from adapters.simulators.common import LocalServer
from adapters.simulators.pacing import NO_IMPAIRMENTS, Impairments
from benchmarks.loadtest.engine_host import Engine
from benchmarks.loadtest.provision import Accounts, Platform
from engine.api.keys import SETTINGS, STORE
from engine.crypto import new_api_token, token_digest

__all__ = ["DRILL_SETTINGS", "FaultDrill", "Samples", "family_total", "open_drill", "scrape"]

#: What the drill needs of the engine's settings: a webhook is dead-lettered after two attempts.
DRILL_SETTINGS: Mapping[str, Any] = {"webhook_max_attempts": 2}

#: (sample name, sorted labels) -> value, for the engine's own ``callbridge_`` samples.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

#: How long a fault may take to show: generous, for a loaded two-core CI machine.
WITHIN_S = 30.0


async def scrape(session: aiohttp.ClientSession, base_url: str) -> Samples:
    async with session.get(f"{base_url}/metrics") as reply:
        assert reply.status == 200
        text = await reply.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("callbridge_") and not sample.name.endswith("_created")
    }


def family_total(samples: Samples, family: str) -> float:
    """A family's samples summed (a histogram's buckets aside)."""
    return sum(
        v for (name, _), v in samples.items()
        if name in (family, f"{family}_total", f"{family}_sum", f"{family}_count")
    )  # fmt: skip


@dataclass
class FaultDrill:
    engine: Engine
    session: aiohttp.ClientSession
    accounts: Accounts
    platform: Platform
    token: str
    org_id: int
    room: str = ""  # the room of three's bridge (a dial's connection_id)
    #: Per fault metric, the scrape in which it was first seen moved (the test's evidence).
    seen: dict[str, Samples] = field(default_factory=dict)
    _baseline: Samples = field(default_factory=dict)
    _calls: list[TelnyxCall] = field(default_factory=list)

    async def run(self, quiet: asyncio.Event | None = None) -> None:
        """Every fault in turn. The loop stalls wait for ``quiet`` (set once the load test's
        calls are all up: a stall during their set-up would turn them away)."""
        self._baseline = await scrape(self.session, self.engine.base_url)
        await self._room_of_three()
        await self._receiver_down()
        await self._disk_fails()
        if quiet is not None:
            await quiet.wait()
        await self._loop_stalls()

    # --- the faults ------------------------------------------------------------------------------

    async def _room_of_three(self) -> None:
        slug = await self.platform.create_bridge("Fault drill room")
        callers = [
            await self._caller(slug, "+15557000001", 440.0, Impairments(loss=0.1, reorder=0.1)),
            await self._caller(slug, "+15557000002", 620.0),
            await self._caller(slug, "+15557000003", 880.0),
        ]
        a, b, c = callers
        for call in callers:
            await call.wait_until(lambda call: call.stream is not None, WITHIN_S)
        await self._moved(
            "callbridge_media_frames_lost", "callbridge_media_frames_late",
            "callbridge_media_frames_reordered", "callbridge_mixer_frames_missing",
        )  # fmt: skip
        await a.inject_junk()
        await self._moved("callbridge_media_frames_dropped")
        b.step_ahead(12)  # three times what the mixer queues for a leg
        await self._moved("callbridge_mixer_input_dropped_bytes", "callbridge_mixer_frames_shed")
        b.stall_reading()
        try:
            await self._moved("callbridge_media_output_dropped")
        finally:
            b.stall_reading(False)
        first = c.stream
        c.drop_stream()
        await c.wait_until(lambda call: call.stream not in (None, first), WITHIN_S)
        await self._moved("callbridge_media_stream_reconnects")
        self.room = slug

    async def _receiver_down(self) -> None:
        async def down(request: web.Request) -> web.Response:
            return web.Response(status=503, text="receiver down for maintenance")

        app = web.Application()
        app.router.add_post("/webhooks", down)
        receiver = LocalServer(app)
        url = await receiver.start()
        try:
            slug = await self.platform.create_bridge("Fault drill app", f"{url}/webhooks")
            await self._caller(slug, "+15557000004", 500.0)
            await self._moved("callbridge_webhook_backlog", "callbridge_webhook_oldest_age_seconds")
            await self._moved("callbridge_webhooks_dead_lettered")
        finally:
            await receiver.close()

    async def _disk_fails(self) -> None:
        directory = self._app[SETTINGS].recordings_dir
        assert directory is not None, "the engine keeps recordings"
        in_the_way = Path(directory) / f"org-{self.org_id}"
        await asyncio.to_thread(_block_directory, in_the_way)
        leg = await self._a_participant()
        reply = await self._post(
            f"/v2/calls/{leg}/actions/record_start", {"format": "wav", "channels": "single"}
        )
        assert reply[0] == 200, reply
        await self._moved("callbridge_recordings_failed")

    async def _loop_stalls(self) -> None:
        # The engine shares this process's event loop: blocking it is the engine stalling.
        time.sleep(0.3)  # noqa: ASYNC251 - the fault itself: a 300 ms stall skips ticks
        await self._moved("callbridge_ticks_skipped")
        async with _stalling(busy_s=0.045, every_s=0.06):
            await self._until(self._overloaded, "the engine to say it is overloaded")
            status, body = await self._post(
                "/v2/calls", {"connection_id": self.room, "from": "+15557000001",
                              "to": "+15557000009"},
            )  # fmt: skip
            assert status == 429, (status, body)
        await self._moved("callbridge_admission_refusals")

    # --- helpers ---------------------------------------------------------------------------------

    @property
    def _app(self) -> web.Application:
        assert self.engine.app is not None, "the drill stalls the engine's loop: in-process only"
        return self.engine.app

    async def _caller(
        self, slug: str, number: str, tone_hz: float, impairments: Impairments | None = None
    ) -> TelnyxCall:
        self.accounts.add_number("telnyx", number)
        await self.platform.connect(slug, self.accounts.config_ids["telnyx"], number)
        call = await self.accounts.telnyx.place_inbound_call(
            "+15558000000", number, source=ToneSource(tone_hz),
            impairments=impairments or NO_IMPAIRMENTS,
        )  # fmt: skip
        self._calls.append(call)
        return call

    async def _a_participant(self) -> str:
        status, page = await self._get("/v2/conferences")
        assert status == 200, page
        conference = page["data"][0]["id"]
        status, page = await self._get(f"/v2/conferences/{conference}/participants")
        assert status == 200, page
        return str(page["data"][0]["call_control_id"])

    async def _overloaded(self) -> bool:
        async with self.session.get(f"{self.engine.base_url}/readyz") as reply:
            return reply.status == 503

    async def _moved(self, *families: str) -> None:
        """Until every one of ``families`` has moved from the drill's first scrape."""
        waiting = set(families)

        async def check() -> bool:
            now = await scrape(self.session, self.engine.base_url)
            for name in list(waiting):
                if family_total(now, name) != family_total(self._baseline, name):
                    self.seen[name] = now
                    waiting.discard(name)
            return not waiting

        await self._until(check, f"{sorted(waiting)} to move")

    async def _until(self, check: Callable[[], Any], what: str) -> None:
        deadline = time.monotonic() + WITHIN_S
        while not await check():
            if time.monotonic() > deadline:
                raise AssertionError(f"fault drill: timed out waiting for {what}")
            await asyncio.sleep(0.05)  # polling the engine's own endpoints, with a deadline

    async def _get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.engine.base_url + path, headers=self._auth) as reply:
            return reply.status, await reply.json(content_type=None)

    async def _post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        async with self.session.post(
            self.engine.base_url + path, json=body, headers=self._auth
        ) as reply:
            return reply.status, await reply.json(content_type=None)

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def hang_up(self) -> None:
        for call in self._calls:
            with contextlib.suppress(Exception):
                await call.hang_up()


def _block_directory(path: Path) -> None:
    """A file where a directory is to be made: creating anything under it fails (ENOTDIR)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("a file where the directory should be")


@contextlib.asynccontextmanager
async def _stalling(*, busy_s: float, every_s: float) -> AsyncIterator[None]:
    """The event loop blocked ``busy_s`` of every ``every_s`` while inside: an engine short of
    CPU, its media ticks running late."""
    loop = asyncio.get_running_loop()
    handle: asyncio.TimerHandle | None = None

    def block() -> None:
        nonlocal handle
        time.sleep(busy_s)  # the fault itself
        handle = loop.call_later(every_s - busy_s, block)

    handle = loop.call_later(0, block)
    try:
        yield
    finally:
        handle.cancel()


@contextlib.asynccontextmanager
async def open_drill(engine: Engine, session: aiohttp.ClientSession) -> AsyncIterator[FaultDrill]:
    """A second organization on ``engine`` (in-process), with its own simulated Telnyx account."""
    assert engine.app is not None, "the drill needs an engine in this process"
    token = new_api_token()
    org = await engine.app[STORE].create_organization("drill", "Fault drill", token_digest(token))
    accounts = Accounts()
    await accounts.start()
    try:
        platform = Platform(session, engine.base_url, token, "drill")
        await accounts.configure(platform)
        drill = FaultDrill(engine, session, accounts, platform, token, org.id)
        try:
            yield drill
        finally:
            await drill.hang_up()
    finally:
        await accounts.close()
