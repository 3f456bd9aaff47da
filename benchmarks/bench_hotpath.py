"""Hot paths through the real app on loopback: ``python -m benchmarks bench_hotpath``.

Everything runs in one process on one event loop: callbridge (``create_app``, served on a
127.0.0.1 port), the Twilio and Telnyx simulators as the providers, and the client side. Each
figure is the median and p99 of many repetitions, wall time on ``time.perf_counter``:

- **webhook in -> response out**: a signed Twilio voice webhook for a number on a bridge without
  ``webhook_url`` (callbridge admits the call, answers it and returns ``<Connect><Stream>``), its
  signed ``completed`` status callback (the leg ends), a signed Telnyx ``call.initiated`` for a
  number on a bridge with ``webhook_url`` (the leg is created and the event queued for the
  application) and its ``call.hangup``: request sent -> response read, one at a time;
- **command in -> provider call out**: ``POST /v2/calls/{id}/actions/hangup`` on an answered leg
  -> the simulator has received callbridge's REST call (Twilio ``Calls/{sid}.json``
  ``Status=completed``, Telnyx ``actions/hangup``); the API's own response time beside it;
- **media frame in -> frame out**: the load generator's measure (``benchmarks.loadtest``) on a
  few legs: the simulator sends a 20 ms PCMU frame, callbridge forwards (two-party passthrough,
  Twilio <-> Telnyx) or mixes it (a room of 3, the 20 ms tick), the other simulator decodes it;
  per speaker frame, arrival minus send;
- **media message JSON**: the Twilio media frame callbridge parses (``parse_message``) and the one
  it renders (``render_media``), orjson + pybase64 as shipped, against the same code on the
  stdlib ``json`` + ``base64`` in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import os
import platform
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp
import numpy as np
import orjson
from aiohttp import web

from adapters.simulators.common import LocalServer, RecordedRequest
from adapters.streams import StreamMedia, StreamProtocolError
from adapters.telnyx.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_webhook
from adapters.telnyx.webhooks import build_event
from adapters.twilio.signature import compute_signature
from adapters.twilio.stream import parse_message, render_media
from benchmarks.loadtest.application import CallControl, PairingApp
from benchmarks.loadtest.engine_host import Engine, open_engine
from benchmarks.loadtest.generator import LoadConfig, LoadTest
from benchmarks.loadtest.plan import make_plan
from benchmarks.loadtest.provision import Accounts, Platform
from engine.logs import configure_logging

Row = tuple[str, list[float]]
COMMAND_BATCH = 10


def _stats(samples: list[float]) -> str:
    values = np.asarray(samples) * 1e3
    median, p99 = np.percentile(values, [50, 99])
    return f"{median:>9.3f}{p99:>9.3f}{len(values):>8}"


# --- webhook in -> response out ------------------------------------------------------------------


async def _null_app() -> tuple[LocalServer, str]:
    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hooks", ok)
    server = LocalServer(app)
    return server, await server.start() + "/hooks"


async def _timed(request: Awaitable[int]) -> float:
    """Seconds until ``request`` (not started until awaited) has its response read."""
    start = time.perf_counter()
    status = await request
    if status != 200:
        raise RuntimeError(f"expected 200, got {status}")
    return time.perf_counter() - start


async def _webhooks(engine: Engine, session: aiohttp.ClientSession, reps: int) -> list[Row]:
    accounts = Accounts()
    await accounts.start()
    server, hooks_url = await _null_app()
    try:
        api = Platform(session, engine.base_url, engine.token, engine.org_handle)
        await accounts.configure(api)
        twilio_number, telnyx_number = "+15551230001", "+15551230002"
        conference = await api.create_bridge("Bench conference")
        accounts.add_number("twilio", twilio_number)
        await api.connect(conference, accounts.config_ids["twilio"], twilio_number)
        hooked = await api.create_bridge("Bench application", hooks_url)
        accounts.add_number("telnyx", telnyx_number)
        await api.connect(hooked, accounts.config_ids["telnyx"], telnyx_number)
        twilio = accounts.twilio
        base = engine.base_url

        async def twilio_post(path: str, fields: dict[str, str]) -> int:
            url = base + path
            headers = {
                "X-Twilio-Signature": compute_signature(twilio.auth_token, url, fields),
                "Content-Type": "application/x-www-form-urlencoded",
            }
            body = urlencode(sorted(fields.items()))
            async with session.post(url, data=body, headers=headers) as reply:
                await reply.read()
                return reply.status

        async def telnyx_post(event_type: str, payload: dict[str, Any]) -> int:
            envelope = build_event(event_type, payload, str(uuid.uuid4()), datetime.now(UTC))
            body = orjson.dumps(envelope)
            stamp = int(time.time())
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign_webhook(accounts.telnyx.private_key, body, stamp),
                TIMESTAMP_HEADER: str(stamp),
            }
            async with session.post(base + "/webhooks/telnyx", data=body, headers=headers) as r:
                await r.read()
                return r.status

        voice: list[float] = []
        status: list[float] = []
        initiated: list[float] = []
        hangup: list[float] = []
        for n in range(reps):
            sid = f"CA{uuid.uuid4().hex}"
            fields = {
                "AccountSid": twilio.account_sid, "ApiVersion": "2010-04-01", "CallSid": sid,
                "CallStatus": "ringing", "Called": twilio_number, "Caller": "+15557770000",
                "Direction": "inbound", "From": "+15557770000", "To": twilio_number,
            }  # fmt: skip
            voice.append(await _timed(twilio_post("/webhooks/twilio/voice", fields)))
            done = {**fields, "CallStatus": "completed", "CallDuration": "1",
                    "SequenceNumber": "0", "SipResponseCode": "200"}  # fmt: skip
            status.append(await _timed(twilio_post("/webhooks/twilio/status", done)))
            leg = {
                "call_control_id": f"v3:bench-{n}-{uuid.uuid4().hex}",
                "call_leg_id": str(uuid.uuid4()), "call_session_id": str(uuid.uuid4()),
                "connection_id": accounts.connection_id, "client_state": None,
                "from": "+15557770001", "to": telnyx_number,
                "start_time": datetime.now(UTC).isoformat(),
            }  # fmt: skip
            start = {**leg, "direction": "incoming", "state": "parked"}
            initiated.append(await _timed(telnyx_post("call.initiated", start)))
            end = {**leg, "hangup_cause": "normal_clearing", "hangup_source": "caller",
                   "sip_hangup_cause": "200", "state": "hangup"}  # fmt: skip
            hangup.append(await _timed(telnyx_post("call.hangup", end)))
        return [
            ("Twilio voice webhook -> <Connect><Stream>", voice),
            ("Twilio status callback (completed) -> 200", status),
            ("Telnyx call.initiated -> 200", initiated),
            ("Telnyx call.hangup -> 200", hangup),
        ]
    finally:
        await accounts.close()
        await server.close()


# --- command in -> provider call out -------------------------------------------------------------


async def _commands(
    engine: Engine, session: aiohttp.ClientSession, reps: int
) -> tuple[list[Row], list[Row]]:
    plan = make_plan(2 * reps, 4, "mixed")  # seats alternate Twilio, Telnyx; nobody is bridged
    accounts = Accounts()
    calls = CallControl(session, engine.base_url, engine.token)
    app = PairingApp(plan, calls)
    await accounts.start()
    await app.start()
    try:
        api = Platform(session, engine.base_url, engine.token, engine.org_handle)
        await accounts.configure(api)
        slug = await api.create_bridge("Bench commands", app.url)
        for leg in plan.legs:
            accounts.add_number(leg.provider, leg.number)
            await api.connect(slug, accounts.config_ids[leg.provider], leg.number)
        api_times: dict[str, list[float]] = {"twilio": [], "telnyx": []}
        out_times: dict[str, list[float]] = {"twilio": [], "telnyx": []}
        # A few legs up at a time (their media streams run meanwhile), each hung up in turn.
        for first in range(0, len(plan.legs), COMMAND_BATCH):
            batch = plan.legs[first : first + COMMAND_BATCH]
            sims: dict[int, Any] = {}
            for leg in batch:
                sim = accounts.twilio if leg.provider == "twilio" else accounts.telnyx
                sims[leg.index] = await sim.place_inbound_call(leg.caller, leg.number)
            done = len(app.events)

            def answered(done: int = done) -> int:
                return sum(e.event_type == "call.answered" for e in app.events[done:])

            def all_answered(done: int = done, size: int = len(batch)) -> bool:
                return answered(done) == size

            if not await app.wait_until(all_answered, 30):
                raise RuntimeError(f"only {answered()} of {len(batch)} legs were answered")
            for leg in batch:
                sim, wanted = _provider_call(accounts, leg.provider, sims[leg.index])

                async def arrival(sim: Any = sim, wanted: Any = wanted) -> float:
                    await sim.wait_for_request(wanted, timeout_s=10)
                    return time.perf_counter()

                waiter = asyncio.ensure_future(arrival())
                await asyncio.sleep(0)  # the waiter is listening before the command leaves
                start = time.perf_counter()
                status, _reply = await calls.action(app.leg_ids[leg.index], "hangup")
                responded = time.perf_counter()
                if status != 200:
                    raise RuntimeError(f"hangup answered HTTP {status}")
                out_times[leg.provider].append(await waiter - start)
                api_times[leg.provider].append(responded - start)
        return (
            [("hangup -> Twilio REST Calls/{sid}.json", out_times["twilio"]),
             ("hangup -> Telnyx REST actions/hangup", out_times["telnyx"])],
            [("hangup API response (Twilio leg)", api_times["twilio"]),
             ("hangup API response (Telnyx leg)", api_times["telnyx"])],
        )  # fmt: skip
    finally:
        app.closing = True
        await app.close()
        await accounts.close()


def _provider_call(
    accounts: Accounts, provider: str, call: Any
) -> tuple[Any, Callable[[RecordedRequest], bool]]:
    """The simulator that will receive the hangup of ``call``, and how to recognise it."""
    if provider == "twilio":
        path = f"/Calls/{call.sid}.json"
        return accounts.twilio, lambda r: r.method == "POST" and r.path.endswith(path)
    path = f"/v2/calls/{call.call_control_id}/actions/hangup"
    return accounts.telnyx, lambda r: r.path == path


# --- media ---------------------------------------------------------------------------------------


async def _media(seconds: float) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    notes: list[str] = []
    for label, legs, size in (
        ("passthrough pair, PCMU, Twilio <-> Telnyx (8 legs)", 8, 2),
        ("mixed room of 3, PCMU, Twilio + Telnyx (9 legs)", 9, 3),
    ):
        config = LoadConfig(legs=legs, room_size=size, provider="mixed", duration_s=seconds,
                            settle_s=0.5, setup_rate=100)  # fmt: skip
        result = await LoadTest(config).run()
        step = result.steps[0]
        tally = step.tally
        notes.append(
            f"{label}: {tally.misrouted_frames} misrouted, {tally.speaker_frames_lost} of "
            f"{tally.speaker_frames_expected} speaker frames lost"
            + (f" (FAILED: {'; '.join(step.failures)})" if step.failures else "")
        )
        rows.append((label, [float(x) for x in tally.latencies()]))
    return rows, notes


# --- media message JSON: orjson + pybase64 against json + base64 ---------------------------------


def _stdlib_parse(text: str) -> StreamMedia:
    """``adapters.twilio.stream.parse_message`` for media, on the standard library."""
    frame = json.loads(text)
    if not isinstance(frame, dict) or frame.get("event") != "media":
        raise StreamProtocolError("not a media frame")
    media = frame["media"]
    try:
        payload = base64.b64decode(media["payload"], validate=True)
    except (binascii.Error, ValueError):
        raise StreamProtocolError("media payload is not valid base64") from None
    sequence = frame.get("sequenceNumber")
    chunk = media.get("chunk")
    return StreamMedia(
        payload=payload,
        sequence=int(sequence) if sequence is not None else None,
        chunk=int(chunk) if chunk is not None else None,
        track=media.get("track") or "inbound",
    )


def _stdlib_render(stream_sid: str, payload: bytes) -> str:
    return json.dumps(
        {"event": "media", "streamSid": stream_sid,
         "media": {"payload": base64.b64encode(payload).decode()}},
        separators=(",", ":"),
    )  # fmt: skip


def _per_call(fn: Callable[[], object], seconds: float = 1.0) -> list[float]:
    """Seconds per call, one sample per batch of 1,000 calls."""
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(samples) < 5 or time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(1000):
            fn()
        samples.append((time.perf_counter() - start) / 1000)
    return samples


def _json_rows() -> list[tuple[str, float, float]]:
    payload = bytes(range(256))[:160]
    sid = "MZ" + "0" * 32
    inbound = orjson.dumps({
        "event": "media", "sequenceNumber": "1234", "streamSid": sid,
        "media": {"track": "inbound", "chunk": "1233", "timestamp": "24660",
                  "payload": base64.b64encode(payload).decode()},
    }).decode()  # fmt: skip
    assert _stdlib_parse(inbound) == parse_message(inbound)
    assert json.loads(_stdlib_render(sid, payload)) == orjson.loads(render_media(sid, payload))
    rows = []
    for label, fast, slow in (
        ("parse inbound media frame", lambda: parse_message(inbound),
         lambda: _stdlib_parse(inbound)),
        ("render outbound media frame", lambda: render_media(sid, payload),
         lambda: _stdlib_render(sid, payload)),
    ):  # fmt: skip
        rows.append((label, statistics.median(_per_call(fast)), statistics.median(_per_call(slow))))
    return rows


# --- main ----------------------------------------------------------------------------------------


async def _run(reps: int, command_reps: int, media_seconds: float) -> dict[str, Any]:
    found: dict[str, Any] = {}
    async with open_engine() as engine, aiohttp.ClientSession() as session:
        found["loop"] = engine.loop
        found["webhooks"] = await _webhooks(engine, session, reps)
    async with open_engine() as engine, aiohttp.ClientSession() as session:
        found["commands"], found["api"] = await _commands(engine, session, command_reps)
    found["media"], found["media_notes"] = await _media(media_seconds)
    return found


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks bench_hotpath")
    parser.add_argument("--reps", type=int, default=300, help="webhook repetitions")
    parser.add_argument("--command-reps", type=int, default=100, help="legs hung up per provider")
    parser.add_argument("--media-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    configure_logging("console", "error")  # the engine runs in this process
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    print("command: python -m benchmarks bench_hotpath; one process, one event loop, loopback")
    found = asyncio.run(_run(args.reps, args.command_reps, args.media_seconds))
    print(f"event loop: {found['loop']}")
    header = f"{'path':<56}{'median ms':>9}{'p99 ms':>9}{'n':>8}"
    for title, key in (
        ("webhook in -> response out", "webhooks"),
        ("command in -> provider call out", "commands"),
        ("(the Call Control API's own response)", "api"),
        ("media frame in -> frame out (per speaker frame)", "media"),
    ):
        print(f"\n{title}\n{header}\n{'-' * len(header)}")
        for label, samples in found[key]:
            print(f"{label:<56}{_stats(samples)}")
    for note in found["media_notes"]:
        print(f"  {note}")
    print("\nmedia message JSON, per message")
    print(f"{'':<32}{'orjson+pybase64 us':>20}{'json+base64 us':>16}{'stdlib/orjson':>15}")
    for label, fast, slow in _json_rows():
        print(f"{label:<32}{fast * 1e6:>20.2f}{slow * 1e6:>16.2f}{slow / fast:>14.1f}x")
