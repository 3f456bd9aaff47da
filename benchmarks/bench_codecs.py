"""G.711 throughput: the numpy lookup-table codec against stdlib ``audioop``, in the same run.

Budget: the mixer decodes and encodes every leg once per 20 ms tick, as one (legs, 160) block;
at 1,000 legs that block must take a small fraction of the tick. Target: numpy encode of a
1,000 x 160 block at least 10x faster than ``audioop.lin2ulaw`` / ``lin2alaw`` on the same samples.

Command: ``python -m benchmarks bench_codecs``. Each figure is the median of many timed runs
(``time.perf_counter``), numpy and audioop alternating so both see the same machine load; single
frames are timed in batches of 1,000 calls to rise above timer resolution.
"""

from __future__ import annotations

import platform
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import numpy.typing as npt

from media.codecs import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

FRAME = 160
BLOCK_FRAMES = 1000
ENCODE_TARGET = 10.0


@dataclass(frozen=True)
class Case:
    law: str
    op: str
    frames: int
    ours: Callable[[], object]
    stdlib: Callable[[], object]


def time_batch(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def median_seconds(
    ours: Callable[[], object], stdlib: Callable[[], object], calls: int, repeats: int
) -> tuple[float, float]:
    """Median seconds per call of each, timed in alternation so both see the same machine load."""
    ours()
    stdlib()
    ours_times, stdlib_times = [], []
    for _ in range(repeats):
        ours_times.append(time_batch(ours, calls))
        stdlib_times.append(time_batch(stdlib, calls))
    return statistics.median(ours_times), statistics.median(stdlib_times)


def build_cases() -> list[Case]:
    rng = np.random.default_rng(0)
    # Speech-like levels exercise every segment; uniform noise would sit in the top two.
    block = np.clip(rng.normal(0, 4000, size=(BLOCK_FRAMES, FRAME)), -32768, 32767)
    samples: npt.NDArray[np.int16] = block.astype(np.int16)
    laws = [
        ("PCMU", ulaw_encode, ulaw_decode, audioop.lin2ulaw, audioop.ulaw2lin),
        ("PCMA", alaw_encode, alaw_decode, audioop.lin2alaw, audioop.alaw2lin),
    ]
    cases = []
    for law, encode, decode, lin2law, law2lin in laws:
        for frames in (1, BLOCK_FRAMES):
            pcm = samples[:frames]
            # audioop works in native byte order, which is what tobytes() gives.
            pcm_bytes = pcm.tobytes()
            codes = encode(pcm)
            code_bytes = codes.tobytes()
            cases.append(
                Case(law, "encode", frames, partial(encode, pcm), partial(lin2law, pcm_bytes, 2))
            )
            cases.append(
                Case(law, "decode", frames, partial(decode, codes), partial(law2lin, code_bytes, 2))
            )
    return cases


def main(argv: list[str]) -> None:
    del argv
    print(
        f"Python {platform.python_version()} ({platform.machine()}), numpy {np.__version__},"
        f" audioop from {getattr(audioop, '__file__', 'the interpreter (built in)')}"
    )
    header = (
        f"{'law':4} {'op':6} {'frames':>6} | {'numpy us/frame':>14} {'Msamp/s':>8} |"
        f" {'audioop us/frame':>16} {'Msamp/s':>8} | {'numpy/audioop':>13}"
    )
    print(header)
    print("-" * len(header))
    misses = []
    for case in build_cases():
        calls, repeats = (1000, 31) if case.frames == 1 else (1, 101)
        ours, stdlib = median_seconds(case.ours, case.stdlib, calls, repeats)
        samples = case.frames * FRAME
        ratio = stdlib / ours
        print(
            f"{case.law:4} {case.op:6} {case.frames:>6} |"
            f" {ours / case.frames * 1e6:>14.3f} {samples / ours / 1e6:>8.1f} |"
            f" {stdlib / case.frames * 1e6:>16.3f} {samples / stdlib / 1e6:>8.1f} |"
            f" {ratio:>12.1f}x"
        )
        if case.op == "encode" and case.frames == BLOCK_FRAMES and ratio < ENCODE_TARGET:
            misses.append(f"{case.law} block encode {ratio:.1f}x")
    print("numpy/audioop is throughput (higher is better for numpy).")
    verdict = "MISSED: " + ", ".join(misses) if misses else "met"
    print(f"target: block encode >= {ENCODE_TARGET:.0f}x audioop: {verdict}")
