"""media/sniff_batch.py: what sniffed legs said, kept for detection, taken in blocks per format."""

from __future__ import annotations

from media.sniff_batch import SniffBatch

FRAME = 160
MU, A = 0, 1  # the caller's numbers for two formats


def frame(n: int, size: int = FRAME) -> bytes:
    return bytes([n]) * size


def test_one_prompt_frame_per_leg_is_one_block_per_format_and_taking_empties_it() -> None:
    batch = SniffBatch()
    batch.add(MU, 3, frame(1), FRAME, prompt=True)
    batch.add(A, 5, frame(2), FRAME, prompt=True)
    batch.add(MU, 1, frame(3), FRAME, prompt=True)
    assert batch.take(relaxed_too=False) == [
        (MU, [3, 1], [frame(1), frame(3)], 1),
        (A, [5], [frame(2)], 1),
    ]
    assert batch.take(relaxed_too=True) == []


def test_relaxed_frames_wait_for_a_full_take_and_come_two_per_slot() -> None:
    batch = SniffBatch()
    batch.add(MU, 1, frame(1), FRAME)
    batch.add(MU, 2, frame(2), FRAME)
    assert batch.take(relaxed_too=False) == []  # kept for the next tick
    batch.add(MU, 1, frame(3), FRAME)
    batch.add(MU, 2, frame(4), FRAME)
    # Frame-major: both slots' first frames, then both second frames.
    assert batch.take(relaxed_too=True) == [
        (MU, [1, 2], [frame(1), frame(2), frame(3), frame(4)], 2)
    ]


def test_the_second_tick_in_another_order_is_put_in_the_first_ticks_order() -> None:
    batch = SniffBatch()
    for slot, n in ((1, 1), (2, 2), (3, 3), (3, 4), (1, 5), (2, 6)):
        batch.add(MU, slot, frame(n), FRAME)
    assert batch.take(relaxed_too=True) == [
        (MU, [1, 2, 3], [frame(1), frame(2), frame(3), frame(5), frame(6), frame(4)], 2)
    ]


def test_a_leg_that_missed_or_doubled_a_tick_goes_in_the_block_of_its_frame_count() -> None:
    batch = SniffBatch()
    for slot, n in ((1, 1), (2, 2), (1, 3), (1, 4), (2, 5)):
        batch.add(MU, slot, frame(n), FRAME)
    # One detector call per count of frames, not one per round: slot 2 sent two, slot 1 three.
    assert batch.take(relaxed_too=True) == [
        (MU, [2], [frame(2), frame(5)], 2),
        (MU, [1], [frame(1), frame(3), frame(4)], 3),
    ]
    batch.add(MU, 1, frame(6), FRAME)
    batch.add(MU, 2, frame(7), FRAME)
    batch.add(MU, 3, frame(8), FRAME)
    batch.add(MU, 2, frame(9), FRAME)
    batch.add(MU, 3, frame(10), FRAME)
    assert batch.take(relaxed_too=True) == [
        (MU, [1], [frame(6)], 1),
        (MU, [2, 3], [frame(7), frame(8), frame(9), frame(10)], 2),
    ]


def test_relaxed_frames_come_before_prompt_ones_when_a_slot_changes_side() -> None:
    batch = SniffBatch()
    batch.add(MU, 1, frame(1), FRAME)  # relaxed, kept
    batch.add(MU, 1, frame(2), FRAME, prompt=True)  # its listener became DTMF-muted
    assert batch.take(relaxed_too=True) == [
        (MU, [1], [frame(1)], 1),
        (MU, [1], [frame(2)], 1),
    ]


def test_payloads_of_any_length_are_cut_into_frames_and_the_rest_waits() -> None:
    batch = SniffBatch()
    said = bytes(range(256)) * 3  # 768 bytes: four frames and 128 more
    batch.add(MU, 1, said[:100], FRAME)  # short of a frame: nothing to detect yet
    assert batch.take(relaxed_too=True) == []
    batch.add(MU, 1, said[100:500], FRAME)
    batch.add(MU, 1, said[500:], FRAME)
    four = [said[at : at + FRAME] for at in range(0, 640, FRAME)]
    assert batch.take(relaxed_too=True) == [(MU, [1], four, 4)]  # one leg's frames in one block
    batch.add(MU, 1, frame(9, 32), FRAME)  # completes the 128 bytes left over
    assert batch.take(relaxed_too=True) == [(MU, [1], [said[640:] + frame(9, 32)], 1)]


def test_a_forgotten_slot_leaves_nothing_behind() -> None:
    batch = SniffBatch()
    batch.add(MU, 1, frame(1), FRAME)
    batch.add(MU, 2, frame(2), FRAME)
    batch.add(MU, 1, frame(3, 50), FRAME)
    batch.add(MU, 1, frame(4), FRAME, prompt=True)
    batch.forget(1)
    batch.add(MU, 1, frame(5), FRAME)  # a new leg in the slot starts afresh
    assert batch.take(relaxed_too=True) == [(MU, [2, 1], [frame(2), frame(5)], 1)]
    batch.add(MU, 7, frame(6), FRAME)
    batch.forget(7)
    assert batch.take(relaxed_too=True) == []


def test_four_ticks_in_four_orders_are_one_block_in_the_first_orders_slots() -> None:
    batch = SniffBatch()
    order = ([1, 2, 3], [3, 1, 2], [2, 3, 1], [1, 3, 2])
    for tick, slots in enumerate(order):
        for slot in slots:
            batch.add(MU, slot, frame(10 * slot + tick), FRAME)
    [(kind, slots, frames, k)] = batch.take(relaxed_too=True)
    assert (kind, k) == (MU, 4)
    assert frames == [frame(10 * slot + tick) for tick in range(4) for slot in slots]
