"""Test-only helpers for the Call Control API and runtime tests.

- ``RecordingGateway``: the recording fake provider adapter
  (``engine.providers.gateway.ProviderGateway``); it records every call and can be told to fail an
  operation with ``ProviderError``.
- ``FakeResolver``: hands that gateway out for dials, recording what it was asked.
- ``WebhookReceiver``: the application's webhook endpoint on 127.0.0.1; a test awaits "the next
  webhook of type X for leg Y" (asyncio conditions with a timeout, never sleeps).
- ``ManualTimers``: the runtime's timers, fired by hand.
- ``CollectingOutput``: a leg's media output that keeps every frame it is sent.
- ``Harness``: the real app (``create_app``) through ``aiohttp_client`` with all of the above,
  and the steps an adapter will take to create legs (bind, LegInitiated, LegAnswered, media).
- audio helpers: tone frames and the share of a frequency in what a leg heard.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import uuid
import wave
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import orjson
import telnyx
from aiohttp import web
from aiohttp.test_utils import TestClient
from numpy.typing import NDArray

from engine.admission.live import Place
from engine.api.keys import RUNTIME, STORE
from engine.app import create_app
from engine.config import Settings
from engine.errors import ProviderError
from engine.machine import events as ev
from engine.machine.effects import DialCall
from engine.machine.model import (
    DtmfSource,
    HangupCause,
    HangupSource,
    Leg,
    RejectCause,
    TimerKey,
    TimerKind,
)
from engine.providers.gateway import AdoptedLeg
from engine.runtime.runtime import CallRuntime
from media.codecs import PCMU_8K, AudioFormat, decode, encode
from tests.platform_client import Org, make_org

WAIT_S = 5.0  # the longest any test waits for something that should happen


# ---- the provider side -------------------------------------------------------------------------
class RecordingGateway:
    """A provider adapter that does nothing but remember what it was asked."""

    name = "fake"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []  # (operation, call_control_id), in order
        self.dials: list[DialCall] = []
        self.rejects: list[tuple[str, RejectCause]] = []
        self.forgotten: list[str] = []
        self._failures: dict[str, str] = {}
        self._waiters: list[tuple[str, str, asyncio.Event]] = []

    def fail(self, operation: str, reason: str = "provider refused the request") -> None:
        """Make every later call of ``operation`` raise ``ProviderError``."""
        self._failures[operation] = reason

    def ops(self, call_control_id: str) -> list[str]:
        return [op for op, leg in self.calls if leg == call_control_id]

    async def wait(self, operation: str, call_control_id: str) -> None:
        """Until ``operation`` has been called for the leg."""
        if (operation, call_control_id) in self.calls:
            return
        entry = (operation, call_control_id, asyncio.Event())
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(WAIT_S):
                await entry[2].wait()
        finally:
            self._waiters.remove(entry)

    def _record(self, operation: str, call_control_id: str) -> None:
        self.calls.append((operation, call_control_id))
        for op, leg, event in self._waiters:
            if (op, leg) == (operation, call_control_id):
                event.set()
        if operation in self._failures:
            raise ProviderError(self._failures[operation])

    async def answer(self, call_control_id: str) -> None:
        self._record("answer", call_control_id)

    async def restart_media(self, call_control_id: str) -> None:
        self._record("restart_media", call_control_id)

    async def hangup(self, call_control_id: str) -> None:
        self._record("hangup", call_control_id)

    async def reject(self, call_control_id: str, cause: RejectCause) -> None:
        self.rejects.append((call_control_id, cause))
        self._record("reject", call_control_id)

    async def dial(self, dial: DialCall) -> None:
        self.dials.append(dial)
        self._record("dial", dial.call_control_id)

    def forget(self, call_control_id: str) -> None:
        self.forgotten.append(call_control_id)


class FakeResolver:
    def __init__(self, gateway: RecordingGateway, unreachable: Iterable[str] = ()) -> None:
        self.gateway = gateway
        self.asked: list[tuple[int, str, str]] = []
        self.unreachable = set(unreachable)

    async def adopt(self, leg: Leg) -> AdoptedLeg | None:
        """A stored leg is reachable again through the one recording gateway, unless the test
        said its call cannot be reached."""
        if leg.call_control_id in self.unreachable:
            return None
        return AdoptedLeg(self.gateway)

    async def for_dial(self, org_id: int, connection_id: str, to: str) -> RecordingGateway:
        self.asked.append((org_id, connection_id, to))
        return self.gateway


# ---- the application side ----------------------------------------------------------------------
@dataclass(frozen=True)
class Hook:
    """One delivered webhook."""

    body: dict[str, Any]
    headers: dict[str, str]
    raw: bytes

    @property
    def event_type(self) -> str:
        return str(self.body["data"]["event_type"])

    @property
    def payload(self) -> dict[str, Any]:
        return self.body["data"]["payload"]  # type: ignore[no-any-return]

    @property
    def leg(self) -> str:
        return str(self.payload.get("call_control_id"))


class WebhookReceiver:
    """The application's webhook endpoint: records each delivery and wakes waiting tests."""

    def __init__(self) -> None:
        self.hooks: list[Hook] = []
        self.url = ""
        self._taken: set[int] = set()
        self._changed = asyncio.Condition()

    @classmethod
    async def start(cls, aiohttp_server: Any) -> WebhookReceiver:
        receiver = cls()
        app = web.Application()
        app.router.add_post("/hooks", receiver._handle)
        server = await aiohttp_server(app)
        receiver.url = str(server.make_url("/hooks"))
        return receiver

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        hook = Hook(orjson.loads(raw), dict(request.headers), raw)
        async with self._changed:
            self.hooks.append(hook)
            self._changed.notify_all()
        return web.Response(text="ok")

    def _first(self, event_type: str, leg: str | None) -> int | None:
        for i, hook in enumerate(self.hooks):
            if i in self._taken or hook.event_type != event_type:
                continue
            if leg is None or hook.leg == leg:
                return i
        return None

    async def next(self, event_type: str, leg: str | None = None) -> Hook:
        """The earliest webhook of ``event_type`` for ``leg`` not returned before; waits for it."""
        async with asyncio.timeout(WAIT_S), self._changed:
            await self._changed.wait_for(lambda: self._first(event_type, leg) is not None)
            index = self._first(event_type, leg)
            assert index is not None
            self._taken.add(index)
            return self.hooks[index]

    async def count(self, n: int, leg: str | None = None) -> list[Hook]:
        """Wait until ``n`` webhooks arrived for ``leg`` (or in all); return them in order."""
        async with asyncio.timeout(WAIT_S), self._changed:
            await self._changed.wait_for(lambda: len(self.of(leg)) >= n)
        return self.of(leg)

    def of(self, leg: str | None) -> list[Hook]:
        return [h for h in self.hooks if leg is None or h.leg == leg]

    def types(self, leg: str) -> list[str]:
        return [h.event_type for h in self.of(leg)]


