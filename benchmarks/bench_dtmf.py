"""In-band DTMF detection's cost per 20 ms tick: ``python -m benchmarks bench_dtmf``.

Budget: detection runs inside the mixer's tick (see bench_mixer for the tick's own budget of
1.5 us per leg); it should cost less than the mixing it rides on. Each row builds PCMU legs in
two-party rooms twice, detection off and on, and times, per repetition, put_frame of one random
frame for every leg and one tick (the mean over RELAXED_TICKS ticks: passthrough legs are
detected every RELAXED_TICKS ticks; medians over repetitions, time.perf_counter, one thread:
BLAS is pinned to one thread with ``media.blas``, as the engine does; ``bench_tick`` shows why).
``mixed`` builds the mixer with ``passthrough=False`` (detection reuses the decoded input);
``passthrough`` keeps two-party passthrough on, so a detecting leg's frame is also queued and
decoded (the *sniffed* path). ``detector`` times ``DtmfDetector.process`` alone on the same
number of legs. ``extra`` is on minus off, per tick and per leg.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from media.blas import pin_blas_to_one_thread
from media.codecs import PCMU_8K
from media.dtmf import DtmfDetector
from media.mixer import Mixer
from media.mixer_dtmf import RELAXED_TICKS

LEGS = (100, 1000, 5000)
SECONDS_PER_CASE = 0.6
MIN_REPS, MAX_REPS = 15, 400


def _build(legs: int, passthrough: bool, detect: bool) -> Mixer:
    mixer = Mixer(passthrough=passthrough)
    for i in range(legs):
        leg_id = f"leg-{i}"
        mixer.add_leg(leg_id, PCMU_8K)
        mixer.join(leg_id, f"room-{i // 2}")
        if detect:
            mixer.set_detect(leg_id, True)
    return mixer


def _median(step: Callable[[], float]) -> float:
    times: list[float] = []
    deadline = time.perf_counter() + SECONDS_PER_CASE
    while len(times) < MAX_REPS and (len(times) < MIN_REPS or time.perf_counter() < deadline):
        times.append(step())
    return statistics.median(times)


def _tick_cost(legs: int, passthrough: bool, detect: bool) -> float:
    """Median seconds of put_frame for every leg plus one tick."""
    mixer = _build(legs, passthrough, detect)
    rng = np.random.default_rng(11)
    payloads = [(f"leg-{i}", rng.bytes(PCMU_8K.frame_bytes())) for i in range(legs)]
    put_frame = mixer.put_frame

    def step() -> float:
        # RELAXED_TICKS ticks, averaged: passthrough legs are detected every RELAXED_TICKS ticks.
        start = time.perf_counter()
        for _ in range(RELAXED_TICKS):
            for leg_id, payload in payloads:
                put_frame(leg_id, payload)
            mixer.tick()
        return (time.perf_counter() - start) / RELAXED_TICKS

    step()  # the first tick builds the layout
    return _median(step)


def _detector_cost(legs: int) -> float:
    detector = DtmfDetector()
    frames = np.random.default_rng(3).integers(-8000, 8000, (legs, 160)).astype(np.int16)

    def step() -> float:
        start = time.perf_counter()
        detector.process(frames)
        return time.perf_counter() - start

    step()
    return _median(step)


def main(argv: list[str]) -> None:
    pin_blas_to_one_thread()
    print(f"{'case':<12} {'legs':>5} {'off ms':>8} {'on ms':>8} {'extra ms':>9} {'us/leg':>7}")
    for legs in LEGS:
        for name, passthrough in (("mixed", False), ("passthrough", True)):
            off = _tick_cost(legs, passthrough, detect=False)
            on = _tick_cost(legs, passthrough, detect=True)
            extra = on - off
            print(
                f"{name:<12} {legs:>5} {off * 1e3:>8.3f} {on * 1e3:>8.3f}"
                f" {extra * 1e3:>9.3f} {extra / legs * 1e6:>7.2f}"
            )
        alone = _detector_cost(legs)
        blank = ""
        print(f"{'detector':<12} {legs:>5} {blank:>8} {alone * 1e3:>8.3f} {blank:>9}", end="")
        print(f" {alone / legs * 1e6:>7.2f}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
