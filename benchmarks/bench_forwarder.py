"""The engine against a bare forwarder: CPU per leg per 20 ms tick, same traffic, one run.

``python -m benchmarks bench_forwarder`` (defaults), or with options
``python -m benchmarks.bench_forwarder [--legs 100 150] [--window 10] [--warmup 3]
[--engine-env KEY=VALUE ...]``.

Two servers, one after the other, each pinned to core 0 while this process (the generator) is
pinned to core 1 (issue 13, point 1):

- **engine**: ``callbridge serve`` carrying Telnyx legs placed through the Telnyx simulator,
  answered and bridged in pairs through the Call Control API (DTMF detection on, as for every
  leg), media over the Telnyx media websocket protocol at whatever URL the engine hands out;
- **forwarder**: ``benchmarks/forwarder/server.py``, aiohttp + uvloop + orjson, pairing the same
  streams and sending each media frame's payload to the peer.

Both get the same generator and traffic (``benchmarks/forwarder/lean_legs.py``): one websocket
per leg, Telnyx-shaped frames as the simulator sends them, PCMU 8 kHz, 50 frames a second per
leg; for each leg count (legs are added between steps), a warm-up and then a measured window.
Printed per step: the server's CPU in microseconds per leg-tick (``legs x window / 20 ms``), what
other processes took of the server core, the generator's CPU and whether it kept real time, and
per leg count the engine/forwarder ratio. A step that is not a measure of the server (the
generator fell behind, other work shared the server core, the server fell behind, or a leg did
not hear its peer) is marked INVALID, with why (``benchmarks/forwarder/measure.py``). The same
figures go to ``results/bench-forwarder-<UTC>.json``.

``--together`` runs both servers at once (both on the server core, each with legs of its own)
and measures them over the same windows: the generator drives twice the legs, but a machine
whose load drifts between two runs (other work on either core) weighs on both alike.

``--engine-env KEY=VALUE`` puts ``KEY`` in the engine's environment (``CALLBRIDGE_*`` settings,
``OPENBLAS_NUM_THREADS``, ``PYTHONPATH`` ...); ``{free_port}`` in a value becomes a port free on
127.0.0.1 (the same one in every value), e.g. for a separate media port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import platform
import socket
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from benchmarks.forwarder.frames import leg_payload
from benchmarks.forwarder.lean_legs import LeanLegs
from benchmarks.forwarder.measure import StepResult, Target, measure_steps
from benchmarks.forwarder.servers import ServerUnderTest, engine_server, forwarder_server
from benchmarks.loadtest.engine_host import pin_to_core
from benchmarks.loadtest.plan import Plan, make_plan

__all__ = ["BenchConfig", "BenchResult", "main", "report_lines", "run"]

SERVERS = ("engine", "forwarder")
RESULTS = Path(__file__).resolve().parent.parent / "results"


@dataclass(frozen=True)
class BenchConfig:
    leg_counts: tuple[int, ...] = (100, 150)
    warmup_s: float = 3.0
    window_s: float = 10.0
    servers: tuple[str, ...] = SERVERS
    engine_env: Mapping[str, str] = field(default_factory=dict)
    server_core: int | None = 0
    generator_core: int | None = 1
    setup_rate: float = 50.0  # calls a second
    #: Both servers carry their legs at the same time, measured over the same windows.
    together: bool = False
    carried_timeout_s: float = 60.0


@dataclass
class BenchResult:
    config: BenchConfig
    environment: dict[str, Any]
    steps: list[StepResult]

    def step(self, server: str, legs: int) -> StepResult | None:
        return next((s for s in self.steps if s.server == server and s.planned_legs == legs), None)

    def ratios(self) -> dict[int, float]:
        """Engine / forwarder CPU per leg-tick, per leg count both servers measured."""
        ratios: dict[int, float] = {}
        for legs in sorted({step.planned_legs for step in self.steps}):
            engine, forwarder = self.step("engine", legs), self.step("forwarder", legs)
            if engine is not None and forwarder is not None and forwarder.server_cpu_s > 0:
                ratios[legs] = engine.us_per_leg_tick / forwarder.us_per_leg_tick
        return ratios

    def to_json(self) -> dict[str, Any]:
        return {
            "config": {**asdict(self.config), "engine_env": dict(self.config.engine_env)},
            "environment": self.environment,
            "steps": [step.to_json() for step in self.steps],
            "ratios": {str(legs): ratio for legs, ratio in self.ratios().items()},
        }


async def run(config: BenchConfig) -> BenchResult:
    counts = _leg_counts(config.leg_counts)
    pin_to_core(config.generator_core)
    plan = make_plan(counts[-1], 2, "telnyx")
    payloads = {leg.index: leg_payload(leg) for leg in plan.legs}
    environment = _environment(config)
    steps: list[StepResult] = []
    if config.together:
        async with contextlib.AsyncExitStack() as stack:
            servers = [
                await stack.enter_async_context(_server(name, plan, config))
                for name in config.servers
            ]
            steps = await _measure(servers, plan, counts, payloads, config)
    else:
        for name in config.servers:
            async with _server(name, plan, config) as server:
                steps += await _measure([server], plan, counts, payloads, config)
    return BenchResult(config, environment, steps)


async def _measure(
    servers: Sequence[ServerUnderTest],
    plan: Plan,
    counts: Sequence[int],
    payloads: Mapping[int, str],
    config: BenchConfig,
) -> list[StepResult]:
    """Every step of ``counts`` for ``servers`` at once (each with legs of its own)."""
    steps: list[StepResult] = []
    # One connection per leg, however many: no pool limit.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        leg_sets = [LeanLegs(session) for _ in servers]
        try:
            placed = 0
            for count in counts:
                not_set_up = [
                    await server.links(plan.legs[placed:count], legs.open)
                    for server, legs in zip(servers, leg_sets, strict=True)
                ]
                placed = count
                carried = [await legs.wait_carried(config.carried_timeout_s) for legs in leg_sets]
                targets = [
                    Target(server.name, count, server.pid, legs)
                    for server, legs in zip(servers, leg_sets, strict=True)
                ]
                measured = await measure_steps(
                    targets, payloads, warmup_s=config.warmup_s, window_s=config.window_s,
                    server_core=config.server_core,
                )  # fmt: skip
                for step, problems, was_carried in zip(measured, not_set_up, carried, strict=True):
                    step.problems += _setup_problems(problems, was_carried)
                steps += measured
        finally:
            for server in servers:
                await server.finish()
            for legs in leg_sets:
                await legs.close()
    return steps


def _setup_problems(not_set_up: list[str], carried: bool) -> list[str]:
    problems: list[str] = []
    if not_set_up:
        problems.append(f"{len(not_set_up)} legs not set up (first: {not_set_up[0]})")
    if not carried:
        problems.append("not every leg was carried before the warm-up")
    return problems


@contextlib.asynccontextmanager
async def _server(name: str, plan: Plan, config: BenchConfig) -> AsyncIterator[ServerUnderTest]:
    if name == "engine":
        env = _with_free_port(config.engine_env)
        async with engine_server(plan, core=config.server_core, env=env,
                                 setup_rate=config.setup_rate) as engine:  # fmt: skip
            yield engine
    elif name == "forwarder":
        async with forwarder_server(config.server_core) as forwarder:
            yield forwarder
    else:
        raise ValueError(f"servers are {SERVERS}, not {name!r}")


def _leg_counts(counts: Sequence[int]) -> list[int]:
    """Whole pairs, increasing: each step adds legs to the previous one's."""
    pairs = sorted({count - count % 2 for count in counts})
    if not pairs or pairs[0] < 2:
        raise ValueError("every step needs at least one pair of legs")
    return pairs


