"""Mixer cost per 20 ms tick: ``python -m benchmarks bench_mixer``.

Budget: the tick runs every 20 ms on one core per worker, next to the websockets and JSON; the
issue's targets are a full-mixing tick of <= 1.5 us per leg (1,000 legs in two-party rooms in
<= 1.5 ms), rooms of 10 no worse per leg, and < 0.1 us for the passthrough forwarding decision.

Each repetition puts one random 20 ms frame for every leg (timed as the ``put`` columns), then
ticks once (``tick`` columns); figures are medians over the repetitions, measured with
time.perf_counter on one thread. ``mixing`` rows build the mixer with ``passthrough=False`` so
two-party rooms are mixed too; ``changed tick`` is a tick right after one leg was muted or
unmuted, so it includes rebuilding the layout. ``passthrough`` rows time the forwarding in
``put_frame`` alone.
``null call`` is an empty method with the same signature, the floor any Python API pays per
frame; ``decision`` is put_frame minus that floor.

``cushion`` rows build the mixer as the engine does (``cushion_at_start=True``) and keep one
spare frame queued in every leg, so every tick also moves each input queue on: the cost of the
input queue itself (a per-leg compaction loop before the ring of ``media.input_ring``).
``l16-16k`` legs are wideband (L16 at 16 kHz, resampled to and from the 8 kHz mix); ``8k+16k``
rooms alternate PCMU and wideband legs. ``overlay`` rows give every leg a ringback
(``media.tones.Ringback``) and report what it adds per leg over the same tick without it.

``input queue`` rows time the input queue alone at 1,000 legs that each keep one spare frame
(the engine's cushion), before and after the ring, interleaved in one run so the machine's load
falls on both alike: ``compacting`` is the layout the mixer had before (a byte row per leg,
compacted by a Python loop over the legs left with bytes after each tick), kept here as the
reference; ``ring`` is ``media.input_ring``. Per repetition: one put per leg, then what a tick
does to the queues (read each head frame, move the queue on).
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from media.blas import pin_blas_to_one_thread
from media.codecs import L16_8K, L16_16K, PCMA_8K, PCMU_8K, AudioFormat
from media.input_ring import InputRing
from media.mixer import Mixer
from media.tones import Ringback

LEGS = (10, 100, 1000, 5000)
ROOM_SIZES = (2, 3, 10)
SECONDS_PER_CASE = 0.6
MIN_REPS, MAX_REPS = 15, 400


def _build(
    legs: int, size: int, formats: tuple[AudioFormat, ...], passthrough: bool, cushion: bool = False
) -> Mixer:
    mixer = Mixer(passthrough=passthrough, cushion_at_start=cushion)
    for i in range(legs):
        leg_id = f"leg-{i}"
        mixer.add_leg(leg_id, formats[i % len(formats)])
        mixer.join(leg_id, f"room-{i // size}")
    return mixer


def _payloads(legs: int, formats: tuple[AudioFormat, ...]) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(7)
    return [(f"leg-{i}", rng.bytes(formats[i % len(formats)].frame_bytes())) for i in range(legs)]


def _repeat(step: Callable[[], tuple[float, float]]) -> tuple[float, float]:
    """Median (put seconds, tick seconds) over repetitions of ``step``."""
    puts: list[float] = []
    ticks: list[float] = []
    deadline = time.perf_counter() + SECONDS_PER_CASE
    while len(puts) < MAX_REPS and (len(puts) < MIN_REPS or time.perf_counter() < deadline):
        put, tick = step()
        puts.append(put)
        ticks.append(tick)
    return statistics.median(puts), statistics.median(ticks)


def _mixing(
    legs: int,
    size: int,
    formats: tuple[AudioFormat, ...],
    *,
    cushion: bool = False,
    ringback: bool = False,
) -> tuple[float, float, float]:
    """Median seconds of: put_frame for every leg, a tick, a tick after a membership change."""
    mixer = _build(legs, size, formats, passthrough=False, cushion=cushion)
    payloads = _payloads(legs, formats)
    put_frame = mixer.put_frame
    if ringback:
        for i in range(legs):
            mixer.set_overlay(f"leg-{i}", Ringback("us"))
    if cushion:  # the spare frame every leg keeps queued from its start
        for leg_id, payload in payloads:
            put_frame(leg_id, payload)
    muted = [False]

    def step(change: bool) -> tuple[float, float]:
        if change:  # one leg muted or unmuted: the next tick rebuilds its layout
            muted[0] = not muted[0]
            mixer.mute("leg-0", muted[0])
        start = time.perf_counter()
        for leg_id, payload in payloads:
            put_frame(leg_id, payload)
        middle = time.perf_counter()
        mixer.tick()
        return middle - start, time.perf_counter() - middle

    step(False)  # first tick builds the layout
    put, tick = _repeat(lambda: step(False))
    return put, tick, _repeat(lambda: step(True))[1]


class _Null:
    def put_frame(self, leg_id: str, payload: bytes) -> list[tuple[str, bytes]]:
        return []


def _forwarding(legs: int, target: Mixer | _Null) -> float:
    payloads = _payloads(legs, (PCMU_8K,))
    put_frame = target.put_frame

    def step() -> tuple[float, float]:
        start = time.perf_counter()
        for leg_id, payload in payloads:
            put_frame(leg_id, payload)
        return time.perf_counter() - start, 0.0

    return _repeat(step)[0]


class _CompactingQueues:
    """The input queue as it was before the ring: one byte row per slot, compacted per tick."""

    def __init__(self, slots: int, frame: int) -> None:
        self.frame = frame
        self.inbuf = np.zeros((slots, 8 * frame), dtype=np.uint8)
        self.fill = np.zeros(slots, dtype=np.int64)
        self._inview = self.inbuf.data.cast("B")
        self._fillview = self.fill.data
        self._width = 8 * frame
        self._queue_bytes = [4 * frame] * slots

    def put(self, slot: int, payload: bytes) -> None:
        fill = self._fillview[slot]
        if fill + len(payload) <= self._queue_bytes[slot]:
            start = slot * self._width + fill
            self._inview[start : start + len(payload)] = payload
            self._fillview[slot] = fill + len(payload)

    def take(self, slots: NDArray[np.intp]) -> NDArray[np.uint8]:
        frames = self.inbuf[slots, : self.frame]
        got = slots[self.fill[slots] >= self.frame]
        self.fill[got] -= self.frame
        for slot in got[self.fill[got] > 0].tolist():  # the per-leg loop the ring removed
            rest = self._fillview[slot]
            self.inbuf[slot, :rest] = self.inbuf[slot, self.frame : self.frame + rest].copy()
        return frames


def _input_queues(legs: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Median (put s/leg, tick s) of the compacting queues and of the ring, interleaved."""
    frame = PCMU_8K.frame_bytes()
    payload = bytes(frame)
    slots = np.arange(legs, dtype=np.intp)
    frame_bytes = np.full(legs, frame, dtype=np.int64)
    before = _CompactingQueues(legs, frame)
    ring = InputRing(legs)
    ring.ensure(legs, frame, 4 * frame)
    for slot in range(legs):
        ring.reset(slot, frame, 4)
        before.put(slot, payload)  # the spare frame every leg keeps
        ring.put(slot, payload)
    times: dict[str, tuple[list[float], list[float]]] = {"before": ([], []), "ring": ([], [])}

    def step(name: str, put: Callable[[int, bytes], object], take: Callable[[], object]) -> None:
        start = time.perf_counter()
        for slot in range(legs):
            put(slot, payload)
        middle = time.perf_counter()
        take()
        times[name][0].append((middle - start) / legs)
        times[name][1].append(time.perf_counter() - middle)

    def ring_take() -> None:
        ring.head_frames(slots, frame)
        ring.consume(slots, frame_bytes)

    for _ in range(MAX_REPS):
        step("before", before.put, lambda: before.take(slots))
        step("ring", ring.put, ring_take)
    medians = {k: (statistics.median(p), statistics.median(t)) for k, (p, t) in times.items()}
    return medians["before"], medians["ring"]


