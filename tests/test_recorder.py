"""Recorder: channel layouts, max length, trim-silence, crash safety, MP3.

Files are read back with the stdlib ``wave`` module, never with the recorder's own code. Waiting
for the writer thread is done on its ``flush()`` or on an Event set from ``on_flush``.
"""

from __future__ import annotations

import pathlib
import signal
import subprocess
import sys
import threading
import wave

import numpy as np
import pytest
from numpy.typing import NDArray

from media.recorder import Recorder, RecordingError, UnsupportedRecordingFormat

RATE = 8000
FRAME = 160


def audio(seconds: float, seed: int, peak: int = 20000) -> NDArray[np.int16]:
    """Loud random audio: every frame is far above the silence threshold."""
    rng = np.random.default_rng(seed)
    return rng.integers(-peak, peak, round(seconds * RATE), dtype=np.int16)


def write_all(recorder: Recorder, spoken: NDArray[np.int16], heard: NDArray[np.int16]) -> None:
    for start in range(0, len(spoken), FRAME):
        recorder.write(spoken[start : start + FRAME], heard[start : start + FRAME])


def read_wav(path: pathlib.Path) -> tuple[int, int, NDArray[np.int16]]:
    """(channels, rate, samples as (frames, channels)) read with the stdlib."""
    with wave.open(str(path), "rb") as wav:
        assert wav.getsampwidth() == 2
        frames = wav.readframes(wav.getnframes())
        samples = np.frombuffer(frames, dtype="<i2").reshape(-1, wav.getnchannels())
        return wav.getnchannels(), wav.getframerate(), samples


def test_dual_puts_spoken_on_the_left_and_heard_on_the_right(tmp_path: pathlib.Path) -> None:
    spoken, heard = audio(1.0, 1), audio(1.0, 2)
    recorder = Recorder(tmp_path / "dual.wav", channels="dual")
    write_all(recorder, spoken, heard)
    result = recorder.close()

    channels, rate, samples = read_wav(tmp_path / "dual.wav")
    assert (channels, rate, len(samples)) == (2, RATE, RATE)
    assert np.array_equal(samples[:, 0], spoken)
    assert np.array_equal(samples[:, 1], heard)
    assert result.path == tmp_path / "dual.wav"
    assert result.channels == 2
    assert result.format == "wav"
    assert result.duration_s == pytest.approx(1.0)
    assert result.size_bytes == (tmp_path / "dual.wav").stat().st_size == 44 + RATE * 4
    assert not result.max_length_reached


def test_single_both_is_the_clipped_sum(tmp_path: pathlib.Path) -> None:
    spoken, heard = audio(0.5, 3, peak=30000), audio(0.5, 4, peak=30000)
    recorder = Recorder(tmp_path / "mono.wav")
    write_all(recorder, spoken, heard)
    recorder.close()

    channels, _, samples = read_wav(tmp_path / "mono.wav")
    expected = np.clip(spoken.astype(np.int32) + heard, -32768, 32767)
    assert channels == 1
    assert np.array_equal(samples[:, 0], expected)
    assert np.abs(spoken.astype(np.int32) + heard).max() > 32767  # the clip was exercised


@pytest.mark.parametrize(("track", "pick"), [("inbound", 0), ("outbound", 1)])
@pytest.mark.parametrize("channels", ["single", "dual"])
def test_one_track_is_mono_whatever_the_channels(
    tmp_path: pathlib.Path, track: str, pick: int, channels: str
) -> None:
    # The bridge command: a single track is recorded mono and record_channels is ignored.
    spoken, heard = audio(0.5, 5), audio(0.5, 6)
    path = tmp_path / f"{track}.wav"
    recorder = Recorder(path, channels=channels, track=track)  # type: ignore[arg-type]
    write_all(recorder, spoken, heard)
    assert recorder.close().channels == 1

    channels_read, _, samples = read_wav(path)
    assert channels_read == 1
    assert np.array_equal(samples[:, 0], (spoken, heard)[pick])


def test_max_length_stops_at_the_exact_frame_count(tmp_path: pathlib.Path) -> None:
    # 0.51 s = 4080 samples: 25 whole frames and half of the 26th.
    spoken, heard = audio(1.0, 7), audio(1.0, 8)
    recorder = Recorder(tmp_path / "max.wav", channels="dual", max_length_s=0.51)
    accepted = [
        recorder.write(spoken[s : s + FRAME], heard[s : s + FRAME]) for s in range(0, RATE, FRAME)
    ]
    assert accepted == [True] * 25 + [False] * 25
    assert recorder.max_length_reached
    result = recorder.close()

    _, _, samples = read_wav(tmp_path / "max.wav")
    assert len(samples) == 4080
    assert np.array_equal(samples[:, 0], spoken[:4080])
    assert result.max_length_reached
    assert result.duration_s == pytest.approx(0.51)


