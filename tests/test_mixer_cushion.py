"""The mixer's jitter cushion from a leg's first frame (``cushion_at_start``).

Two 20 ms clocks that are not synchronised (the provider's sender and the engine's tick) put a
frame a little after a tick now and then. Without a queued spare frame that tick has nothing of
the speaker's (its listener is sent nothing, ``media.mix_audible``); the spare then builds up and
the next late frame costs nothing. Starting every leg with that spare makes the first late frame
cost nothing too.
"""

from __future__ import annotations

import numpy as np

from media.codecs import PCMU_8K, decode, encode
from media.mixer import Mixer

N = 160


def voice(k: int) -> bytes:
    """Frame k of a speaker: a distinct constant level, so frames can be told apart."""
    return encode(PCMU_8K, np.full(N, 1000 + 100 * k, dtype=np.int16))


def level(frame: bytes) -> int:
    return int(np.median(decode(PCMU_8K, frame)))


def pair(cushion: bool) -> Mixer:
    mixer = Mixer(passthrough=False, cushion_at_start=cushion)
    for leg in ("a", "b"):
        mixer.add_leg(leg, PCMU_8K)
        mixer.join(leg, "room")
    return mixer


def heard_by_b(mixer: Mixer) -> int | None:
    frame = dict(mixer.tick().frames).get("b")
    return None if frame is None else level(frame)


def run(mixer: Mixer, arrivals: list[list[int]]) -> list[int | None]:
    """Per tick: the frames of ``a`` that arrived before it, then what ``b`` heard (None:
    nothing was sent to b)."""
    heard = []
    for frames in arrivals:
        for k in frames:
            mixer.put_frame("a", voice(k))
        heard.append(heard_by_b(mixer))
    return heard


# Frame 2 arrives just after its tick and comes with frame 3.
LATE_ONCE = [[0], [1], [], [2, 3], [4], [5]]


def test_without_the_cushion_the_first_late_frame_is_a_tick_with_nothing_sent() -> None:
    heard = run(pair(cushion=False), LATE_ONCE)
    assert heard == [level(voice(k)) for k in (0, 1)] + [None] + [
        level(voice(k)) for k in (2, 3, 4)
    ]


def test_with_the_cushion_the_first_frame_waits_for_a_second_and_nothing_is_silent_after() -> None:
    heard = run(pair(cushion=True), LATE_ONCE)
    assert heard[0] is None  # frame 0 is the cushion: one tick of latency, nothing sent yet
    assert heard[1:] == [level(voice(k)) for k in (0, 1, 2, 3, 4)]


def test_the_cushion_is_built_again_when_a_leg_returns_from_passthrough() -> None:
    mixer = Mixer(cushion_at_start=True)
    for leg in ("a", "b"):
        mixer.add_leg(leg, PCMU_8K)
        mixer.join(leg, "room")
    assert mixer.is_passthrough("room")
    assert mixer.put_frame("a", voice(0)) == [("b", voice(0))]  # forwarded, not queued
    # A playback to b makes the room mixed: a's input is queued from now on, cushion first.
    mixer.set_overlay("b", lambda n: np.zeros(n, dtype=np.int16))
    assert not mixer.is_passthrough("room")
    assert run(mixer, [[1], [2], [3]]) == [0, level(voice(1)), level(voice(2))]
