"""The console's level meters (engine/media_plane/levels.py): measured from what each watched leg
sends, in dBFS against a full-scale sine, and nothing kept for a leg nobody watches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.console.hub import LEVELS_EVERY_S
from engine.media_plane.levels import KEPT_FRAMES, SILENT_DBFS, InputLevels, rms_dbfs
from engine.media_plane.plane import MediaPlane
from media.codecs import AudioFormat, Encoding, encode
from media.mixer import Mixer
from media.tones import dbfs_to_amplitude

PCMU = AudioFormat(Encoding.PCMU)
L16 = AudioFormat(Encoding.L16, 16000)


def sine(level_dbfs: float, samples: int = 160, rate: int = 8000) -> np.ndarray:
    t = np.arange(samples) / rate
    wave = dbfs_to_amplitude(level_dbfs) * np.sin(2 * np.pi * 1000 * t)
    return np.rint(wave).astype(np.int16)


class Output:
    def send_frame(self, payload: bytes) -> None:
        pass


@pytest.mark.parametrize("level", [0.0, -12.0, -30.0])
def test_a_sine_reads_its_own_level(level: float) -> None:
    assert rms_dbfs(sine(level, 800)) == pytest.approx(level, abs=0.1)


def test_digital_silence_reads_the_floor() -> None:
    assert rms_dbfs(np.zeros(160, dtype=np.int16)) == SILENT_DBFS
    assert rms_dbfs(np.zeros(0, dtype=np.int16)) == SILENT_DBFS


def test_the_plane_keeps_frames_of_watched_legs_only(tmp_path: Path) -> None:
    plane = MediaPlane(Mixer(), tmp_path, detect_dtmf=False)
    for leg in ("loud", "quiet", "unwatched"):
        plane.attach(leg, PCMU, Output())
    plane.levels.watch(["loud", "quiet", "gone"])
    for _ in range(5):
        plane.frame_in("loud", encode(PCMU, sine(-12.0)))
        plane.frame_in("quiet", encode(PCMU, np.zeros(160, dtype=np.int16)))
        plane.frame_in("unwatched", encode(PCMU, sine(-6.0)))
    assert set(plane.levels.frames) == {"loud", "quiet", "gone"}
    levels = plane.levels.take(plane.input_format)
    assert levels["loud"] == pytest.approx(-12.0, abs=0.5)  # G.711's quantisation included
    assert levels["quiet"] == SILENT_DBFS
    assert levels["gone"] is None  # no stream: no level, which is not silence
    # Taken: the next reading covers only what comes after.
    assert plane.levels.take(plane.input_format) == {"loud": None, "quiet": None, "gone": None}
    plane.levels.watch(())
    plane.frame_in("loud", encode(PCMU, sine(-12.0)))
    assert plane.levels.frames == {}


def test_a_reader_that_stops_reading_costs_a_bounded_buffer() -> None:
    levels = InputLevels()
    levels.watch(["leg"])
    for _ in range(10 * KEPT_FRAMES):
        levels.frames["leg"].append(encode(L16, sine(-20.0, 320, 16000)))
    assert len(levels.frames["leg"]) == KEPT_FRAMES
    assert levels.take(lambda leg: L16)["leg"] == pytest.approx(-20.0, abs=0.1)


def test_l16_split_mid_sample_is_measured_on_whole_samples() -> None:
    levels = InputLevels()
    levels.watch(["leg"])
    payload = encode(L16, sine(-20.0, 320, 16000))
    levels.frames["leg"].append(payload[:101])
    assert levels.take(lambda leg: L16)["leg"] is not None


def test_meters_are_updated_at_least_five_times_a_second() -> None:
    assert 1 / LEVELS_EVERY_S >= 5
