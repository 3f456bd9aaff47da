"""The mixer's per-leg input queues: one byte ring per slot, consumed a whole frame per tick.

Each slot's ring is ``queue_frames`` frames long (its ``size`` in bytes) and lives at the start of
the slot's row of one (capacity, width) byte array. ``put`` appends anywhere (providers promise
no frame size), wrapping at the ring's end. Reading never wraps: the head only ever moves by
whole frames (a tick consumes one, overflow and shedding drop whole frames) and the ring is a
whole number of frames long, so the frame at the head is contiguous. The width is a multiple of
every frame size in use, so a group of slots sharing a frame size reads its head frames with one
row gather from a (cells, frame_bytes) view: no per-leg copy and no compaction in the tick.

Policies kept from the compacting queue it replaces:

- overflow drops the oldest whole frames (bounded latency, samples stay aligned), counted by the
  caller from ``put``'s return value;
- a slot that keeps two whole frames queued after its tick for ``SHED_AFTER_TICKS`` ticks in a row
  sheds the oldest (a burst must not add 40 ms to the rest of a call); one spare frame is the
  jitter cushion and is kept.

A ring only ever holds bytes nobody has heard yet: a leg in passthrough forwards its frames and
queues none (its detection input waits in ``media.sniff_batch``).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from media.mix_results import SHED_AFTER_TICKS

__all__ = ["InputRing"]


def _kept(values: NDArray[np.int64], capacity: int) -> NDArray[np.int64]:
    grown = np.zeros(capacity, dtype=np.int64)
    grown[: values.size] = values
    return grown


class InputRing:
    """Input byte rings for ``capacity`` slots; slot state is reset by ``reset``.

    ``head``, ``fill`` (bytes queued), ``size`` (ring length) and ``standing`` (ticks in a row
    with two whole frames left queued) are per-slot arrays the tick reads.
    """

    head: NDArray[np.int64]
    fill: NDArray[np.int64]
    size: NDArray[np.int64]
    standing: NDArray[np.int64]

    def __init__(self, capacity: int) -> None:
        self._capacity = 0
        self._width = 0
        self._unit = 1  # every frame size in use divides it; the width is a multiple of it
        self._buf = np.zeros((0, 0), dtype=np.uint8)
        self._ring_bytes: list[int] = []
        self._frame_bytes: list[int] = []
        self._standing = False  # any slot's standing count above 0
        self._grow(capacity, 0, 1)

    # -- slots ------------------------------------------------------------------------------

    def _grow(self, capacity: int, width: int, unit: int) -> None:
        """(Re)allocate for ``capacity`` slots of ``width`` bytes, keeping every ring's bytes."""
        old = self._capacity
        buf = np.zeros((capacity, width), dtype=np.uint8)
        if old and self._width:
            buf[:old, : self._width] = self._buf
        self._buf = buf
        self._flat = buf.reshape(-1).data.cast("B")
        self.head = _kept(self.head, capacity) if old else np.zeros(capacity, dtype=np.int64)
        self.fill = _kept(self.fill, capacity) if old else np.zeros(capacity, dtype=np.int64)
        self.size = _kept(self.size, capacity) if old else np.zeros(capacity, dtype=np.int64)
        self.standing = (
            _kept(self.standing, capacity) if old else np.zeros(capacity, dtype=np.int64)
        )
        # Python-speed access for put_frame, which runs once per frame per leg.
        self._headv = self.head.data
        self._fillv = self.fill.data
        self._sizev = self.size.data
        # Per slot, as Python ints for put: the ring's length and the frame size it is cut in.
        self._ring_bytes.extend([0] * (capacity - old))
        self._frame_bytes.extend([0] * (capacity - old))
        self._capacity, self._width, self._unit = capacity, width, unit

    def ensure(self, capacity: int, frame_bytes: int, queue_bytes: int) -> None:
        """Room for ``capacity`` slots and a ring of ``queue_bytes`` cut in ``frame_bytes``."""
        unit = math.lcm(self._unit, frame_bytes)
        width = -(-max(self._width, queue_bytes) // unit) * unit
        if capacity > self._capacity or width != self._width or unit != self._unit:
            self._grow(max(capacity, self._capacity), width, unit)

    def reset(self, slot: int, frame_bytes: int, queue_frames: int) -> None:
        """An empty ring of ``queue_frames`` frames of ``frame_bytes`` for the slot's new leg."""
        self._sizev[slot] = self._ring_bytes[slot] = frame_bytes * queue_frames
        self._frame_bytes[slot] = frame_bytes
        self.clear(slot)

    def clear(self, slot: int) -> None:
        self._headv[slot] = 0
        self._fillv[slot] = 0
        self.standing[slot] = 0  # _standing may stay True for a while: it only costs a check

    # -- writing ----------------------------------------------------------------------------

    def put(self, slot: int, payload: bytes) -> int:
        """Append the payload; returns the bytes dropped (oldest whole frames) to make room."""
        fillv = self._fillv
        fill = fillv[slot]
        size = len(payload)
        ring = self._ring_bytes[slot]
        if fill + size > ring:
            return self._overflow(slot, payload)
        at = self._headv[slot] + fill
        if at >= ring:
            at -= ring
        base = slot * self._width
        if at + size <= ring:
            self._flat[base + at : base + at + size] = payload
        else:
            first = ring - at
            view = memoryview(payload)
            self._flat[base + at : base + ring] = view[:first]
            self._flat[base : base + size - first] = view[first:]
        fillv[slot] = fill + size
        return 0

    def _overflow(self, slot: int, payload: bytes) -> int:
        data = self.queued(slot) + bytes(payload)
        excess = len(data) - self._sizev[slot]
        frame_bytes = self._frame_bytes[slot]
        dropped = -(-excess // frame_bytes) * frame_bytes  # whole frames, oldest first
        data = data[dropped:]
        self.clear(slot)
        self._buf[slot, : len(data)] = np.frombuffer(data, dtype=np.uint8)
        self._fillv[slot] = len(data)
        return dropped

    # -- reading ----------------------------------------------------------------------------

    def queued(self, slot: int, start: int = 0) -> bytes:
        """The slot's queued bytes from ``start`` (relative to the head), in order."""
        head, fill, ring = self._headv[slot], self._fillv[slot], self._sizev[slot]
        if start >= fill:
            return b""
        row: NDArray[np.uint8] = self._buf[slot]
        begin = head + start
        if begin >= ring:
            begin -= ring
        end = begin + fill - start
        if end <= ring:
            return row[begin:end].tobytes()
        return row[begin:ring].tobytes() + row[: end - ring].tobytes()

    def head_frames(self, slots: NDArray[np.intp], frame_bytes: int) -> NDArray[np.uint8]:
        """(len(slots), frame_bytes): the frame at the head of each slot (whatever is there)."""
        per_row = self._width // frame_bytes
        cells = self._buf.reshape(self._capacity * per_row, frame_bytes)
        frames: NDArray[np.uint8] = cells[slots * per_row + self.head[slots] // frame_bytes]
        return frames

    # -- the tick ---------------------------------------------------------------------------

    def consume(self, slots: NDArray[np.intp], frame_bytes: NDArray[np.int64]) -> int:
        """Each slot's head frame was used: drop it, shed standing frames; returns frames shed."""
        step = np.zeros(self._capacity, dtype=np.int64)  # whole-array steps beat gather/scatter
        step[slots] = frame_bytes
        self._advance(step)
        spare = self.fill >= 2 * step
        spare &= step > 0
        if not (self._standing or spare.any()):
            return 0  # the usual tick: no queue holds more than the one-frame cushion
        # Judged only where bytes are left, as the compacting queue always did.
        judged = slots[self.fill[slots] > 0]
        standing = self.standing[judged] + 1
        shed = spare[judged] & (standing >= SHED_AFTER_TICKS)
        self.standing[judged] = np.where(spare[judged] & ~shed, standing, 0)
        self._standing = bool(self.standing.any())
        if not shed.any():
            return 0
        # Two whole frames have stood for SHED_AFTER_TICKS ticks: a burst left them behind, and
        # they would add 40 ms to everything this leg says for the rest of the call.
        again = np.zeros(self._capacity, dtype=np.int64)
        again[judged[shed]] = step[judged[shed]]
        self._advance(again)
        return int(shed.sum())

    def _advance(self, step: NDArray[np.int64]) -> None:
        """Move every slot's head on by ``step`` bytes (0 or one frame)."""
        head, fill = self.head, self.fill
        head += step
        np.subtract(head, self.size, out=head, where=head >= self.size)
        fill -= step