def _row(mode: str, name: str, legs: int, size: int, times: tuple[float, float, float]) -> None:
    put, tick, changed = times
    print(
        f"{mode:<12}{name:<9}{legs:>6}{size:>6}{tick * 1e6:>10.1f}"
        f"{tick * 1e6 / legs:>13.3f}{put * 1e6 / legs:>12.3f}{(put + tick) * 1e6 / legs:>14.3f}"
        f"{changed * 1e6:>17.1f}"
    )


def main(argv: list[str]) -> None:
    pin_blas_to_one_thread()  # as the engine runs
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    print("command: python -m benchmarks bench_mixer; medians, one thread")
    header = (
        f"{'mode':<12}{'codecs':<9}{'legs':>6}{'room':>6}"
        f"{'tick us':>10}{'tick us/leg':>13}{'put us/leg':>12}{'total us/leg':>14}"
        f"{'changed tick us':>17}"
    )
    print(header)
    print("-" * len(header))
    cases: list[tuple[str, tuple[AudioFormat, ...], int, int]] = [
        ("pcmu", (PCMU_8K,), legs, size) for size in ROOM_SIZES for legs in LEGS
    ]
    cases.append(("mixed", (PCMU_8K, PCMA_8K, L16_8K), 1000, 2))
    cases.append(("mixed", (PCMU_8K, PCMA_8K, L16_8K), 1000, 10))
    cases += [("l16-16k", (L16_16K,), legs, 2) for legs in (100, 1000)]
    cases += [("8k+16k", (PCMU_8K, L16_16K), 1000, size) for size in (2, 10)]
    for name, formats, legs, size in cases:
        _row("mixing", name, legs, size, _mixing(legs, size, formats))
    for size in (2, 10):
        _row("cushion", "pcmu", 1000, size, _mixing(1000, size, (PCMU_8K,), cushion=True))
    _row("cushion", "l16-16k", 1000, 2, _mixing(1000, 2, (L16_16K,), cushion=True))
    print()
    print(f"{'overlay':<12}{'legs':>6}{'room':>6}{'tick us':>10}{'plain tick us':>15}{'us/leg':>9}")
    for legs in (100, 1000):
        plain = _mixing(legs, 2, (PCMU_8K,))[1]
        tick = _mixing(legs, 2, (PCMU_8K,), ringback=True)[1]
        print(
            f"{'ringback':<12}{legs:>6}{2:>6}{tick * 1e6:>10.1f}{plain * 1e6:>15.1f}"
            f"{(tick - plain) * 1e6 / legs:>9.3f}"
        )
    print()
    compacting, ring = _input_queues(1000)
    print(f"{'input queue':<12}{'legs':>6}{'put us/leg':>12}{'tick us':>10}{'tick/before':>13}")
    for name, (put, tick) in (("compacting", compacting), ("ring", ring)):
        print(
            f"{name:<12}{1000:>6}{put * 1e6:>12.3f}{tick * 1e6:>10.1f}{tick / compacting[1]:>13.2f}"
        )
    print()
    print(f"{'passthrough':<12}{'legs':>6}{'put us/frame':>14}{'null call':>11}{'decision':>10}")
    for legs in LEGS:
        forwarded = _forwarding(legs, _build(legs, 2, (PCMU_8K,), passthrough=True)) / legs
        null = _forwarding(legs, _Null()) / legs
        print(
            f"{'pcmu':<12}{legs:>6}{forwarded * 1e6:>14.3f}{null * 1e6:>11.3f}"
            f"{(forwarded - null) * 1e6:>10.3f}"
        )
