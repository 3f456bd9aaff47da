"""A load test spread over several generator processes (``--generator-procs N``).

One Python process running simulated legs saturates its core at a few hundred legs, before the
engine does; so the legs are spread over N child processes, each pinned to a generator core,
while the engine keeps a core of its own.

The split is by rooms: child k runs every room whose index is k modulo N, and does everything
for them (its own Twilio and Telnyx simulators and provider configurations, its own pairing
application, its own checker), so a leg's audio and its peers' never cross a process boundary
and latency stays one subtraction on one clock (the system's monotonic clock, shared by every
process on the host). The plan is the whole run's in every child: each leg keeps its identity
(tone and level), so a frame that crossed into another child's room is still caught.

This parent starts the engine (in-process, spawned or ``--target``), and in every step waits
until every child's legs are set up and on schedule, reads the engine (CPU, memory, tick
metrics), opens every child's window at once, reads the engine again when every window has
closed, and merges the children's results into one step: counts summed, latency percentiles
from the merged samples (not averaged), the generators' real-time share and loop lag taken from
the worst child (a generator that fell behind invalidates the step, whichever one it was).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing
import os
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import aiohttp

from benchmarks.loadtest.application import Event
from benchmarks.loadtest.checker import MAX_EXAMPLES, Tally
from benchmarks.loadtest.engine_host import Engine
from benchmarks.loadtest.generator import (
    LoadConfig,
    Progress,
    RunResult,
    StepResult,
    engine_for,
    judge_step,
    plan_of,
)
from benchmarks.loadtest.measures import (
    EngineProbe,
    EngineWindow,
    LiveReadout,
    engine_counters,
    environment,
    lag_summary,
)
from benchmarks.loadtest.worker import Inbox, Message, child_main

__all__ = ["Fleet", "generator_cores", "merge_steps", "merge_tallies"]

_SUMMED = (
    "legs", "frames_received", "frames_checked", "gap_frames", "late_frames",
    "misrouted_frames", "speaker_frames_expected", "speaker_frames_lost",
    "speaker_frames_duplicated", "markers",
)  # fmt: skip
_PROGRESS_SUMMED = (
    "legs_placed", "legs_streaming", "legs_armed", "frames", "lost", "misrouted", "late",
)  # fmt: skip


def merge_tallies(tallies: Sequence[Tally]) -> Tally:
    """One tally from the children's: counts summed, latency samples pooled."""
    merged = Tally()
    for tally in tallies:
        for name in _SUMMED:
            setattr(merged, name, getattr(merged, name) + getattr(tally, name))
        for reason, count in tally.misrouted_by_reason.items():
            merged.misrouted_by_reason[reason] = merged.misrouted_by_reason.get(reason, 0) + count
        merged.unarmed_legs += tally.unarmed_legs
        merged.latencies_s += tally.latencies_s
        merged.arrivals_s += tally.arrivals_s
        merged.marker_latencies_s += tally.marker_latencies_s
        merged.examples += tally.examples[: MAX_EXAMPLES - len(merged.examples)]
    merged.unarmed_legs.sort()
    return merged


def merge_steps(
    config: LoadConfig, shares: Sequence[StepResult], window: EngineWindow | None
) -> StepResult:
    """One step from the children's shares of it and the engine's side of its window."""
    tally = merge_tallies([share.tally for share in shares])
    lag_samples = [sample for share in shares for sample in share.loop_lag_s]
    lag = lag_summary(lag_samples)
    # Whether the generators kept up is the worst child's figure, not an average.
    lag["p99"] = max(share.loop_lag_ms["p99"] for share in shares)
    realtime = min(share.realtime for share in shares)
    cpu = [share.generator_cpu_cores for share in shares]
    step = StepResult(
        legs=sum(share.legs for share in shares),
        rooms=sum(share.rooms for share in shares),
        duration_s=window.wall_s if window else max(share.duration_s for share in shares),
        setup_s=max(share.setup_s for share in shares),
        tally=tally,
        engine_cpu_cores=window.cpu_cores if window else None,
        engine_rss_bytes=window.rss_bytes if window else None,
        generator_cpu_cores=None if None in cpu else sum(c or 0.0 for c in cpu),
        loop_lag_ms=lag,
        realtime=realtime,
        ticks=window.ticks if window else None,
        nodes=window.nodes if window else (),
        generators=len(shares),
        loop_lag_s=lag_samples,
    )
    step.failures = judge_step(config, tally, realtime, lag["p99"])
    return step


def generator_cores(config: LoadConfig) -> tuple[int, ...] | None:
    """The cores the children are pinned to: ``--generator-cores``, or every core this process
    may use but the spawned engine's; None (unpinned) when that leaves none."""
    if config.generator_cores is not None:
        return config.generator_cores
    if not hasattr(os, "sched_getaffinity"):
        return None
    cores = set(os.sched_getaffinity(0))
    if config.spawn_engine and config.engine_core is not None:
        cores.discard(config.engine_core)
    return tuple(sorted(cores)) or None


