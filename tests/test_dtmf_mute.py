"""The DTMF-mute policy (``engine.media_plane.dtmf_mute``): table-like unit tests with a fake
detector, then, through the media plane, legs joining and leaving rooms in the middle of a digit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.media_plane.dtmf_mute import DTMF_HANGOVER_TICKS, DtmfMute, MuteChanges
from media.mixer_dtmf import RELAXED_TICKS
from tests.test_inband_dtmf import (
    LEAKED_FRAMES,
    ONE_HASH,
    SILENT_DBFS,
    SPANS,
    Scene,
    frames,
    sine,
    tone_dbfs,
)


class Detector:
    """What the mixer's detector holds, set by hand."""

    def __init__(self) -> None:
        self.holding: dict[str, str] = {}

    def held(self, leg_id: str) -> str | None:
        return self.holding.get(leg_id)


def policy(*muted: str) -> DtmfMute:
    mute = DtmfMute()
    for listener in muted:
        mute.set_muted(listener, True)
    return mute


def test_a_digit_silences_its_speaker_for_every_muted_listener_until_the_hangover_ends() -> None:
    mute, detector = policy("m1", "m2", "a"), Detector()
    detector.holding["a"] = "5"
    assert mute.tick(["a"], detector.held) == {"a": frozenset({"m1", "m2"})}, "not itself"
    for _ in range(3):  # held: nothing changes, however long
        assert mute.tick([], detector.held) == {}
    del detector.holding["a"]
    for _ in range(DTMF_HANGOVER_TICKS):  # released: the tail is still kept from them
        assert mute.tick([], detector.held) == {}
        assert mute.silenced() == {"a"}
    assert mute.tick([], detector.held) == {"a": frozenset()}
    assert not mute.active and mute.tick([], detector.held) == {}


def test_a_digit_pressed_during_the_hangover_starts_it_again() -> None:
    mute, detector = policy("m"), Detector()
    detector.holding["a"] = "1"
    mute.tick(["a"], detector.held)
    del detector.holding["a"]
    assert mute.tick([], detector.held) == {}  # the hangover runs
    detector.holding["a"] = "2"
    assert mute.tick(["a"], detector.held) == {}, "silenced already: no new entry"
    del detector.holding["a"]
    changes: list[MuteChanges] = [mute.tick([], detector.held) for _ in range(DTMF_HANGOVER_TICKS)]
    assert changes == [{}] * DTMF_HANGOVER_TICKS, "counted again from the second digit"
    assert mute.tick([], detector.held) == {"a": frozenset()}


def test_two_speakers_are_silenced_and_released_each_on_its_own() -> None:
    mute, detector = policy("m"), Detector()
    detector.holding.update(a="1", b="2")
    assert mute.tick(["a", "b"], detector.held) == {"a": {"m"}, "b": {"m"}}
    del detector.holding["a"]
    for _ in range(DTMF_HANGOVER_TICKS):
        assert mute.tick([], detector.held) == {}
    assert mute.tick([], detector.held) == {"a": frozenset()}
    assert mute.silenced() == {"b"} and mute.active


def test_muting_or_unmuting_a_listener_mid_digit_applies_at_once() -> None:
    mute, detector = policy("m"), Detector()
    detector.holding.update(a="1", b="2")
    mute.tick(["a", "b"], detector.held)
    assert mute.set_muted("n", True) == {"a": {"m", "n"}, "b": {"m", "n"}}
    assert mute.set_muted("n", True) == {}, "no change, nothing to apply"
    assert mute.set_muted("m", False) == {"a": {"n"}, "b": {"n"}}
    assert mute.is_muted("n") and not mute.is_muted("m")


def test_nobody_muted_silences_nobody_but_still_tracks_the_digit() -> None:
    mute, detector = DtmfMute(), Detector()
    detector.holding["a"] = "1"
    assert mute.tick(["a"], detector.held) == {"a": frozenset()}
    assert mute.set_muted("m", True) == {"a": {"m"}}, "a listener muted mid-digit is spared it"


def test_a_detached_speaker_is_forgotten() -> None:
    mute, detector = policy("m"), Detector()
    detector.holding["a"] = "1"
    mute.tick(["a"], detector.held)
    mute.forget("a")  # the mixer forgot the leg and its entries with it
    assert not mute.active and mute.tick([], detector.held) == {}
    assert mute.set_muted("n", True) == {}


def test_a_negative_hangover_is_refused() -> None:
    with pytest.raises(ValueError, match="hangover_ticks"):
        DtmfMute(hangover_ticks=-1)


# ---- through the media plane: rooms change mid-digit -------------------------------------------
def digit_heard(scene: Scene, leg_id: str, ticks: range) -> list[int]:
    """The ticks of ``ticks`` at which the leg heard the "1" (both tones audible)."""
    output = scene.outputs[leg_id]
    return [t for t in ticks if tone_dbfs(output.at(t), "1") > SILENT_DBFS]


def run_with_move(scene: Scene, said: dict[str, list[bytes]], at: int, leg: str, room: str) -> None:
    """Tick through ``said``; ``leg`` joins ``room`` just before tick ``at``."""
    for tick in range(min(len(f) for f in said.values())):
        if tick == at:
            scene.plane.join(leg, room)
        scene.clock[0] = tick
        for leg_id, sequence in said.items():
            scene.plane.frame_in(leg_id, sequence[tick])
        scene.events += [(tick, event) for event in scene.plane.tick()]


@pytest.mark.parametrize("who", ["listener joins the speaker", "speaker joins the listener"])
def test_a_leg_that_meets_a_muted_listener_mid_digit_is_not_heard_from_the_first_tick(
    tmp_path: Path, who: str
) -> None:
    span = SPANS["1"]
    scene = Scene(tmp_path)
    scene.leg("a")
    scene.leg("hears")  # keeps room "call" mixed throughout
    scene.leg("muted", room="elsewhere")
    scene.leg("company", room="elsewhere")
    scene.plane.set_dtmf_mute("muted", True)
    said = {"a": ONE_HASH, "hears": frames(sine(400, 4000)), "company": frames(sine(300, 4000))}
    moved, room = ("muted", "call") if who.startswith("listener") else ("a", "elsewhere")
    # The digit has been detected by then (relaxed: up to RELAXED_TICKS - 1 ticks late), and
    # lasts a while longer.
    join_at = span[0] + LEAKED_FRAMES + RELAXED_TICKS - 1
    run_with_move(scene, said, join_at, moved, room)
    assert scene.detected_at("1") < join_at
    assert digit_heard(scene, "muted", range(join_at, span[-1] + 1)) == []
    assert digit_heard(scene, "hears" if moved == "muted" else "company", range(join_at, span[-1]))


def test_a_muted_listener_that_leaves_mid_digit_hears_its_new_room_as_usual(
    tmp_path: Path,
) -> None:
    span = SPANS["1"]
    scene = Scene(tmp_path)
    scene.leg("a")
    scene.leg("muted")
    scene.leg("other", room="elsewhere")
    scene.plane.set_dtmf_mute("muted", True)
    said = {"a": ONE_HASH, "other": frames(sine(400, 4000))}
    run_with_move(scene, said, span[0] + 5, "muted", "elsewhere")
    assert scene.plane.mixer.gain("elsewhere", "muted", "other") == 1.0
    assert digit_heard(scene, "muted", range(span[0] + 5, span[-1] + 1)) == []
