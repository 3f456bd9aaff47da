"""One leg's outgoing digit queue (``media.dtmf_out.DigitQueue``), sample by sample."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from numpy.typing import NDArray

from media.dtmf import InvalidDtmfDigit
from media.dtmf_out import GAP_MS, DigitQueue
from tests.test_dtmf import digits_of

RATE = 8000
FRAME = 160


def play(queue: DigitQueue, ends: list[int], limit: int = 1000) -> NDArray[np.int16]:
    """Pull frames until the queue ends (it must, within ``limit`` frames)."""
    played = []
    while not ends:
        played.append(queue(FRAME))
        assert len(played) < limit
    return np.concatenate(played)


def sounding(samples: NDArray[np.int16]) -> list[tuple[int, int]]:
    """(first, last + 1) sample indices of each tone: non-zero samples, where a tone's own zero
    samples (its soft start, a zero crossing) do not split it."""
    loud = np.flatnonzero(samples)
    if loud.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(loud) > 16).tolist()
    starts = [int(loud[0]), *(int(loud[i + 1]) for i in breaks)]
    ends = [*(int(loud[i]) + 1 for i in breaks), int(loud[-1]) + 1]
    return list(zip(starts, ends, strict=True))


def test_digits_gaps_and_pauses_then_the_end_once() -> None:
    ends: list[int] = []
    queue = DigitQueue(on_end=lambda: ends.append(1))
    queue.push("12w3", 100)
    audio = play(queue, ends)
    # 100 ms tones; 1 -> 2 a gap; 2 -> 3 the pause replaces it; a closing gap after 3.
    assert len(audio) >= (3 * 100 + GAP_MS + 500 + GAP_MS) * RATE // 1000
    tones = sounding(audio)
    assert len(tones) == 3
    gaps = [b[0] - a[1] for a, b in itertools.pairwise(tones)]
    # A tone's first sample is 0 (its soft start): a gap measures one sample more.
    assert gaps == [GAP_MS * RATE // 1000 + 1, 500 * RATE // 1000 + 1]
    assert digits_of(audio) == "123"
    assert ends == [1] and queue.idle
    assert not queue(FRAME).any() and ends == [1], "ended: silence, no second end"


def test_a_second_push_waits_for_the_first_and_is_separated_by_a_gap() -> None:
    ends: list[int] = []
    queue = DigitQueue(on_end=lambda: ends.append(1))
    queue.push("5", 100)
    first = queue(FRAME * 2)  # part of the way into "5"
    queue.push("5W", 100)
    audio = np.concatenate([first, play(queue, ends)])
    tones = sounding(audio)
    assert len(tones) == 2, "one after the other, never mixed"
    assert tones[1][0] - tones[0][1] == GAP_MS * RATE // 1000 + 1
    assert digits_of(audio) == "55", "the same digit twice is heard twice"
    assert len(audio) >= (2 * 100 + GAP_MS + 1000) * RATE // 1000


def test_restart_current_plays_the_cut_digit_whole_again() -> None:
    ends: list[int] = []
    queue = DigitQueue(on_end=lambda: ends.append(1))
    queue.push("9", 200)
    queue(FRAME * 3)  # 60 ms of "9", then the stream broke
    queue.restart_current()
    tones = sounding(play(queue, ends))
    assert [b - a for a, b in tones] == [200 * RATE // 1000 - 1]


def test_clear_drops_everything_without_ending() -> None:
    ends: list[int] = []
    queue = DigitQueue(on_end=lambda: ends.append(1))
    queue.push("123", 250)
    queue(FRAME)
    queue.clear()
    assert queue.idle and not queue(FRAME).any() and ends == []


@pytest.mark.parametrize("ms", [100, 250, 500])  # Telnyx's range and default
def test_every_digit_at_every_allowed_length_round_trips_through_the_detector(ms: int) -> None:
    ends: list[int] = []
    queue = DigitQueue(on_end=lambda: ends.append(1))
    queue.push("0123456789*#ABCD", ms)
    assert digits_of(play(queue, ends)) == "0123456789*#ABCD"


def test_an_invalid_character_refuses_the_whole_push() -> None:
    queue = DigitQueue()
    with pytest.raises(InvalidDtmfDigit, match="'e'"):
        queue.push("12e", 100)
    assert queue.idle
