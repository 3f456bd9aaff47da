"""The load generator: sets up an engine and two simulated provider accounts, places synthetic
legs into rooms, streams every leg's tone in real time and has every received frame checked.

A run is one or more *steps*. A fixed run is one step of ``legs`` legs for ``duration_s``; a ramp
adds ``ramp_step`` legs per step (each step measured for ``duration_s``) until a step crosses a
limit (any misrouted frame, more than ``max_loss`` lost, p99 over the budget, or legs that never
came together) or ``ramp_max`` is reached; the highest passing step is the sustained count.
A step: provision its new rooms through the platform API, place their legs through the
simulators (``setup_rate`` legs a second), wait until every listener is armed (hears its whole
room), settle, then measure: open a checker window, stream, close it. Engine CPU, memory and
media tick (``measures.py``), this process's CPU and its event-loop lag are sampled over the
same window.

A ``LoadTest`` may run one *share* of the plan (``share=(k, n)``: the rooms whose index is k
modulo n) behind a ``WindowGate`` that another process opens and closes: that is how
``fleet.py`` spreads a run over several generator processes. Alone, it opens its own windows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np

from adapters.simulators import CallState, SimulatedCall
from benchmarks.loadtest.application import CallControl, Event, PairingApp
from benchmarks.loadtest.checker import AudioChecker, SendLog, Tally
from benchmarks.loadtest.config import LoadConfig, plan_of
from benchmarks.loadtest.engine_host import Engine, Nodes, open_engine, pin_to_core, process_stats
from benchmarks.loadtest.frames import FRAME_S
from benchmarks.loadtest.gates import LocalGate, WindowGate
from benchmarks.loadtest.legs import Ear, MarkerTone
from benchmarks.loadtest.measures import (
    EngineProbe,
    LiveReadout,
    NodeWindow,
    TickWindow,
    engine_counters,
    environment,
    lag_summary,
)
from benchmarks.loadtest.plan import Plan, RoomPlan
from benchmarks.loadtest.provision import Accounts, Platform

__all__ = ["LoadConfig", "LoadTest", "RunResult", "StepResult", "judge_step", "plan_of"]

MIN_REALTIME = 0.98  # a step whose legs sent less than this share of real time is not valid
CAUGHT_UP_FRAMES = 3


@dataclass
class StepResult:
    legs: int
    rooms: int
    duration_s: float
    setup_s: float
    tally: Tally
    engine_cpu_cores: float | None
    engine_rss_bytes: int | None
    generator_cpu_cores: float | None
    loop_lag_ms: dict[str, float]
    realtime: float = 1.0  # frames the legs sent in the window / frames real time asks for
    failures: list[str] = field(default_factory=list)
    ticks: TickWindow | None = None  # the engine's media tick over the window
    nodes: tuple[NodeWindow, ...] = ()  # serve --workers: each node's CPU and legs
    generators: int = 1  # processes whose shares this step merges
    loop_lag_s: list[float] = field(default_factory=list, repr=False)  # samples, for merging

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class RunResult:
    config: LoadConfig
    plan: Plan
    engine: dict[str, Any]
    environment: dict[str, Any]
    steps: list[StepResult]
    events: list[Event]
    app_errors: list[str]
    engine_counters: dict[str, Any]
    calls: dict[int, SimulatedCall] = field(default_factory=dict)
    engine_log: bytes | None = None  # a spawned engine's log (its temporary folder goes)

    @property
    def misrouted(self) -> int:
        return sum(step.tally.misrouted_frames for step in self.steps)

    @property
    def sustained_legs(self) -> int:
        passing = [step.legs for step in self.steps if step.passed]
        return max(passing, default=0)

    @property
    def passed(self) -> bool:
        if not self.steps or self.misrouted:
            return False
        if self.config.ramp:
            return self.steps[0].passed
        return all(step.passed for step in self.steps)


Progress = Callable[[dict[str, Any]], None]


class LoadTest:
    def __init__(
        self,
        config: LoadConfig,
        progress: Progress | None = None,
        *,
        share: tuple[int, int] = (0, 1),
        gate: WindowGate | None = None,
    ) -> None:
        self.config = config
        self.progress = progress
        self.share = share
        self.gate = gate
        config.steps()  # a ValueError here, before anything starts
        self.plan = plan_of(config)
        self.log = SendLog(len(self.plan.legs), capacity=int(config.duration_s * 60) + 500)
        self.checker = AudioChecker(
            self.plan.speakers(),
            [room.legs for room in self.plan.rooms],
            self.log,
            marker_period=self.plan.marker_period,
            budget_s=config.budget_s,
            thresholds=self.plan.thresholds(),
            resampled=self.plan.wideband_rooms(),
        )
        self.calls: dict[int, SimulatedCall] = {}
        self.ears: dict[int, Ear] = {}
        self.lag: list[float] = []
        self.phase = "starting"
        self._checking = True
        self._armed = asyncio.Event()
        self._window_started: float | None = None
        self._live: dict[str, Any] = {}

    # --- the run -----------------------------------------------------------------------------

    async def run(self) -> RunResult:
        config = self.config
        if config.spawn_engine:
            pin_to_core(config.generator_core)
        # The simulators and the application outlive the engine, so that the engine's last
        # webhooks and provider calls (the hang-ups) still find them.
        accounts = Accounts()
        app = PairingApp(self.plan, bridge_options=config.bridge_options)
        try:
            await accounts.start()
            await app.start()
            result = await self._with_engine(accounts, app)
            if self.gate is not None:
                await self.gate.done(result)
            return result
        finally:
            await app.close()
            await accounts.close()

    async def _with_engine(self, accounts: Accounts, app: PairingApp) -> RunResult:
        config = self.config
        async with (
            engine_for(config) as engine,
            aiohttp.ClientSession() as session,
        ):  # fmt: skip
            app.calls = CallControl(session, engine.base_url, engine.token)
            platform_api = Platform(session, engine.base_url, engine.token, engine.org_handle)
            await accounts.configure(platform_api)
            # A share run by fleet.py reports to its parent, which reads the engine itself.
            readout = LiveReadout(EngineProbe(engine, session)) if self.gate is None else None
            gate = self.gate or LocalGate(EngineProbe(engine, session))
            background = [
                asyncio.ensure_future(self._drain_forever()),
                asyncio.ensure_future(self._watch_loop()),
                asyncio.ensure_future(self._report_forever(readout)),
            ]
            steps: list[StepResult] = []
            try:
                placed_rooms = 0
                k, n = self.share
                for step_legs in config.steps():
                    new = self.plan.rooms[placed_rooms : step_legs // config.room_size]
                    placed_rooms += len(new)
                    rooms = tuple(room for room in new if room.index % n == k)
                    step = await self._step(gate, platform_api, accounts, app, rooms)
                    steps.append(step)
                    if not await gate.verdict(step):
                        break
                counters = engine_counters(engine)
            finally:
                self._checking = False
                self.phase = "hanging up"
                if not config.keep_calls:
                    await self._hang_up()
                app.closing = True
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
            return RunResult(
                config=config,
                plan=self.plan,
                engine=engine.facts(),
                environment=environment(config.generator_procs, config.generator_cores),
                steps=steps,
                events=app.events,
                app_errors=app.errors,
                engine_counters=counters,
                calls=dict(self.calls),
                engine_log=engine.log_path.read_bytes() if engine.log_path else None,
            )  # fmt: skip

    async def _step(
        self,
        gate: WindowGate,
        platform_api: Platform,
        accounts: Accounts,
        app: PairingApp,
        rooms: tuple[RoomPlan, ...],
    ) -> StepResult:
        config = self.config
        started = time.monotonic()
        self.phase = "provisioning"
        await platform_api.add_rooms(accounts, self.plan, rooms, app.url)
        self.phase = "placing calls"
        await self._place(accounts, rooms)
        self.phase = "waiting for rooms"
        legs = sorted(self.calls)
        await self._wait_armed(legs, config.setup_timeout_s)
        setup_s = time.monotonic() - started
        self.phase = "settling"
        await asyncio.sleep(config.settle_s)
        await self._caught_up(legs, timeout_s=10.0)
        self.phase = "ready"
        await gate.open()
        self.phase = "measuring"
        self._drain()
        before_self = process_stats(None)
        sent_before = int(self.log.count[legs].sum())
        window_start = time.monotonic()
        self.lag.clear()
        self.checker.open_window(window_start, legs)
        self._window_started = window_start
        await asyncio.sleep(config.duration_s)
        window_end = time.monotonic()
        after_self = process_stats(None)
        engine_window = await gate.close()
        sent = int(self.log.count[legs].sum()) - sent_before
        # Audio sent before the end is still owed: keep checking for a grace period, then
        # charge what has not arrived (a window never ends on frames still in flight).
        grace = max(0.5, 4 * config.budget_s)
        await asyncio.sleep(grace)
        self._drain()
        tally = self.checker.close_window(window_end + grace, allowance_s=grace)
        self._window_started = None
        wall = window_end - window_start
        engine_cpu = rss = generator_cpu = ticks = None
        nodes: tuple[NodeWindow, ...] = ()
        if engine_window is not None:
            engine_cpu, rss = engine_window.cpu_cores, engine_window.rss_bytes
            ticks, nodes = engine_window.ticks, engine_window.nodes
        if self.gate is not None or config.spawn_engine or config.target is not None:
            # In-process, this process's CPU is the engine's too: not the generator's alone.
            generator_cpu = (after_self.cpu_s - before_self.cpu_s) / wall
        step = StepResult(
            legs=len(legs), rooms=len(legs) // config.room_size, duration_s=wall,
            setup_s=setup_s, tally=tally, engine_cpu_cores=engine_cpu, engine_rss_bytes=rss,
            generator_cpu_cores=generator_cpu, loop_lag_ms=lag_summary(self.lag),
            realtime=sent / (len(legs) * wall / FRAME_S), ticks=ticks,
            loop_lag_s=list(self.lag), nodes=nodes,
        )  # fmt: skip
        step.failures = judge_step(config, tally, step.realtime, step.loop_lag_ms["p99"])
        return step

    # --- legs ----------------------------------------------------------------------------------

    async def _place(self, accounts: Accounts, rooms: tuple[RoomPlan, ...]) -> None:
        interval = 1.0 / self.config.setup_rate
        for room in rooms:
            for leg in room.legs:
                spec = self.plan.legs[leg]
                source = MarkerTone(spec, self.plan.marker_period, self.log)
                call: SimulatedCall
                if spec.provider == "twilio":
                    call = await accounts.twilio.place_inbound_call(
                        spec.caller, spec.number, source=source
                    )
                else:
                    call = await accounts.telnyx.place_inbound_call(
                        spec.caller, spec.number, source=source, codec=spec.codec
                    )
                # Before the call's first await: media cannot have started yet.
                ear = Ear(leg)
                call.playout = ear
                self.calls[leg] = call
                self.ears[leg] = ear
                await asyncio.sleep(interval)

    async def _wait_armed(self, legs: list[int], timeout_s: float) -> None:
        wanted = np.asarray(legs, dtype=np.int64)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while not self.checker.armed[wanted].all():
                    self._armed.clear()
                    await self._armed.wait()

    async def _caught_up(self, legs: list[int], timeout_s: float) -> None:
        """Wait until every leg's sender is on schedule (a busy setup leaves them behind, and
        they catch up in a burst), so that the window measures steady state."""
        deadline = time.monotonic() + timeout_s
        wanted = set(legs)
        while time.monotonic() < deadline:
            now = time.monotonic()
            behind = [
                (now - call.audio_origin) / FRAME_S - int(self.log.count[leg])
                for leg, call in self.calls.items()
                if leg in wanted and call.audio_origin is not None
            ]
            if max(behind, default=0.0) <= CAUGHT_UP_FRAMES:
                return
            await asyncio.sleep(self.config.batch_s)  # real-time senders: nothing to wait on

    async def _hang_up(self) -> None:
        gate = asyncio.Semaphore(32)

        async def hang_up(call: SimulatedCall) -> None:
            if call.state is CallState.ENDED:
                return
            async with gate:
                with contextlib.suppress(Exception):
                    await call.hang_up()

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(15):
                await asyncio.gather(*(hang_up(call) for call in self.calls.values()))

    # --- background ----------------------------------------------------------------------------

    def _drain(self) -> None:
        """Hand everything received so far to the checker."""
        legs: list[int] = []
        times: list[float] = []
        frames: list[Any] = []
        for leg, ear in self.ears.items():
            got_times, got_frames = ear.take()
            if got_times:
                legs += [leg] * len(got_times)
                times += got_times
                frames += got_frames
        if not legs or not self._checking:
            return
        self.checker.process(np.asarray(legs), np.asarray(times), np.stack(frames))
        self._armed.set()

    async def _drain_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.batch_s)
            self._drain()

    async def _watch_loop(self) -> None:
        """Event-loop lag: how late a 20 ms sleep wakes up."""
        interval = 0.02
        while True:
            before = time.monotonic()
            await asyncio.sleep(interval)
            self.lag.append(time.monotonic() - before - interval)

    async def _report_forever(self, readout: LiveReadout | None) -> None:
        """A snapshot every half second; the engine (CPU, memory, tick) read once a second."""
        engine: dict[str, Any] = {"engine_cpu": None, "engine_rss": None, "tick": None}
        beat = 0
        while True:
            await asyncio.sleep(0.5)
            beat += 1
            if readout is not None and beat % 2:
                engine = await readout.read()
            if self.progress is not None:
                self.progress({**self.snapshot(), **engine})

    def snapshot(self) -> dict[str, Any]:
        """What the live display shows of this generator (``_report_forever`` adds the engine)."""
        tally = self.checker.tally
        streaming = sum(1 for call in self.calls.values() if call.state is CallState.STREAMING)
        window = (
            time.monotonic() - self._window_started if self._window_started is not None else None
        )
        recent = tally.latencies_s[-50:]
        p99 = float(np.percentile(np.concatenate(recent), 99) * 1000) if recent else None
        return {
            "phase": self.phase,
            "legs_placed": len(self.calls),
            "legs_streaming": streaming,
            "legs_armed": int(self.checker.armed.sum()),
            "window_s": window,
            "duration_s": self.config.duration_s,
            "frames": tally.frames_received,
            "lost": tally.speaker_frames_lost,
            "misrouted": tally.misrouted_frames,
            "late": tally.late_frames,
            "p99_ms": p99,
            "loop_lag_ms": max(self.lag[-25:], default=0.0) * 1000,
        }


def judge_step(config: LoadConfig, tally: Tally, realtime: float, lag_p99_ms: float) -> list[str]:
    """Why a step failed (empty: it passed)."""
    failures: list[str] = []
    budget_ms = config.budget_s * 1000
    if realtime < MIN_REALTIME or lag_p99_ms > budget_ms:
        # The generator itself is behind: latency and loss would be its own, not the
        # engine's (a stalled reader makes the engine drop what it cannot deliver).
        failures.append(
            f"generator overloaded (sent {realtime:.1%} of real time, loop lag p99 "
            f"{lag_p99_ms:.0f} ms): not a measure of the engine"
        )
    if tally.misrouted_frames:
        failures.append(f"{tally.misrouted_frames} misrouted frames")
    if tally.loss_ratio > config.max_loss:
        failures.append(f"{tally.loss_ratio:.3%} lost")
    if tally.unarmed_legs:
        failures.append(f"{len(tally.unarmed_legs)} legs never heard their room")
    p99 = tally.percentiles_ms()["p99"]
    if config.ramp and not p99 <= budget_ms:
        failures.append(f"p99 {p99:.1f} ms > {budget_ms:g} ms")
    return failures


def engine_for(config: LoadConfig) -> AbstractAsyncContextManager[Engine]:
    """The engine a load test runs against, as its configuration says (engine_host.py)."""
    nodes = None
    if config.engine_workers > 1:
        nodes = Nodes(config.engine_workers, config.database_url, config.redis_url)
    return open_engine(
        target=config.target, token=config.token, org_handle=config.org_handle,
        engine_pid=config.engine_pid, spawn=config.spawn_engine,
        engine_core=config.engine_core if config.pin_workers or not nodes else None,
        engine_loop=config.engine_loop,
        nodes=nodes,
    )  # fmt: skip
