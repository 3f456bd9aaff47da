"""Every frame a speaker sends is heard by its peer exactly once, in order, across every switch
of a two-party room between forwarding (passthrough) and mixing, in either direction.

Each frame carries a distinct constant level, so a listener's frames can be told apart and
counted. What a listener hears is everything ``put_frame`` returned for it plus everything the
ticks sent it; silence (nothing to mix) is not a frame. A delay change of a frame or two at a
switch is allowed; a repeated, lost or reordered frame is not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from numpy.typing import NDArray

from media.codecs import L16_8K, PCMA_8K, PCMU_8K, AudioFormat, decode, encode
from media.mixer import Mixer

N = 160
FRAMES = 48  # per speaker; the switch happens twice within them
ON_AT, OFF_AT = 12, 30  # steps at which the toggle goes on, then off

# (a sends, a hears), and b the mirror image: b sends what a hears and hears what a sends.
FORMATS: dict[str, tuple[AudioFormat, AudioFormat]] = {
    "pcmu": (PCMU_8K, PCMU_8K),
    "pcma": (PCMA_8K, PCMA_8K),
    "l16": (L16_8K, L16_8K),
    "crossed": (PCMA_8K, PCMU_8K),
}


def levels(fmt: AudioFormat, sign: int) -> list[int]:
    """FRAMES distinct non-zero levels that survive ``fmt`` (and a G.711 re-encode) unchanged."""
    if fmt is L16_8K:
        return [sign * (1000 + 100 * k) for k in range(FRAMES)]
    # One G.711 code per frame: every code decodes to its own level, and re-encodes to itself.
    codes = bytes(range(0x80 + 2, 0x80 + 2 + FRAMES)) if sign > 0 else bytes(range(2, 2 + FRAMES))
    return [int(x) for x in decode(fmt, codes)]


def silence(fmt: AudioFormat) -> int:
    """The level a frame of zeros decodes to (A-law has no zero: it is 8)."""
    return int(decode(fmt, encode(fmt, np.zeros(1, dtype=np.int16)))[0])


@dataclass
class Pair:
    """Legs a and b in one room; what each sent and heard, by frame number."""

    mixer: Mixer
    fmt: dict[str, tuple[AudioFormat, AudioFormat]]
    sent: dict[str, list[bytes]]
    number: dict[str, dict[int, int]]  # listener -> level heard -> frame number of its peer
    heard: dict[str, list[int]] = field(default_factory=lambda: {"a": [], "b": []})
    at: dict[str, int] = field(default_factory=lambda: {"a": 0, "b": 0})

    def receive(self, frames: list[tuple[str, bytes]]) -> None:
        for listener, payload in frames:
            if listener not in self.heard:
                continue  # the third leg
            samples = decode(self.fmt[listener][1], payload)
            assert (samples == samples[0]).all(), "a frame was cut or blended at the switch"
            if samples[0] != silence(self.fmt[listener][1]):
                self.heard[listener].append(self.number[listener][int(samples[0])])

    def speak(self, leg: str, count: int = 1) -> None:
        for _ in range(count):
            if self.at[leg] < FRAMES:
                self.receive(self.mixer.put_frame(leg, self.sent[leg][self.at[leg]]))
                self.at[leg] += 1

    def tick(self) -> None:
        self.receive(self.mixer.tick().frames)


def make_pair(formats: str, *, cushion: bool, detect: bool) -> Pair:
    a_in, a_out = FORMATS[formats]
    fmt = {"a": (a_in, a_out), "b": (a_out, a_in)}
    mixer = Mixer(cushion_at_start=cushion)
    sent: dict[str, list[bytes]] = {}
    number: dict[str, dict[int, int]] = {}
    for leg, peer, sign in (("a", "b", 1), ("b", "a", -1)):
        mixer.add_leg(leg, *fmt[leg])
        mixer.join(leg, "room")
        mixer.set_detect(leg, detect)
        spoken = levels(fmt[leg][0], sign)
        sent[leg] = [encode(fmt[leg][0], np.full(N, level, dtype=np.int16)) for level in spoken]
        number[peer] = {level: k for k, level in enumerate(spoken)}
    assert mixer.is_passthrough("room")
    return Pair(mixer, fmt, sent, number)


def _third_leg(mixer: Mixer, on: bool) -> None:
    if on:
        mixer.add_leg("c", PCMU_8K)
        mixer.join("c", "room")
    else:
        mixer.remove_leg("c")


def _silent(n: int) -> NDArray[np.int16]:
    return np.zeros(n, dtype=np.int16)


# Each toggle switches the room from forwarding to mixing (on) and back (off), or, for
# detection, from forwarding to forwarding-and-queueing. mute_for mutes b toward a: only a's
# frames to b are counted for it.
TOGGLES: dict[str, Callable[[Mixer, bool], None]] = {
    "tap a": lambda m, on: m.set_tap("a", on),
    "tap b": lambda m, on: m.set_tap("b", on),
    "overlay a": lambda m, on: m.set_overlay("a", _silent if on else None),
    "overlay b": lambda m, on: m.set_overlay("b", _silent if on else None),
    "mute_for": lambda m, on: m.mute_for("b", frozenset({"a"}) if on else frozenset()),
    "detect a": lambda m, on: m.set_detect("a", on),
    "third leg": _third_leg,
}

# How frames arrive around the ticks: per step, how many frames each leg sends before the
# toggle (if any), then after it, before the tick. "bursty" leaves two frames queued at times,
# which is what a passthrough leg with detection on carries into a switch.
ARRIVALS: dict[str, Callable[[int], tuple[int, int]]] = {
    "before toggle": lambda step: (1, 0),
    "after toggle": lambda step: (0, 1),
    "bursty": lambda step: (0, 2) if step % 3 == 0 else (0, 1) if step % 3 == 1 else (0, 0),
    "bursty before": lambda step: (2, 0) if step % 2 == 0 else (0, 0),
}


def run(pair: Pair, toggle: Callable[[Mixer, bool], None], arrival: str) -> None:
    for step in range(FRAMES + 10):
        before, after = ARRIVALS[arrival](step)
        for leg in ("a", "b"):
            pair.speak(leg, before)
        if step in (ON_AT, OFF_AT):
            toggle(pair.mixer, step == ON_AT)
        for leg in ("a", "b"):
            pair.speak(leg, after)
        pair.tick()


@pytest.mark.parametrize("arrival", list(ARRIVALS))
@pytest.mark.parametrize("name", list(TOGGLES))
@pytest.mark.parametrize("formats", list(FORMATS))
@pytest.mark.parametrize("detect", [False, True], ids=["forwarded", "sniffed"])
@pytest.mark.parametrize("cushion", [False, True], ids=["no-cushion", "cushion"])
def test_every_frame_is_heard_exactly_once_across_a_switch(
    cushion: bool, detect: bool, formats: str, name: str, arrival: str
) -> None:
    pair = make_pair(formats, cushion=cushion, detect=detect)
    run(pair, TOGGLES[name], arrival)
    assert pair.mixer.is_passthrough("room")  # back where it started
    assert pair.mixer.counters.frames_shed == 0 and pair.mixer.counters.bytes_dropped == 0
    assert pair.heard["b"] == list(range(FRAMES)), "a -> b"
    if name != "mute_for":
        assert pair.heard["a"] == list(range(FRAMES)), "b -> a"


def test_frames_queued_for_the_mix_are_forwarded_before_later_frames_when_it_ends() -> None:
    # A frame queued while the room mixes, then the switch back to forwarding, then a frame that
    # arrives before the next tick: the peer gets the queued frame first, both exactly once.
    pair = make_pair("l16", cushion=True, detect=False)
    pair.mixer.set_tap("a", True)
    pair.speak("a")
    pair.tick()  # the cushion: nothing mixed yet, the frame stays queued
    assert pair.heard["b"] == []
    pair.mixer.set_tap("a", False)
    pair.speak("a")
    assert pair.heard["b"] == [0, 1]
    pair.tick()
    pair.speak("a")
    assert pair.heard["b"] == [0, 1, 2]


def test_a_queued_frame_is_forwarded_by_the_tick_when_no_later_frame_comes() -> None:
    pair = make_pair("pcmu", cushion=True, detect=False)
    pair.mixer.set_overlay("b", _silent)
    pair.speak("a")
    pair.tick()
    pair.mixer.set_overlay("b", None)
    pair.tick()
    assert pair.heard["b"] == [0]
    pair.tick()
    assert pair.heard["b"] == [0]
