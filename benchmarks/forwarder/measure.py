"""One measured step: after a warm-up, a window over which the server's CPU (utime + stime from
``/proc/<pid>/stat``), the generator's own CPU and the frames sent and received are read.

A *leg-tick* is one leg's 20 ms: ``legs * window / 20 ms`` of them in a window, so CPU per
leg-tick is comparable across servers and leg counts. A step is *valid* only if the generator
kept real time (it sent at least ``MIN_REALTIME`` of the frames real time asks for, and its
sends were at most ``MAX_LATENESS_MS`` late at the 99th percentile: later sends come in catch-up
bursts, which are cheaper per frame for a server than frames spread in time) and every
leg heard its peer (one of its latest frames holds the peer's audio), the server delivered
nearly every frame, and (servers pinned) other processes took little of the server core (its
user and system time from ``/proc/stat`` minus the servers'): otherwise the figure measures
the generator, a starved server or a broken setup, and the step says so instead of hiding it.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import numpy as np

from benchmarks.forwarder.frames import FRAME_MS, carries_payload
from benchmarks.forwarder.lean_legs import LeanLeg, LeanLegs
from benchmarks.loadtest.engine_host import process_stats

__all__ = ["MAX_LATENESS_MS", "MIN_REALTIME", "StepResult", "Target", "measure_steps"]

MIN_REALTIME: Final = 0.98
#: Sends this late mean bursts of catch-up frames, which a server handles more cheaply per frame.
MAX_LATENESS_MS: Final = float(FRAME_MS)
#: A server that delivers less than this share of the frames is starved or overloaded.
MIN_DELIVERED: Final = 0.95
#: Other processes may take this share of the server core before a step is not a measure.
MAX_SHARED: Final = 0.10
_TICKS: Final = os.sysconf("SC_CLK_TCK")


@dataclass
class StepResult:
    server: str
    planned_legs: int  # the step's leg count
    legs: int  # the legs open in the window
    window_s: float
    server_cpu_s: float
    generator_cpu_s: float  # over every target measured in the same window
    frames_sent: int
    frames_received: int
    legs_hearing_peer: int
    close_codes: dict[int, int]  # legs whose socket the server closed, by close code
    lateness_p99_ms: float
    lateness_max_ms: float
    #: CPU seconds the server core spent on anything but the servers measured (None: unpinned).
    others_on_server_core_s: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def leg_ticks(self) -> float:
        return self.legs * self.window_s * 1000 / FRAME_MS

    @property
    def us_per_leg_tick(self) -> float:
        return self.server_cpu_s * 1e6 / self.leg_ticks

    @property
    def realtime(self) -> float:
        """Frames the generator sent / frames real time asks for."""
        return self.frames_sent / self.leg_ticks

    @property
    def delivered(self) -> float:
        """Frames the legs received / frames they sent, in the window."""
        return self.frames_received / self.frames_sent if self.frames_sent else 0.0

    @property
    def valid(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        derived = ("leg_ticks", "us_per_leg_tick", "realtime", "delivered", "valid")
        return {**asdict(self), **{name: getattr(self, name) for name in derived}}


@dataclass(frozen=True, slots=True)
class Target:
    """A server under test and the legs it carries, for one step of ``planned_legs``."""

    server: str
    planned_legs: int
    pid: int
    legs: LeanLegs


@dataclass(frozen=True, slots=True)
class _Reading:
    server_cpu_s: float
    sent: int
    received: int


def _read(target: Target) -> _Reading:
    sent, received = target.legs.totals()
    return _Reading(process_stats(target.pid).cpu_s, sent, received)


def core_busy_s(core: int) -> float:
    """CPU seconds ``core`` has spent running processes (user, nice, system) since boot.

    Interrupt time is left out: part of it is the servers' own loopback traffic."""
    with open("/proc/stat") as stat:
        for line in stat:
            name, *ticks = line.split()
            if name == f"cpu{core}":
                values = [int(tick) for tick in ticks]
                return sum(values[:3]) / _TICKS
    raise ValueError(f"no cpu{core} in /proc/stat")