def _with_free_port(env: Mapping[str, str]) -> dict[str, str]:
    if not any("{free_port}" in value for value in env.values()):
        return dict(env)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    return {key: value.replace("{free_port}", port) for key, value in env.items()}


def _environment(config: BenchConfig) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "generator_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
        "utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


# --- output --------------------------------------------------------------------------------------


def report_lines(result: BenchResult) -> list[str]:
    config, env = result.config, result.environment
    lines = [
        f"Telnyx legs bridged in pairs, PCMU 8 kHz, 50 frames/s per leg; warm-up "
        f"{config.warmup_s:g} s, window {config.window_s:g} s; servers "
        f"{'together' if config.together else 'one after the other'} on core "
        f"{config.server_core}, generator on core {config.generator_core} "
        f"({env['generator_loop']}); load average before {_load(env['load_average'])}",
        f"{'server':<10}{'legs':>5}{'us/leg-tick':>13}{'cpu %':>7}{'others %':>9}"
        f"{'gen cpu %':>10}{'realtime':>10}{'lateness p99':>14}{'delivered':>11}"
        f"{'hear peer':>11}  verdict",
        *(_row(step) for step in result.steps),
    ]
    for legs, ratio in result.ratios().items():
        engine, forwarder = result.step("engine", legs), result.step("forwarder", legs)
        assert engine is not None
        assert forwarder is not None
        valid = engine.valid and forwarder.valid
        lines.append(
            f"ratio engine/forwarder at {legs} legs: {engine.us_per_leg_tick:.1f} / "
            f"{forwarder.us_per_leg_tick:.1f} us = {ratio:.2f}"
            + ("" if valid else "  (INVALID: a step above is not a measure of the server)")
        )
    return lines