# ---- timers and media --------------------------------------------------------------------------
class ManualTimers:
    """The runtime's timers, run by the test: nothing fires until ``fire`` is called."""

    def __init__(self) -> None:
        self.pending: dict[TimerKey, tuple[float, Callable[[TimerKey], None]]] = {}

    def start(self, key: TimerKey, delay_s: float, fire: Callable[[TimerKey], None]) -> None:
        self.pending[key] = (delay_s, fire)

    def cancel(self, key: TimerKey) -> None:
        self.pending.pop(key, None)

    def cancel_all(self) -> None:
        self.pending.clear()

    def key(self, leg: str, kind: TimerKind) -> TimerKey:
        found = [k for k in self.pending if k.call_control_id == leg and k.kind is kind]
        assert len(found) == 1, f"expected one {kind.value} timer for {leg}, have {self.pending}"
        return found[0]

    def delay(self, leg: str, kind: TimerKind) -> float:
        return self.pending[self.key(leg, kind)][0]

    def fire(self, leg: str, kind: TimerKind) -> None:
        key = self.key(leg, kind)
        _, fire = self.pending.pop(key)
        fire(key)


class CollectingOutput:
    """A leg's media output: keeps every frame; ``on_frame`` runs after each one."""

    def __init__(self, fmt: AudioFormat = PCMU_8K) -> None:
        self.fmt = fmt
        self.frames: list[bytes] = []
        self.on_frame: Callable[[], None] | None = None
        self._wanted: list[tuple[int, asyncio.Event]] = []

    def send_frame(self, payload: bytes) -> None:
        self.frames.append(bytes(payload))
        for count, event in self._wanted:
            if len(self.frames) >= count:
                event.set()
        if self.on_frame is not None:
            self.on_frame()

    async def collect(self, n: int) -> list[bytes]:
        """The next ``n`` frames sent to this leg, once they have been sent."""
        start = len(self.frames)
        event = asyncio.Event()
        entry = (start + n, event)
        self._wanted.append(entry)
        try:
            async with asyncio.timeout(WAIT_S):
                await event.wait()
        finally:
            self._wanted.remove(entry)
        return self.frames[start : start + n]

    def samples(self, frames: list[bytes]) -> NDArray[np.int16]:
        return np.concatenate([decode(self.fmt, f) for f in frames])