async def measure_steps(
    targets: Sequence[Target],
    payloads: Mapping[int, str],
    *,
    warmup_s: float,
    window_s: float,
    server_core: int | None = None,
) -> list[StepResult]:
    """Measure every target over one window (the generator's CPU is theirs together);
    ``payloads[i]`` is what leg ``i`` says (pairs: legs 2k and 2k + 1)."""
    # What setup left (the simulator's calls, their requests, the legs) is not garbage: out of
    # the collector's sight, so that its full collections do not stall the generator's pacer.
    gc.collect()
    gc.freeze()
    await asyncio.sleep(warmup_s)  # steady state: setup bursts and caches behind us
    for target in targets:
        target.legs.lateness.clear()
    core_before = None if server_core is None else core_busy_s(server_core)
    before, generator_before = [_read(t) for t in targets], process_stats(None).cpu_s
    started = time.monotonic()
    await asyncio.sleep(window_s)  # the window is real time
    wall = time.monotonic() - started
    after, generator_after = [_read(t) for t in targets], process_stats(None).cpu_s
    core_after = None if server_core is None else core_busy_s(server_core)
    steps = [
        _step(target, wall, generator_after - generator_before, first, last, payloads)
        for target, first, last in zip(targets, before, after, strict=True)
    ]
    if core_before is not None and core_after is not None:
        others = core_after - core_before - sum(step.server_cpu_s for step in steps)
        for step in steps:
            step.others_on_server_core_s = max(0.0, others)
            step.problems = _problems(step)
    return steps


def _step(
    target: Target,
    wall: float,
    generator_cpu_s: float,
    first: _Reading,
    last: _Reading,
    payloads: Mapping[int, str],
) -> StepResult:
    legs = target.legs
    lateness = np.asarray(legs.lateness or [0.0]) * 1000
    closed = Counter(leg.ws.close_code or 0 for leg in legs.legs.values() if leg.ws.closed)
    step = StepResult(
        server=target.server,
        planned_legs=target.planned_legs,
        legs=len(legs.legs),
        window_s=wall,
        server_cpu_s=last.server_cpu_s - first.server_cpu_s,
        generator_cpu_s=generator_cpu_s,
        frames_sent=last.sent - first.sent,
        frames_received=last.received - first.received,
        legs_hearing_peer=sum(1 for leg in legs.legs.values() if _hears_peer(leg, payloads)),
        close_codes=dict(closed),
        lateness_p99_ms=float(np.percentile(lateness, 99)),
        lateness_max_ms=float(np.max(lateness)),
    )
    step.problems = _problems(step)
    return step


def _hears_peer(leg: LeanLeg, payloads: Mapping[int, str]) -> bool:
    """One of the leg's latest frames holds its peer's audio (pairs are legs 2k and 2k + 1)."""
    peer = payloads[leg.index ^ 1]
    return any(frame is not None and carries_payload(frame, peer) for frame in leg.recent)


def _problems(step: StepResult) -> list[str]:
    problems: list[str] = []
    if step.realtime < MIN_REALTIME or step.lateness_p99_ms > MAX_LATENESS_MS:
        problems.append(
            f"generator off real time: sent {step.realtime:.1%} of it, sends late by up to "
            f"{step.lateness_p99_ms:.0f} ms (p99): the figure measures the generator (its core "
            f"is busy), not the server"
        )
    others = step.others_on_server_core_s
    if others is not None and others > MAX_SHARED * step.window_s:
        problems.append(
            f"the server core was shared: other work took {others / step.window_s:.0%} of it"
        )
    if step.delivered < MIN_DELIVERED:
        problems.append(f"the server delivered {step.delivered:.0%} of the frames: it fell behind")
    if step.legs < step.planned_legs:
        problems.append(f"only {step.legs} of {step.planned_legs} legs open")
    if step.legs_hearing_peer < step.legs:
        problems.append(f"only {step.legs_hearing_peer} of {step.legs} legs hear their peer")
    if step.close_codes:
        codes = ", ".join(f"{n} x {code}" for code, n in sorted(step.close_codes.items()))
        problems.append(f"the server closed {sum(step.close_codes.values())} legs ({codes})")
    return problems