def _row(step: StepResult) -> str:
    """One step; ``others %``: what other processes took of the server core in the window."""
    others = step.others_on_server_core_s
    shared = "-" if others is None else f"{100 * others / step.window_s:.1f}"
    return (
        f"{step.server:<10}{step.legs:>5}{step.us_per_leg_tick:>13.1f}"
        f"{100 * step.server_cpu_s / step.window_s:>7.1f}{shared:>9}"
        f"{100 * step.generator_cpu_s / step.window_s:>10.1f}{step.realtime:>10.1%}"
        f"{step.lateness_p99_ms:>11.1f} ms{step.delivered:>11.1%}"
        f"{step.legs_hearing_peer:>6}/{step.legs:<4}  "
        + ("ok" if step.valid else "INVALID: " + "; ".join(step.problems))
    )


def _load(load: Sequence[float]) -> str:
    return " ".join(f"{value:.2f}" for value in load)


def write_json(result: BenchResult, directory: Path = RESULTS) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"bench-forwarder-{stamp}.json"
    path.write_bytes(
        orjson.dumps(result.to_json(), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    )
    return path


# --- command line --------------------------------------------------------------------------------


def _parse(argv: list[str]) -> BenchConfig:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_forwarder",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--legs", type=int, nargs="+", default=[100, 150], help="leg counts (default 100 150)")
    add("--warmup", type=float, default=3.0, help="seconds before each window (default 3)")
    add("--window", type=float, default=10.0, help="measured seconds per step (default 10)")
    add("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    add(
        "--engine-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set KEY in the engine's environment ({free_port}: a free port)",
    )
    add("--setup-rate", type=float, default=50.0, help="engine calls placed a second (default 50)")
    add(
        "--together",
        action="store_true",
        help="run both servers at once (both on the server core), measured over one window",
    )
    add("--server-core", type=int, default=0)
    add("--generator-core", type=int, default=1)
    args = parser.parse_args(argv)
    env: dict[str, str] = {}
    for item in args.engine_env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--engine-env takes KEY=VALUE, not {item!r}")
        env[key] = value
    return BenchConfig(
        leg_counts=tuple(args.legs), warmup_s=args.warmup, window_s=args.window,
        servers=tuple(args.servers), engine_env=env, server_core=args.server_core,
        generator_core=args.generator_core, setup_rate=args.setup_rate, together=args.together,
    )  # fmt: skip


def main(argv: list[str]) -> None:
    config = _parse(argv)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(config))
    else:
        result = uvloop.run(run(config))
    for line in report_lines(result):
        print(line, flush=True)
    print(f"written to {write_json(result)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
