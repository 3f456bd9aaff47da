"""The two servers under test, each spawned as its own process pinned to one core, and how each
hands out the media streams of the legs it carries.

- ``engine_server``: ``callbridge serve`` spawned by ``benchmarks.loadtest.engine_host`` (uvloop
  when installed, as ``serve`` chooses), with a simulated Telnyx account and the load test's
  pairing application: each leg is a real incoming call placed through the Telnyx simulator,
  answered and bridged in pairs through the Call Control API, DTMF detection on as for every
  leg. The simulator's own stream client is told not to connect (``stream_fault="never"``);
  the stream it would have opened (the URL and token the engine gave in its ``answer``, the
  ``connected`` and ``start`` frames it would have sent) is opened by the lean generator
  instead. So the benchmark uses whatever media URL the engine hands out. A leg's media starts
  once the engine has bound its ``start`` (its ``streaming.started`` webhook): Telnyx streams
  at once, but a setup burst on a loaded machine can hold a ``start`` longer than the engine
  keeps media waiting behind it (``adapters/stream_session.py``, ``MAX_BACKLOG``), and setup is
  not what this benchmark measures.
- ``forwarder_server``: ``python -m benchmarks.forwarder``; a pair's two legs present one token.

``links(legs, opener)`` places ``legs`` and calls ``opener`` with each leg's ``LegLink`` as soon
as the server expects that leg's stream (the engine hangs up a leg whose media does not come).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson

from adapters.simulators import CallState, TelnyxSimulator
from adapters.simulators.telnyx_calls import TelnyxCall
from adapters.simulators.telnyx_stream import StreamConfig, TelnyxStream
from adapters.telnyx.gateway import MEDIA_PATH
from benchmarks.forwarder.frames import MediaTemplate, connected_frame, leg_payload, start_frame
from benchmarks.forwarder.lean_legs import LegLink
from benchmarks.loadtest.application import CallControl, PairingApp
from benchmarks.loadtest.engine_host import open_engine, pin_to_core
from benchmarks.loadtest.plan import LegPlan, Plan
from benchmarks.loadtest.provision import Accounts, Platform

__all__ = ["Opener", "ServerUnderTest", "engine_server", "forwarder_server"]

Opener = Callable[[LegLink], Awaitable[None]]
STREAM_WAIT_S = 20.0
START_WAIT_S = 20.0


class ServerUnderTest(Protocol):
    name: str
    pid: int

    async def links(self, legs: Sequence[LegPlan], opener: Opener) -> list[str]:
        """Set up ``legs``, opening each through ``opener``; what went wrong, leg by leg."""
        ...

    async def finish(self) -> None:
        """End the legs the server carries (before the generator closes its sockets)."""


@dataclass
class ForwarderServer:
    port: int
    pid: int
    name: str = "forwarder"

    async def links(self, legs: Sequence[LegPlan], opener: Opener) -> list[str]:
        for leg in legs:
            stream_id = str(uuid.uuid4())
            await opener(LegLink(
                index=leg.index,
                url=f"ws://127.0.0.1:{self.port}{MEDIA_PATH}?token=room-{leg.room}",
                headers={},
                opening=(connected_frame(), start_frame(leg, stream_id)),
                template=MediaTemplate(stream_id, leg_payload(leg)),
            ))  # fmt: skip
        return []

    async def finish(self) -> None:
        return None


@contextlib.asynccontextmanager
async def forwarder_server(core: int | None) -> AsyncIterator[ForwarderServer]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.forwarder", "--port", "0",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        pin_to_core(core, process.pid)
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), START_WAIT_S)
        if not line.startswith(b"listening "):
            raise RuntimeError(f"the forwarder did not start (said {line!r})")
        yield ForwarderServer(int(line.split()[1]), process.pid)
    finally:
        process.terminate()
        await process.wait()


class StreamsStarted:
    """The legs whose ``streaming.started`` webhook the application has received."""

    def __init__(self, app: PairingApp) -> None:
        self._app = app
        self._read = 0  # app.events already looked at
        self._started: set[str] = set()  # call_control_ids

    async def wait(self, leg: int, timeout_s: float = STREAM_WAIT_S) -> None:
        await self._app.wait_until(lambda: self._has(leg), timeout_s)

    def _has(self, leg: int) -> bool:
        events = self._app.events
        for event in events[self._read :]:
            if event.event_type == "streaming.started":
                self._started.add(str(event.payload.get("call_control_id")))
        self._read = len(events)
        return self._app.leg_ids.get(leg) in self._started


@dataclass
class EngineServer:
    pid: int
    plan: Plan
    accounts: Accounts
    app: PairingApp
    platform: Platform
    setup_rate: float
    name: str = "engine"

    def __post_init__(self) -> None:
        self._started = StreamsStarted(self.app)

    async def links(self, legs: Sequence[LegPlan], opener: Opener) -> list[str]:
        first, last = legs[0].room, legs[-1].room
        rooms = self.plan.rooms[first : last + 1]
        await self.platform.add_rooms(self.accounts, self.plan, rooms, self.app.url)
        tasks: list[asyncio.Task[str | None]] = []
        for leg in legs:
            call = await self.accounts.telnyx.place_inbound_call(
                leg.caller, leg.number, stream_fault="never"
            )
            tasks.append(asyncio.ensure_future(self._link(leg, call, opener)))
            await asyncio.sleep(1 / self.setup_rate)  # calls arrive at a steady rate
        return [problem for problem in await asyncio.gather(*tasks) if problem is not None]

    async def _link(self, leg: LegPlan, call: TelnyxCall, opener: Opener) -> str | None:
        """Open ``leg``'s stream once the engine has asked for it; else why it did not."""
        try:
            await call.wait_until(
                lambda c: c.streams_attempted > 0 or c.state is CallState.ENDED, STREAM_WAIT_S
            )
        except TimeoutError:
            return f"leg {leg.index}: no stream asked for within {STREAM_WAIT_S:g} s"
        if call.streams_attempted == 0:
            # The engine may refuse calls while its tick runs late (admission control).
            return f"leg {leg.index}: ended before its stream ({call.end_reason})"
        stream = TelnyxStream(call, _answer_stream(self.accounts.telnyx, call), "big")
        start = stream.start_message()
        start[stream.seq_key] = stream.next_seq()  # stamped as MediaStream.send does
        await opener(LegLink(
            index=leg.index,
            url=stream.url,
            headers=stream.headers,
            opening=(_text(stream.connected_message()), _text(start)),
            template=MediaTemplate(stream.stream_id, leg_payload(leg)),
            bound=lambda: self._started.wait(leg.index),
        ))  # fmt: skip
        return None

    async def finish(self) -> None:
        gate = asyncio.Semaphore(32)

        async def hang_up(call: TelnyxCall) -> None:
            if call.state is not CallState.ENDED:
                async with gate:
                    await call.hang_up()

        calls = list(self.accounts.telnyx.calls.values())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(15):
                await asyncio.gather(*(hang_up(call) for call in calls), return_exceptions=True)
        self.app.closing = True