def tone(
    frequency: float, amplitude: float = 8000.0, rate: int = 8000
) -> Iterator[NDArray[np.int16]]:
    """Endless 20 ms frames of a sine, phase-continuous."""
    n = rate // 50
    for i in itertools.count():
        t = np.arange(i * n, (i + 1) * n) / rate
        yield (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


def tone_frames(frequency: float, fmt: AudioFormat = PCMU_8K) -> Iterator[bytes]:
    for samples in tone(frequency, rate=fmt.sample_rate):
        yield encode(fmt, samples)


def share(samples: NDArray[np.int16], frequency: float, rate: int = 8000) -> float:
    """The share of the signal's energy within 20 Hz of ``frequency`` (0 for silence)."""
    x = samples.astype(np.float64) * np.hanning(samples.size)
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(samples.size, 1 / rate)
    total = float(power.sum())
    if total < 1e-3 * samples.size:
        return 0.0
    return float(power[np.abs(freqs - frequency) <= 20].sum()) / total


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def write_wav(path: Path, frequency: float, seconds: float, rate: int = 8000) -> Path:
    """A 16-bit mono WAV of a sine."""
    n = int(seconds * rate)
    samples = (8000 * np.sin(2 * np.pi * frequency * np.arange(n) / rate)).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(samples.tobytes())
    return path


# ---- the whole app -----------------------------------------------------------------------------
@dataclass
class Reply:
    status: int
    body: Any


@dataclass
class Harness:
    """The real app with a recording gateway, manual timers and a webhook receiver."""

    client: TestClient  # type: ignore[type-arg]
    runtime: CallRuntime
    gateway: RecordingGateway
    resolver: FakeResolver
    receiver: WebhookReceiver
    timers: ManualTimers
    org: Org
    other_org: Org
    bridge: dict[str, Any]
    outputs: dict[str, CollectingOutput] = field(default_factory=dict)
    _speech: dict[str, Callable[[], None]] = field(default_factory=dict)  # leg -> stop (speak)

    @classmethod
    async def start(cls, aiohttp_client: Any, aiohttp_server: Any, settings: Settings) -> Harness:
        gateway = RecordingGateway()
        resolver = FakeResolver(gateway)
        app = create_app(settings, resolver=resolver)
        timers = ManualTimers()
        app[RUNTIME].timers = timers
        client = await aiohttp_client(app)
        receiver = await WebhookReceiver.start(aiohttp_server)
        org = await make_org(client, "acme", "Acme Inc")
        other = await make_org(client, "globex", "Globex")
        bridge = await org.create_bridge("Support", webhook_url=receiver.url)
        return cls(client, app[RUNTIME], gateway, resolver, receiver, timers, org, other, bridge)

    async def restarted(
        self, aiohttp_client: Any, settings: Settings, *, unreachable: Iterable[str] = ()
    ) -> Harness:
        """This app stopped and a new one started on the same store, as after a deploy: the
        store already holds every input, and stopping only closes the media sockets and the
        recording files (without ending the recordings), so the new app finds what a handed-
        over process leaves. Its provider is a fresh recording gateway; the webhook
        receiver, organizations and bridge stay."""
        await self.client.close()
        gateway = RecordingGateway()
        resolver = FakeResolver(gateway, unreachable)
        app = create_app(settings, resolver=resolver)
        timers = ManualTimers()
        app[RUNTIME].timers = timers
        client = await aiohttp_client(app)
        await app[RUNTIME].resume()  # as `callbridge serve` does once it listens
        self.org.client = client
        self.other_org.client = client
        return replace(
            self, client=client, runtime=app[RUNTIME], gateway=gateway,
            resolver=resolver, timers=timers, outputs={},
        )  # fmt: skip

    # HTTP
    @asynccontextmanager
    async def sdk(self) -> AsyncIterator[telnyx.AsyncTelnyx]:
        """The official SDK's client, pointed at this app as the organization."""
        client = telnyx.AsyncTelnyx(
            api_key=self.org.token, base_url=str(self.client.make_url("/v2")), max_retries=0
        )
        async with client:
            yield client

    async def request(
        self, method: str, path: str, body: Any = None, *, org: Org | None = None, **kw: Any
    ) -> Reply:
        headers = {"Authorization": f"Bearer {(org or self.org).token}", **kw.pop("headers", {})}
        if body is not None:
            kw["data"] = orjson.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        resp = await self.client.request(method, path, headers=headers, **kw)
        parsed = await resp.json() if resp.content_type == "application/json" else None
        return Reply(resp.status, parsed)

    async def download(self, url: str) -> tuple[int, str, bytes]:
        """Fetch a signed recording URL as its receiver would, without a token. The URL names
        CALLBRIDGE_PUBLIC_URL; the test client serves the app elsewhere, so only the path and
        query are taken."""
        parts = urlsplit(url)
        resp = await self.client.get(f"{parts.path}?{parts.query}")
        return resp.status, resp.content_type, await resp.read()

    async def recording_file(self, url: str) -> Path:
        """The file behind a recording's signed URL (/v2/recordings/<id>/download?...)."""
        record = await self.client.app[STORE].recording_by_id(urlsplit(url).path.split("/")[3])
        assert record is not None, url
        return self.runtime.recordings.file_of(record)

    async def act(self, leg: str, action: str, *, org: Org | None = None, **body: Any) -> Reply:
        return await self.request("POST", f"/v2/calls/{leg}/actions/{action}", body, org=org)

    async def ok(self, leg: str, action: str, **body: Any) -> None:
        reply = await self.act(leg, action, **body)
        assert (reply.status, reply.body) == (200, {"data": {"result": "ok"}}), reply

    async def status(self, leg: str) -> dict[str, Any]:
        reply = await self.request("GET", f"/v2/calls/{leg}")
        assert reply.status == 200, reply
        return reply.body["data"]  # type: ignore[no-any-return]

    async def dial(self, **fields: Any) -> str:
        body = {"connection_id": self.bridge["slug"], "from": "+15550001111", "to": "+15550003333"}
        reply = await self.request("POST", "/v2/calls", {**body, **fields})
        assert reply.status == 200, reply
        return str(reply.body["data"]["call_control_id"])

    # What an adapter does.
    async def incoming(
        self, *, to: str = "+15550002222", from_: str = "+15550001111", org: Org | None = None
    ) -> str:
        """A new incoming leg on the harness bridge (or, with ``org``, of that organization)."""
        leg = "v3:in-" + uuid.uuid4().hex[:12]
        # Admission counts it (engine/admission/inbound.py), then the leg is bound.
        self.runtime.live.hold(
            leg, org_id=(org or self.org).org_id, place=Place(self.bridge["id"], to)
        )
        self.runtime.bind(leg, self.gateway)
        await self.runtime.event(
            ev.LegInitiated(
                call_control_id=leg,
                call_leg_id=str(uuid.uuid4()),
                call_session_id=str(uuid.uuid4()),
                org_id=(org or self.org).org_id,
                connection_id=self.bridge["slug"],
                from_=from_,
                to=to,
                webhook_url=self.receiver.url,
            )
        )
        return leg

    async def answered(self, leg: str) -> None:
        await self.runtime.event(ev.LegAnswered(leg))

    async def hung_up(self, leg: str, cause: HangupCause = HangupCause.NORMAL_CLEARING) -> None:
        await self.runtime.event(ev.LegHungUp(leg, cause, HangupSource.CALLER))

    async def media(self, leg: str, fmt: AudioFormat = PCMU_8K) -> CollectingOutput:
        output = CollectingOutput(fmt)
        self.outputs[leg] = output
        await self.runtime.media_started(leg, fmt, output)
        return output

    async def up(self, *, media: AudioFormat | None = PCMU_8K, **answer: Any) -> str:
        """An incoming leg, answered through the API, confirmed, with its media live."""
        leg = await self.incoming()
        await self.ok(leg, "answer", **answer)
        await self.answered(leg)
        if media is not None:
            await self.media(leg, media)
        return leg

    def speak(self, leg: str, frequency: float) -> Callable[[], None]:
        """The leg's far end says a steady tone (``frequency`` 0: silence), one frame per media
        tick before the mix, as a provider streams in real time, starting with two frames
        queued; it replaces what the leg was saying. Returns the call that stops it (it stops
        with the app otherwise)."""
        frames = tone_frames(frequency, self.outputs[leg].fmt)
        previous = self._speech.pop(leg, None)
        if previous is not None:
            previous()

        def say() -> None:
            self.runtime.media_frame(leg, next(frames))

        say()
        say()
        stop = self.runtime.tick.pace(say)
        self._speech[leg] = stop
        return stop

    async def bridged(self, a: str, b: str, **options: Any) -> None:
        await self.ok(a, "bridge", call_control_id=b, **options)
        await self.receiver.next("call.bridged", a)
        await self.receiver.next("call.bridged", b)

    async def barrier(self, leg: str) -> list[str]:
        """Every webhook of ``leg`` sent so far has arrived: an in-band digit (a webhook and
        nothing else) is sent last, and one leg's webhooks arrive in order. Returns the leg's
        event types before the barrier."""
        await self.runtime.event(ev.DtmfReceived(leg, "D", DtmfSource.IN_BAND))
        while True:
            hook = await self.receiver.next("call.dtmf.received", leg)
            if hook.payload["digit"] == "D":
                break
        hooks = self.receiver.of(leg)
        return [h.event_type for h in hooks[: hooks.index(hook)]]

    def room_of(self, leg: str) -> str | None:
        """The leg's mixer room; None when it is in none or its media is not live."""
        plane = self.runtime.plane
        return plane.mixer.room_of(leg) if plane.is_attached(leg) else None

    def state(self, leg: str) -> str:
        return self.runtime.machine.leg(leg).state.value


async def hear_each_other(h: Harness, a: str, b: str) -> None:
    """``a`` and ``b`` (both mixed by the tick) each hear the other's tone and not their own."""
    h.speak(a, 440)
    h.speak(b, 1000)
    await h.outputs[a].collect(3)  # frames from before may still be queued
    got_a, got_b = await asyncio.gather(h.outputs[a].collect(20), h.outputs[b].collect(20))
    assert share(h.outputs[a].samples(got_a), 1000) > 0.9
    assert share(h.outputs[b].samples(got_b), 440) > 0.9
