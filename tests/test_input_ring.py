"""The mixer's input ring (``media.input_ring``): byte-exact queue behaviour without compaction."""

from __future__ import annotations

import numpy as np

from media.input_ring import InputRing
from media.mix_results import SHED_AFTER_TICKS

FRAME = 160
ONE = np.array([FRAME], dtype=np.int64)


def frame(n: int) -> bytes:
    return bytes([n]) * FRAME


def ring(queue_frames: int = 4, slot: int = 1) -> InputRing:
    queues = InputRing(4)
    queues.ensure(4, FRAME, queue_frames * FRAME)
    queues.reset(slot, FRAME, queue_frames)
    return queues


def head(queues: InputRing, slot: int = 1) -> bytes:
    return queues.head_frames(np.array([slot]), FRAME)[0].tobytes()


def take(queues: InputRing, slot: int = 1) -> bytes:
    got = head(queues, slot)
    queues.consume(np.array([slot]), ONE)
    return got


def test_frames_come_out_whole_and_in_order_across_the_end_of_the_ring() -> None:
    queues = ring()
    stream = b"".join(frame(n) for n in range(1, 11))
    at = 0
    out = []
    for size in (100, 300, 7, 250, 180, 120, 400, 243):  # any cut, wrapping several times
        assert queues.put(1, stream[at : at + size]) == 0
        at += size
        while queues.fill[1] >= FRAME:
            out.append(take(queues))
    assert at == len(stream)
    assert out == [frame(n) for n in range(1, 11)]
    assert queues.fill[1] == 0


def test_other_slots_are_untouched() -> None:
    queues = ring()
    queues.reset(2, FRAME, 4)
    queues.put(1, frame(1) * 3)
    queues.put(2, frame(9))
    assert head(queues, 2) == frame(9)
    assert queues.fill[2] == FRAME and queues.fill[1] == 3 * FRAME


def test_overflow_drops_the_oldest_whole_frames_and_says_how_many_bytes() -> None:
    queues = ring()
    queues.put(1, frame(1) + frame(2) + frame(3))
    take(queues)  # the head is now mid-ring
    dropped = queues.put(1, frame(4) + frame(5) + b"\x07" * 10)
    assert dropped == FRAME  # 4 frames and 10 bytes do not fit in 4: frame 2 goes, whole
    assert queues.queued(1) == frame(3) + frame(4) + frame(5) + b"\x07" * 10
    assert [take(queues) for _ in range(3)] == [frame(3), frame(4), frame(5)]


def test_two_spare_frames_standing_are_shed_after_the_shedding_delay() -> None:
    queues = ring(queue_frames=8)
    queues.put(1, frame(0) + frame(1) + frame(2))  # a burst: two more than a tick takes
    shed = 0
    for n in range(3, 3 + SHED_AFTER_TICKS):
        queues.put(1, frame(n))
        shed += queues.consume(np.array([1]), ONE)
    assert shed == 1
    assert queues.fill[1] == 2 * FRAME  # a frame of cushion plus the next
    assert head(queues) == frame(SHED_AFTER_TICKS + 1)


def test_one_spare_frame_is_a_cushion_and_stays() -> None:
    queues = ring()
    queues.put(1, frame(0))
    for n in range(1, 3 * SHED_AFTER_TICKS):
        queues.put(1, frame(n % 250))
        assert queues.consume(np.array([1]), ONE) == 0
    assert queues.fill[1] == FRAME


def test_queued_is_every_byte_not_yet_used_in_order_and_clear_empties_the_ring() -> None:
    queues = ring()
    queues.put(1, frame(1) + frame(2) + frame(3))
    queues.consume(np.array([1]), ONE)
    queues.consume(np.array([1]), ONE)
    queues.put(1, frame(4) + frame(5) + frame(6))  # wraps past the end of a four-frame ring
    assert queues.queued(1) == frame(3) + frame(4) + frame(5) + frame(6)
    assert queues.queued(1, 2 * FRAME) == frame(5) + frame(6)
    queues.clear(1)
    assert queues.fill[1] == 0 and queues.queued(1) == b""


def test_growing_keeps_every_queue_and_fits_a_new_frame_size() -> None:
    queues = ring()
    queues.put(1, frame(1) + frame(2))
    take(queues)
    queues.ensure(16, 640, 4 * 640)  # a wideband leg arrives: rows widen, more slots
    queues.reset(9, 640, 4)
    queues.put(9, bytes(range(256)) * 5)
    assert head(queues) == frame(2)
    assert queues.head_frames(np.array([9]), 640)[0].tobytes() == (bytes(range(256)) * 5)[:640]