def test_zero_max_length_means_no_limit(tmp_path: pathlib.Path) -> None:
    recorder = Recorder(tmp_path / "long.wav", max_length_s=0)
    spoken = audio(3.0, 9)
    assert all(
        recorder.write(spoken[s : s + FRAME], spoken[s : s + FRAME])
        for s in range(0, len(spoken), FRAME)
    )
    assert recorder.close().duration_s == pytest.approx(3.0)


def test_trim_silence_removes_leading_and_trailing_but_not_inner_silence(
    tmp_path: pathlib.Path,
) -> None:
    rng = np.random.default_rng(10)
    # "Silence" includes comfort noise (-70 dBFS) and a faint hiss, not only digital zeros.
    lead = np.rint(rng.standard_normal(4000) * 7).astype(np.int16)
    inner = np.zeros(1600, dtype=np.int16)
    tail = np.rint(rng.standard_normal(4800) * 30).astype(np.int16)
    speech_a, speech_b = audio(0.3, 11), audio(0.3, 12)
    spoken = np.concatenate([lead, speech_a, inner, speech_b, tail])
    recorder = Recorder(tmp_path / "trim.wav", track="inbound", trim_silence=True)
    write_all(recorder, spoken, np.zeros_like(spoken))
    result = recorder.close()

    _, _, samples = read_wav(tmp_path / "trim.wav")
    assert np.array_equal(samples[:, 0], np.concatenate([speech_a, inner, speech_b]))
    assert result.duration_s == pytest.approx(0.8)
    assert result.size_bytes == 44 + 2 * len(samples)


def test_trim_silence_of_a_silent_recording_leaves_an_empty_valid_file(
    tmp_path: pathlib.Path,
) -> None:
    recorder = Recorder(tmp_path / "empty.wav", trim_silence=True)
    write_all(recorder, np.zeros(RATE, np.int16), np.zeros(RATE, np.int16))
    assert recorder.close().duration_s == 0.0
    assert read_wav(tmp_path / "empty.wav")[2].shape == (0, 1)


def test_file_is_readable_after_a_flush_while_still_recording(tmp_path: pathlib.Path) -> None:
    # Crash safety: what a kill -9 would leave behind is the file as it is after a flush.
    path = tmp_path / "live.wav"
    spoken, heard = audio(2.0, 13), audio(2.0, 14)
    recorder = Recorder(path, channels="dual")
    write_all(recorder, spoken, heard)
    recorder.flush()

    channels, rate, samples = read_wav(path)
    assert (channels, rate, len(samples)) == (2, RATE, 2 * RATE)
    assert np.array_equal(samples[:, 0], spoken)
    assert np.array_equal(samples[:, 1], heard)

    write_all(recorder, heard, spoken)
    assert recorder.close().duration_s == pytest.approx(4.0)
    assert len(read_wav(path)[2]) == 4 * RATE


CHILD = """
import pathlib, sys
import numpy as np
from media.recorder import Recorder
recorder = Recorder(pathlib.Path(sys.argv[1]), channels="dual")
ramp = (np.arange(16000) % 30000).astype(np.int16)
for start in range(0, 16000, 160):
    recorder.write(ramp[start : start + 160], -ramp[start : start + 160])
recorder.flush()
recorder.write(ramp[:160], ramp[:160])  # queued, maybe not flushed: the crash may lose it
print("flushed", flush=True)
sys.stdin.read()  # block until killed
"""


