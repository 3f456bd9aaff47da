"""A conference's recording in the media plane (engine/media_plane/room_recordings.py): its
listener in the room's mix hears what a silent member hears, sample for sample.

Legs speak L16 (exact: no codec rounding), each its own tone; the recording is read back from
its WAV file and compared per 20 ms frame with the sum it must hold: every participant heard by
everyone, nobody muted or whispering, a leg from the tick it joins, what the machine plays to
the recording's listener; with channels dual the creator alone on the first channel and the
rest on the second; nothing while paused. A participant's own recording is not disturbed.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from engine.machine.effects import RoomMix
from engine.machine.model import OverlaySource, RecordingOptions
from engine.media_plane.plane import MediaPlane, close_recording
from engine.media_plane.room_recordings import creator_ear
from media.codecs import L16_8K, encode
from media.mixer import Mixer

N = 160
ROOM = "conf:r"
OWNER = "c0nf-1d"
TONES = {"a": 450.0, "b": 750.0, "c": 1050.0, "d": 1350.0, "e": 1650.0}


class Silent:
    def send_frame(self, payload: bytes) -> None:
        return None


def said(leg: str, tick: int) -> NDArray[np.int16]:
    """What ``leg`` says at ``tick``: its tone, phase-continuous, at about -20 dBFS."""
    t = (tick * N + np.arange(N)) / 8000
    return np.rint(3000 * np.sin(2 * np.pi * TONES[leg] * t)).astype(np.int16)


class Scene:
    def __init__(self, tmp_path: Path) -> None:
        self.plane = MediaPlane(Mixer(), tmp_path, detect_dtmf=False)
        self.tick_no = 0
        self.speaking: list[str] = []

    def leg(self, leg_id: str, room: str | None = ROOM) -> None:
        self.plane.attach(leg_id, L16_8K, Silent())
        if room is not None:
            self.plane.join(leg_id, room)
        self.speaking.append(leg_id)

    def run(self, ticks: int) -> None:
        for _ in range(ticks):
            for leg in self.speaking:
                self.plane.frame_in(leg, encode(L16_8K, said(leg, self.tick_no)))
            assert self.plane.tick() == []
            self.tick_no += 1

    def record(
        self, owner: str = OWNER, *, channels: str = "single", creator: str | None = None
    ) -> None:
        options = RecordingOptions(format="wav", channels=channels, custom_file_name=owner)
        room = RoomMix(ROOM, creator)
        self.plane.start_recording(owner, f"{owner}/recording/1", options, 0.0, org_id=1, room=room)

    def finish(self, owner: str = OWNER) -> NDArray[np.int16]:
        """The recording's frames: (frames, channels, N)."""
        active = self.plane.take_recording(owner)
        assert active is not None
        result = close_recording(active)
        with wave.open(str(result.path), "rb") as reader:
            channels = reader.getnchannels()
            raw = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
        return raw.reshape(-1, N, channels).transpose(0, 2, 1)


def sums(legs: list[str], ticks: range) -> NDArray[np.int16]:
    out = np.zeros((len(ticks), N), dtype=np.int32)
    for row, tick in enumerate(ticks):
        for leg in legs:
            out[row] += said(leg, tick)
    return out.astype(np.int16)


def test_it_hears_everyone_heard_by_everyone_and_nobody_muted_or_whispering(
    tmp_path: Path,
) -> None:
    scene = Scene(tmp_path)
    for leg in ("a", "b", "c", "d"):
        scene.leg(leg)
    scene.plane.set_audience("b", frozenset(), deaf=False)  # muted (or held, monitoring)
    scene.plane.set_audience("d", frozenset({"a"}), deaf=False)  # whispers to a
    scene.record()
    scene.run(10)
    scene.plane.set_audience("b", None, deaf=False)  # unmuted: heard again from the next tick
    scene.leg("e")  # joins
    scene.run(10)
    ears = scene.plane.listeners
    assert ears.is_ear(OWNER) and not ears.is_ear("a"), "no participant (live metrics)"
    frames = scene.finish()[:, 0]
    assert np.array_equal(frames[:10], sums(["a", "c"], range(10)))
    assert np.array_equal(frames[10:], sums(["a", "b", "c", "e"], range(10, 20)))
    assert OWNER not in scene.plane.mixer.members(ROOM), "its listener left with the recording"
    assert not scene.plane.is_attached(OWNER)


