"""media/sniff_batch.py: what sniffed legs said, kept for detection, taken in rounds per format."""

from __future__ import annotations

from media.sniff_batch import SniffBatch

FRAME = 160
MU, A = 0, 1  # the caller's numbers for two formats


def frame(n: int, size: int = FRAME) -> bytes:
    return bytes([n]) * size


def test_one_frame_per_leg_is_one_round_per_format_and_taking_empties_it() -> None:
    batch = SniffBatch()
    batch.add(MU, 3, frame(1), FRAME)
    batch.add(A, 5, frame(2), FRAME)
    batch.add(MU, 1, frame(3), FRAME)
    assert batch.take() == [(MU, [3, 1], [frame(1), frame(3)]), (A, [5], [frame(2)])]
    assert batch.take() == []


def test_a_leg_that_sent_two_frames_has_its_second_in_the_next_round() -> None:
    batch = SniffBatch()
    for slot, n in ((1, 1), (2, 2), (1, 3), (1, 4), (2, 5)):
        batch.add(MU, slot, frame(n), FRAME)
    assert batch.take() == [
        (MU, [1, 2], [frame(1), frame(2)]),
        (MU, [1, 2], [frame(3), frame(5)]),
        (MU, [1], [frame(4)]),
    ]


def test_payloads_of_any_length_are_cut_into_frames_and_the_rest_waits() -> None:
    batch = SniffBatch()
    said = bytes(range(256)) * 3  # 768 bytes: four frames and 128 more
    batch.add(MU, 1, said[:100], FRAME)  # short of a frame: nothing to detect yet
    assert batch.take() == []
    batch.add(MU, 1, said[100:500], FRAME)
    batch.add(MU, 1, said[500:], FRAME)
    rounds = batch.take()
    assert [r[2][0] for r in rounds] == [said[at : at + FRAME] for at in range(0, 640, FRAME)]
    batch.add(MU, 1, frame(9, 32), FRAME)  # completes the 128 bytes left over
    assert batch.take() == [(MU, [1], [said[640:] + frame(9, 32)])]


def test_a_forgotten_slot_leaves_nothing_behind() -> None:
    batch = SniffBatch()
    batch.add(MU, 1, frame(1), FRAME)
    batch.add(MU, 2, frame(2), FRAME)
    batch.add(MU, 1, frame(3, 50), FRAME)
    batch.forget(1)
    batch.add(MU, 1, frame(4), FRAME)  # a new leg in the slot starts afresh
    assert batch.take() == [(MU, [2, 1], [frame(2), frame(4)])]
    batch.add(MU, 7, frame(5), FRAME)
    batch.forget(7)
    assert batch.take() == []