class _Child:
    """One generator process and its pipes."""

    def __init__(self, process: BaseProcess, outbox: Connection, inbox: Inbox) -> None:
        self.process = process
        self.outbox = outbox
        self.inbox = inbox

    def send(self, *message: Any) -> None:
        self.outbox.send(message)

    async def expect(self, kind: str) -> Message:
        """The child's next message, which must be of ``kind``; a failure is raised."""
        message = await self.inbox.queue.get()
        if message[0] == "error":
            raise RuntimeError(f"a generator process failed:\n{message[1]}")
        if message[0] == "eof":
            raise RuntimeError(f"a generator process exited ({self.process.exitcode})")
        if message[0] != kind:
            raise RuntimeError(f"a generator process sent {message[0]!r}, not {kind!r}")
        return message

    async def stop(self) -> None:
        """Let the child exit (its simulators close), then reap it."""
        if self.outbox.closed:
            return
        with contextlib.suppress(OSError):
            self.send("exit")
        await asyncio.to_thread(self.process.join, 20)
        if self.process.is_alive():
            self.process.terminate()
            await asyncio.to_thread(self.process.join, 5)
        self.outbox.close()


class Fleet:
    """The parent of ``config.generator_procs`` generator processes (see the module docstring)."""

    def __init__(
        self, config: LoadConfig, progress: Progress | None = None, *, use_uvloop: bool = True
    ) -> None:
        self.config = config
        self.progress = progress
        self.use_uvloop = use_uvloop
        self.plan = plan_of(config)
        self.children: list[_Child] = []

    async def run(self) -> RunResult:
        config = self.config
        cores = generator_cores(config)
        if config.spawn_engine and cores is not None:
            # This process only coordinates; it stays off the engine's core too.
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, set(cores))
        async with (
            engine_for(config) as engine,
            aiohttp.ClientSession() as session,
        ):  # fmt: skip
            self._start_children(engine, cores)
            reporter = asyncio.ensure_future(self._report_forever(engine, session))
            try:
                steps = await self._steps(EngineProbe(engine, session))
                results = await asyncio.gather(*(c.expect("result") for c in self.children))
                counters = engine_counters(engine)
                # Read before the engine's temporary folder goes, as one generator does.
                engine_log = engine.log_path.read_bytes() if engine.log_path else None
            except BaseException:
                await self._stop_children()
                raise
            finally:
                reporter.cancel()
                await asyncio.gather(reporter, return_exceptions=True)
        # The engine is closed: the children's simulators have answered its last calls.
        await self._stop_children()
        events: list[Event] = sorted(
            (event for result in results for event in result[1]), key=lambda e: e.at
        )
        return RunResult(
            config=config,
            plan=self.plan,
            engine=engine.facts(),
            environment=environment(config.generator_procs, cores),
            steps=steps,
            events=events,
            app_errors=[error for result in results for error in result[2]],
            engine_counters=counters,
            engine_log=engine_log,
        )  # fmt: skip

    def _start_children(self, engine: Engine, cores: tuple[int, ...] | None) -> None:
        config = self.config
        share_config = dataclasses.replace(
            config, target=engine.base_url, token=engine.token, org_handle=engine.org_handle,
            engine_pid=None, spawn_engine=False, generator_procs=1, generator_cores=None,
            # Together the children place legs at --setup-rate, as one generator would.
            setup_rate=config.setup_rate / config.generator_procs,
        )  # fmt: skip
        context = multiprocessing.get_context("spawn")  # no inherited event loop or threads
        loop = asyncio.get_running_loop()
        n = config.generator_procs
        for k in range(n):
            down_read, down_write = context.Pipe(duplex=False)
            up_read, up_write = context.Pipe(duplex=False)
            core = cores[k % len(cores)] if cores else None
            process = context.Process(
                target=child_main,
                args=(share_config, (k, n), core, self.use_uvloop, up_write, down_read),
                name=f"loadtest-generator-{k}",
                daemon=True,
            )
            process.start()
            up_write.close()  # the child's ends: the parent keeps only its own
            down_read.close()
            self.children.append(_Child(process, down_write, Inbox(up_read, loop)))

    async def _stop_children(self) -> None:
        await asyncio.gather(*(child.stop() for child in self.children))

    async def _steps(self, probe: EngineProbe) -> list[StepResult]:
        children = self.children
        steps: list[StepResult] = []
        for _ in self.config.steps():
            await asyncio.gather(*(child.expect("ready") for child in children))
            await probe.begin()
            for child in children:
                child.send("open")
            await asyncio.gather(*(child.expect("closed") for child in children))
            window = await probe.end()
            shares = await asyncio.gather(*(child.expect("step") for child in children))
            step = merge_steps(self.config, [share[1] for share in shares], window)
            steps.append(step)
            for child in children:
                child.send("continue", step.passed)
            if not step.passed:
                break
        return steps

    async def _report_forever(self, engine: Engine, session: aiohttp.ClientSession) -> None:
        readout = LiveReadout(EngineProbe(engine, session))
        while True:
            await asyncio.sleep(1.0)
            reading = await readout.read()
            if self.progress is not None:
                self.progress({**self._merged_snapshot(), **reading})

    def _merged_snapshot(self) -> dict[str, Any]:
        snapshots = [child.inbox.progress for child in self.children if child.inbox.progress]
        merged: dict[str, Any] = dict.fromkeys(_PROGRESS_SUMMED, 0)
        for snapshot in snapshots:
            for name in _PROGRESS_SUMMED:
                merged[name] += snapshot[name]
        windows = [s["window_s"] for s in snapshots if s["window_s"] is not None]
        p99 = [s["p99_ms"] for s in snapshots if s["p99_ms"] is not None]
        merged.update(
            phase=", ".join(sorted({s["phase"] for s in snapshots})) or "starting",
            window_s=max(windows) if windows else None,
            duration_s=self.config.duration_s,
            p99_ms=max(p99) if p99 else None,  # the worst generator's recent p99
            loop_lag_ms=max((s["loop_lag_ms"] for s in snapshots), default=0.0),
            generators=f"{len(snapshots)} of {len(self.children)}",
        )
        return merged