def test_what_is_played_to_its_listener_is_in_it_and_a_pause_leaves_time_out(
    tmp_path: Path,
) -> None:
    scene = Scene(tmp_path)
    scene.leg("a")
    scene.record()
    scene.plane.set_overlay(OWNER, "beep/x", OverlaySource("beep", "recording-start"), 1)
    scene.run(15)
    scene.plane.recordings.set_paused(OWNER, True)
    scene.run(5)
    scene.plane.recordings.set_paused(OWNER, False)
    scene.run(5)
    frames = scene.finish()[:, 0]
    assert len(frames) == 20, "the 5 paused ticks are not in the file"
    beeped = frames[:15].astype(np.int32) - sums(["a"], range(15))
    # 250 ms of 1 kHz: 12.5 frames (engine/media_plane/audio_sources.py), then a alone.
    assert list(np.flatnonzero(np.abs(beeped).max(axis=1) > 1000)) == list(range(13))
    assert not beeped[13:].any()
    assert np.array_equal(frames[15:], sums(["a"], range(20, 25)))


def test_dual_puts_the_creator_on_the_first_channel_and_the_rest_on_the_second(
    tmp_path: Path,
) -> None:
    scene = Scene(tmp_path)
    scene.leg("b")
    scene.record(channels="dual", creator="a")
    scene.leg("a")  # the creator joins after the recording started
    scene.leg("c")
    scene.run(10)
    scene.plane.leave("a")  # and leaves, and comes back: its gains are set again
    scene.run(5)
    scene.plane.join("a", ROOM)
    scene.run(5)
    frames = scene.finish()
    assert frames.shape == (20, 2, N)
    creator, rest = frames[:, 0], frames[:, 1]
    assert np.array_equal(creator[:10], sums(["a"], range(10)))
    assert not creator[10:15].any()
    assert np.array_equal(creator[15:], sums(["a"], range(15, 20)))
    assert np.array_equal(rest, sums(["b", "c"], range(20)))
    assert scene.plane.mixer.members(ROOM) == ("b", "c", "a")
    assert creator_ear(OWNER) not in scene.plane.mixer.members(ROOM)


def test_a_participants_own_recording_goes_on_beside_it(tmp_path: Path) -> None:
    scene = Scene(tmp_path)
    for leg in ("a", "b"):
        scene.leg(leg)
    options = RecordingOptions(format="wav", channels="dual", custom_file_name="a-own")
    scene.plane.start_recording("a", "a/recording/1", options, 0.0, org_id=1)
    scene.record()
    scene.run(10)
    room = scene.finish()[:, 0]
    own = scene.finish("a")
    assert np.array_equal(room, sums(["a", "b"], range(10)))
    assert np.array_equal(own[:, 0], sums(["a"], range(10)))  # what a said
    assert np.array_equal(own[:, 1], sums(["b"], range(10)))  # what a heard


@pytest.mark.parametrize("channels", ["single", "dual"])
def test_it_takes_no_frame_from_the_mixers_counts(tmp_path: Path, channels: str) -> None:
    scene = Scene(tmp_path)
    scene.leg("a")
    scene.record(channels=channels, creator="a" if channels == "dual" else None)
    counters = scene.plane.mixer.counters
    scene.run(10)
    listeners = 2 if channels == "dual" else 1
    assert counters.frames_missing <= listeners, "fed silence: at most the first tick's cushion"
    scene.finish()
    assert scene.plane.mixer.members(ROOM) == ("a",)
