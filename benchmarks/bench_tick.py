"""The mixer's tick at 1,000 legs, BLAS threads as they come against one: ``python -m benchmarks
bench_tick``.

Budget: the tick runs every 20 ms; its duration must not depend on how many threads OpenBLAS
was allowed. numpy's matrix products inside it (the DTMF detector's Goertzel product for every
detecting leg, the weighted rooms' matmul) go to OpenBLAS, whose thread pool by default has one
thread per core: on a machine whose cores also run the event loop and the websockets, waking
that pool every 20 ms costs more than it saves.

Each mode runs in its own subprocesses (BLAS reads its environment when numpy is imported), in
one run, in ROUNDS rounds that take the modes in turn, so a change in the machine's load while
the benchmark runs falls on every mode alike; each mode's ticks are pooled over its rounds:

- ``default``: the environment without OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, MKL_NUM_THREADS,
  and no pinning (what numpy does on its own);
- ``pinned``: the same environment, with ``media.blas.pin_blas_to_one_thread()`` called at start,
  as the engine's composition root does;
- ``forced``: OPENBLAS_NUM_THREADS=1 and OMP_NUM_THREADS=1 set before numpy is imported.

Scenarios, each 1,000 PCMU legs built as the engine builds its mixer (``cushion_at_start``,
passthrough on): ``pairs+dtmf``, 500 two-party rooms with detection on for every leg (each leg
is forwarded and sniffed: the tick decodes and detects); ``weighted+dtmf``, 200 rooms of 5 with
a gain of 0.5 between two members (the batched float32 matmul) and detection on. Each tick is
paced to 20 ms like the engine's clock; every leg puts one random frame before it. Figures are
the median and p99 of the tick alone (time.perf_counter), and each mode's ratio to ``forced``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

LEGS = 1000
ROUNDS = 3
TICKS = 100  # per round and scenario
TICK_S = 0.020
MODES = ("default", "pinned", "forced")
SCENARIOS = ("pairs+dtmf", "weighted+dtmf")
_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _environment(mode: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _THREAD_VARIABLES}
    if mode == "forced":
        env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    return env


def _ticks(scenario: str) -> list[float]:
    """Seconds of each of TICKS paced ticks of one scenario (in the child)."""
    from media.codecs import PCMU_8K
    from media.mixer import Mixer

    size = 2 if scenario == "pairs+dtmf" else 5
    mixer = Mixer(capacity=LEGS, cushion_at_start=True)
    legs = [f"leg-{i}" for i in range(LEGS)]
    for i, leg_id in enumerate(legs):
        mixer.add_leg(leg_id, PCMU_8K)
        mixer.join(leg_id, f"room-{i // size}")
        mixer.set_detect(leg_id, True)
    if size > 2:
        for room in range(LEGS // size):
            members = mixer.members(f"room-{room}")
            mixer.set_gain(f"room-{room}", members[0], members[1], 0.5)
    rng = np.random.default_rng(11)
    payloads = [rng.bytes(PCMU_8K.frame_bytes()) for _ in legs]
    durations: list[float] = []
    deadline = time.perf_counter()
    for _ in range(TICKS):
        for leg_id, payload in zip(legs, payloads, strict=True):
            mixer.put_frame(leg_id, payload)
        start = time.perf_counter()
        mixer.tick()
        durations.append(time.perf_counter() - start)
        deadline += TICK_S
        time.sleep(max(0.0, deadline - time.perf_counter()))
    return durations


def _child(mode: str) -> None:
    if mode == "pinned":
        from media.blas import pin_blas_to_one_thread

        pin_blas_to_one_thread()
    from media.blas import blas_threads

    result = {scenario: _ticks(scenario) for scenario in SCENARIOS}
    print(json.dumps({"threads": blas_threads(), "ticks": result}))


@dataclass
class _Run:
    threads: int  # BLAS threads allowed, as the child saw them
    ticks: dict[str, list[float]]  # scenario -> seconds per tick


def _run(mode: str) -> _Run:
    command = [sys.executable, "-m", "benchmarks.bench_tick", "--child", mode]
    out = subprocess.run(
        command, env=_environment(mode), capture_output=True, text=True, check=True
    )
    loaded = json.loads(out.stdout)
    return _Run(int(loaded["threads"]), {k: list(v) for k, v in loaded["ticks"].items()})


def _pooled(runs: list[_Run]) -> _Run:
    ticks = {scenario: [t for run in runs for t in run.ticks[scenario]] for scenario in SCENARIOS}
    return _Run(max(run.threads for run in runs), ticks)


def _p99(values: list[float]) -> float:
    return float(np.percentile(values, 99))


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        _child(argv[1])
        return
    print(
        f"command: python -m benchmarks bench_tick; {LEGS} legs, {ROUNDS} rounds of {TICKS} ticks"
        " paced to 20 ms per mode and scenario"
    )
    print(f"cpus: {os.cpu_count()}; modes in turn: {', '.join(MODES)}")
    rounds = [{mode: _run(mode) for mode in MODES} for _ in range(ROUNDS)]
    runs = {mode: _pooled([one[mode] for one in rounds]) for mode in MODES}
    header = (
        f"{'scenario':<15}{'mode':<9}{'blas threads':>13}{'median ms':>11}{'p99 ms':>9}"
        f"{'median/forced':>15}{'p99/forced':>12}"
    )
    print(header)
    print("-" * len(header))
    for scenario in SCENARIOS:
        forced = runs["forced"].ticks[scenario]
        for mode in MODES:
            ticks = runs[mode].ticks[scenario]
            median = statistics.median(ticks)
            print(
                f"{scenario:<15}{mode:<9}{runs[mode].threads:>13}{median * 1e3:>11.3f}"
                f"{_p99(ticks) * 1e3:>9.3f}{median / statistics.median(forced):>15.2f}"
                f"{_p99(ticks) / _p99(forced):>12.2f}"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
