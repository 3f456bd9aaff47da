"""The overlay store (``engine.media_plane.overlays``) on its own, then through the media plane:
specs kept across streams, running sources only on the live one, what the mixer pulls each tick.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from engine.machine.events import PlaybackEnded
from engine.machine.model import OverlaySource
from engine.media_plane.overlays import LegOverlays, Overlays, OverlaySpec
from engine.media_plane.plane import MediaPlane
from media.codecs import L16_8K, decode
from media.mixer import Mixer
from media.tones import Playback, Ringback

N = 160
RINGBACK = OverlaySpec(OverlaySource("ringback", "us"), None)
TONE = OverlaySpec(OverlaySource("media", "tone-440"), None)


def level(value: int, n: int = N) -> NDArray[np.int16]:
    return np.full(n, value, dtype=np.int16)


def constant(value: int) -> Playback:
    return Playback(level(value), loops=None)


# ---- the store ---------------------------------------------------------------------------------
def test_a_spec_waits_and_its_source_is_what_the_mixer_pulls() -> None:
    store = Overlays()
    store.want("a", "ringback", RINGBACK)
    assert store.playing("a") is None, "asked for, not started: nothing to mix"
    assert store.wanted("a") == [("ringback", RINGBACK)]
    source = constant(7)
    store.start("a", "ringback", source)
    assert store.playing("a") is source, "one source: the mixer pulls it directly"
    assert store.is_running("a", "ringback") and store.running_count("a") == 1


def test_several_sources_are_summed_and_clipped() -> None:
    store = Overlays()
    store.start("a", "one", constant(30000))
    store.start("a", "two", constant(5000))
    playing = store.playing("a")
    assert isinstance(playing, LegOverlays)
    assert (playing(N) == 32767).all()
    store.stop("a", "one")
    left = store.playing("a")
    assert left is not None and not isinstance(left, LegOverlays) and (left(N) == 5000).all()


def test_setting_a_tag_again_replaces_its_spec_and_stops_its_source() -> None:
    store = Overlays()
    store.want("a", "t", RINGBACK)
    store.start("a", "t", constant(1))
    store.want("a", "t", TONE)
    assert store.wanted("a") == [("t", TONE)]
    assert store.playing("a") is None, "the old source does not play on under the new spec"


def test_stop_by_tag_forgets_that_tag_only_and_reports_whether_it_played() -> None:
    store = Overlays()
    store.want("a", "ringback", RINGBACK)
    store.want("a", "tone", TONE)
    store.start("a", "tone", constant(3))
    assert store.stop("a", "ringback") is False, "asked for, never started"
    assert store.stop("a", "tone") is True
    assert store.stop("a", "tone") is False and store.stop("nobody", "tone") is False
    assert store.wanted("a") == [] and store.playing("a") is None


def test_detaching_stops_the_sources_and_keeps_the_specs_for_the_next_stream() -> None:
    store = Overlays()
    store.want("a", "ringback", RINGBACK)
    store.want("a", "tone", TONE)
    store.start("a", "ringback", constant(1))
    store.start("a", "dtmf/1/5", constant(2))  # digits: no spec
    store.detached("a")
    assert store.playing("a") is None and store.running_count("a") == 0
    assert store.wanted("a") == [("ringback", RINGBACK), ("tone", TONE)], "in asking order"
    store.detached("b")  # a leg with nothing: nothing to do


def test_wanting_finds_every_leg_waiting_for_a_source() -> None:
    store = Overlays()
    url = OverlaySource("url", "https://audio.example/x.wav")
    spec = OverlaySpec(url, 2)
    store.want("a", "a/playback/1", spec)
    store.want("b", "a/playback/1", spec)
    store.want("b", "ringback", RINGBACK)
    assert store.wanting(url) == [("a", "a/playback/1", spec), ("b", "a/playback/1", spec)]


def test_a_playback_that_ends_mid_tick_leaves_the_others_playing() -> None:
    store = Overlays()
    clip = level(100, N // 2)
    store.want("a", "p", OverlaySpec(OverlaySource("url", "x"), 2))

    def ended() -> None:
        store.stop("a", "p")

    store.start("a", "p", Playback(clip, loops=2, on_end=ended))
    store.start("a", "tone", constant(1))
    playing = store.playing("a")
    assert playing is not None
    assert (playing(N) == 101).all(), "both loops of the clip in one frame, and the tone"
    assert store.wanted("a") == [] and store.running_count("a") == 1
    assert (playing(N) == 1).all(), "the ended one is not pulled again"


# ---- through the media plane --------------------------------------------------------------------
class Frames:
    def __init__(self) -> None:
        self.sent: list[NDArray[np.int16]] = []

    def send_frame(self, payload: bytes) -> None:
        self.sent.append(decode(L16_8K, payload))


def test_an_overlay_restarts_from_its_beginning_on_each_stream(tmp_path: Path) -> None:
    plane = MediaPlane(Mixer(), tmp_path, detect_dtmf=False)
    plane.set_overlay("a", "ringback", RINGBACK.source, None)  # before any media
    fresh = Ringback("us")
    expected = [fresh(N) for _ in range(3)]
    for _ in range(2):
        out = Frames()
        plane.attach("a", L16_8K, out)
        for _ in range(3):
            plane.tick()
        assert all(np.array_equal(got, want) for got, want in zip(out.sent, expected, strict=True))
        plane.detach("a")
    assert plane.overlays.wanted("a") == [("ringback", RINGBACK)]
    plane.clear_overlay("a", "ringback")
    out = Frames()
    plane.attach("a", L16_8K, out)
    plane.tick()
    assert not out.sent[0].any(), "cleared while detached: nothing plays on the next stream"


def test_a_looped_playback_ends_once_after_its_loops_and_is_forgotten(tmp_path: Path) -> None:
    wav = tmp_path / "clip.wav"
    write_wav(wav, level(1000, N * 3 // 2))
    plane = MediaPlane(Mixer(), tmp_path, detect_dtmf=False, media_dir=tmp_path)
    out = Frames()
    plane.attach("a", L16_8K, out)
    tag = "c/playback/1"
    plane.set_overlay("a", tag, OverlaySource("file", str(wav)), 2)
    events = [event for _ in range(5) for event in plane.tick()]
    assert events == [PlaybackEnded("c", tag, "completed", None)]
    assert [int(np.max(frame)) for frame in out.sent] == [1000, 1000, 1000, 0, 0]
    assert plane.overlays.wanted("a") == [] and plane.overlays.playing("a") is None


def write_wav(path: Path, samples: NDArray[np.int16]) -> None:
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(samples.astype("<i2").tobytes())