def _answer_stream(simulator: TelnyxSimulator, call: TelnyxCall) -> StreamConfig:
    """The stream the engine asked for in its ``answer`` of ``call``."""
    path = f"/v2/calls/{call.call_control_id}/actions/answer"
    for request in simulator.requests:
        if request.path == path and request.status == 200:
            config = StreamConfig.parse(request.json, with_token=False)
            if config is not None:
                return config
    raise RuntimeError(f"the engine answered {call.call_control_id} without a stream")


def _text(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


@contextlib.contextmanager
def _environment(extra: Mapping[str, str]) -> Iterator[None]:
    """``extra`` in this process's environment while the engine is spawned (it inherits it)."""
    saved = {key: os.environ.get(key) for key in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.asynccontextmanager
async def engine_server(
    plan: Plan, *, core: int | None, env: Mapping[str, str], setup_rate: float
) -> AsyncIterator[EngineServer]:
    # The simulator and the application outlive the engine, so its last webhooks find them.
    accounts = Accounts()
    app = PairingApp(plan)
    try:
        await accounts.start()
        await app.start()
        async with contextlib.AsyncExitStack() as stack:
            with _environment(env):
                engine = await stack.enter_async_context(open_engine(spawn=True, engine_core=core))
            session = await stack.enter_async_context(aiohttp.ClientSession())
            app.calls = CallControl(session, engine.base_url, engine.token)
            platform = Platform(session, engine.base_url, engine.token, engine.org_handle)
            await accounts.configure(platform)
            assert engine.pid is not None
            yield EngineServer(engine.pid, plan, accounts, app, platform, setup_rate)
    finally:
        await app.close()
        await accounts.close()