@pytest.mark.slow_family  # a process killed: once per CI run
def test_file_survives_kill_9_of_the_recording_process(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "killed.wav"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "flushed\n"
    finally:
        child.kill()  # SIGKILL: no close(), no atexit, no buffered writes
        child.wait()
    assert child.returncode == -signal.SIGKILL

    channels, _, samples = read_wav(path)
    ramp = (np.arange(16000) % 30000).astype(np.int16)
    assert channels == 2
    assert len(samples) in (16000, 16160)
    assert np.array_equal(samples[:16000, 0], ramp)
    assert np.array_equal(samples[:16000, 1], -ramp)


def test_writer_flushes_each_interval_of_audio_without_waiting_for_the_clock(
    tmp_path: pathlib.Path,
) -> None:
    # No flush() call, and a wall-clock deadline far away: one interval's worth of audio must go
    # to disk by itself, so a backlog never holds more than that in memory.
    path = tmp_path / "auto.wav"
    on_disk = threading.Event()

    def flushed(frames: int) -> None:
        if frames >= 30 * RATE:
            on_disk.set()

    recorder = Recorder(path, flush_interval_s=30, on_flush=flushed)
    spoken = audio(31, 15)
    write_all(recorder, spoken, np.zeros_like(spoken))
    assert on_disk.wait(timeout=10)  # the deadline path would take 30 s

    _, _, samples = read_wav(path)
    assert len(samples) == 30 * RATE
    assert np.array_equal(samples[:, 0], spoken[: len(samples)])
    recorder.close()


def test_writer_flushes_within_the_interval_when_audio_stops_coming(
    tmp_path: pathlib.Path,
) -> None:
    # Two frames are far less than a flush interval of audio; only the wall-clock deadline
    # can put them on disk.
    path = tmp_path / "idle.wav"
    on_disk = threading.Event()
    recorder = Recorder(path, flush_interval_s=0.2, on_flush=lambda frames: on_disk.set())
    spoken = audio(0.04, 16)
    write_all(recorder, spoken, np.zeros_like(spoken))
    assert on_disk.wait(timeout=5)
    assert np.array_equal(read_wav(path)[2][:, 0], spoken)
    recorder.close()


def test_a_new_recording_is_a_valid_empty_wav_before_any_audio(tmp_path: pathlib.Path) -> None:
    recorder = Recorder(tmp_path / "new.wav", channels="dual")
    while recorder.open_state() == "opening":  # the writer thread opens it, at once
        threading.Event().wait(0.001)
    assert recorder.open_state() == "open"
    assert read_wav(tmp_path / "new.wav")[:2] == (2, RATE)
    recorder.close()


@pytest.mark.parametrize(("channels", "kbps"), [("single", 32), ("dual", 64)])
def test_mp3_starts_with_a_frame_sync_and_has_a_plausible_size(
    tmp_path: pathlib.Path, channels: str, kbps: int
) -> None:
    path = tmp_path / "call.mp3"
    recorder = Recorder(path, channels=channels, fmt="mp3")  # type: ignore[arg-type]
    write_all(recorder, audio(2.0, 17), audio(2.0, 18))
    result = recorder.close()

    data = path.read_bytes()
    assert data[:3] == b"ID3" or (data[0] == 0xFF and data[1] & 0xE0 == 0xE0)
    # Constant bit rate: about kbps * 1000 / 8 bytes per second, plus encoder padding.
    expected = kbps * 1000 // 8 * 2
    assert 0.9 * expected < len(data) < 1.5 * expected
    assert result.size_bytes == len(data)
    assert result.format == "mp3"
    assert result.duration_s == pytest.approx(2.0)


def test_mp3_trim_silence_encodes_only_the_sound(tmp_path: pathlib.Path) -> None:
    silent = np.zeros(RATE, dtype=np.int16)
    spoken = np.concatenate([silent, audio(1.0, 19), silent, audio(0.5, 20), silent, silent])
    recorder = Recorder(tmp_path / "t.mp3", track="inbound", fmt="mp3", trim_silence=True)
    write_all(recorder, spoken, np.zeros_like(spoken))
    result = recorder.close()
    assert result.duration_s == pytest.approx(2.5)
    assert result.size_bytes < 32_000 // 8 * 3.5  # well under the untrimmed 5 s


def test_mp3_without_lameenc_is_a_typed_error_at_construction(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A None entry in sys.modules makes "import lameenc" fail as if it were not installed.
    monkeypatch.setitem(sys.modules, "lameenc", None)
    with pytest.raises(UnsupportedRecordingFormat, match="lameenc"):
        Recorder(tmp_path / "x.mp3", fmt="mp3")
    assert not (tmp_path / "x.mp3").exists()


def test_unknown_format_is_a_typed_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(UnsupportedRecordingFormat, match="'ogg'"):
        Recorder(tmp_path / "x.ogg", fmt="ogg")  # type: ignore[arg-type]


def test_unwritable_path_is_a_recording_error(tmp_path: pathlib.Path) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    recorder = Recorder(tmp_path / "a-file" / "x.wav")  # never waits: the writer opens it
    with pytest.raises(RecordingError, match="a-file") as raised:
        recorder.close()
    assert isinstance(raised.value.__cause__, OSError)
    assert recorder.open_state() == "failed"


def test_a_missing_directory_is_made(tmp_path: pathlib.Path) -> None:
    recorder = Recorder(tmp_path / "org-7" / "x.wav")
    assert recorder.close().path == tmp_path / "org-7" / "x.wav"
    assert (tmp_path / "org-7" / "x.wav").stat().st_size > 0


def test_frames_must_match(tmp_path: pathlib.Path) -> None:
    recorder = Recorder(tmp_path / "x.wav")
    with pytest.raises(ValueError, match="one length"):
        recorder.write(np.zeros(160, np.int16), np.zeros(80, np.int16))
    with pytest.raises(ValueError, match="int16"):
        recorder.write(np.zeros(160, np.int32), np.zeros(160, np.int32))
    recorder.close()


def test_close_is_idempotent_and_write_after_close_is_refused(tmp_path: pathlib.Path) -> None:
    recorder = Recorder(tmp_path / "x.wav")
    write_all(recorder, audio(0.1, 21), audio(0.1, 22))
    first = recorder.close()
    assert recorder.close() == first
    assert recorder.write(np.zeros(160, np.int16), np.zeros(160, np.int16)) is False
    assert len(read_wav(tmp_path / "x.wav")[2]) == 800
