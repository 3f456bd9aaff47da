"""Recorder: a recording continued by a new process in the same file (issue 12, point 2).

``suspend`` closes a file without ending the recording; ``Recorder(resume=True)`` appends to it,
after whatever a kill left (a stale WAV header, a torn last frame), and ``pad_silence`` writes
the time nobody recorded. WAV files are read back with the stdlib ``wave`` module and MP3 files
decoded with miniaudio, never with the recorder's own code.
"""

from __future__ import annotations

import pathlib
import struct
import wave

import miniaudio
import numpy as np
import pytest
from numpy.typing import NDArray

from media.recorder import Recorder, RecordingError
from tests.call_fakes import share

RATE = 8000
FRAME = 160


def sine(frequency: float, seconds: float, amplitude: float = 8000.0) -> NDArray[np.int16]:
    t = np.arange(round(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.int16)


def write_all(recorder: Recorder, spoken: NDArray[np.int16], heard: NDArray[np.int16]) -> None:
    for start in range(0, len(spoken), FRAME):
        recorder.write(spoken[start : start + FRAME], heard[start : start + FRAME])


def silence(seconds: float) -> NDArray[np.int16]:
    return np.zeros(round(seconds * RATE), dtype=np.int16)


def read_wav(path: pathlib.Path) -> NDArray[np.int16]:
    """Samples as (frames, channels), read with the stdlib (which trusts the header)."""
    with wave.open(str(path), "rb") as wav:
        assert (wav.getsampwidth(), wav.getframerate()) == (2, RATE)
        frames = wav.readframes(wav.getnframes())
        return np.frombuffer(frames, dtype="<i2").reshape(-1, wav.getnchannels())


def decode_mp3(path: pathlib.Path, channels: int = 1) -> NDArray[np.int16]:
    decoded = miniaudio.decode(path.read_bytes(), nchannels=channels, sample_rate=RATE)
    samples = np.array(decoded.samples, dtype=np.int16)
    return samples.reshape(-1, channels)


def window(samples: NDArray[np.int16], start_s: float, end_s: float) -> NDArray[np.int16]:
    return samples[round(start_s * RATE) : round(end_s * RATE)]


def rms(samples: NDArray[np.int16]) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


# ---- WAV -----------------------------------------------------------------------------------
def test_a_resumed_wav_holds_both_parts_and_the_gap_as_silence(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "call.wav"
    first_spoken, first_heard = sine(440, 1.0), sine(700, 1.0)
    recorder = Recorder(path, channels="dual")
    write_all(recorder, first_spoken, first_heard)
    assert recorder.suspend().duration_s == pytest.approx(1.0)
    assert len(read_wav(path)) == RATE  # a complete file already: header and data agree

    resumed = Recorder(path, channels="dual", resume=True)
    resumed.pad_silence(0.5)
    then_spoken, then_heard = sine(1000, 1.0), sine(1300, 1.0)
    write_all(resumed, then_spoken, then_heard)
    result = resumed.close()

    samples = read_wav(path)
    assert result.duration_s == pytest.approx(2.5)
    assert result.size_bytes == path.stat().st_size == 44 + round(2.5 * RATE) * 4
    assert np.array_equal(samples[:, 0], np.concatenate([first_spoken, silence(0.5), then_spoken]))
    assert np.array_equal(samples[:, 1], np.concatenate([first_heard, silence(0.5), then_heard]))


def test_resuming_after_a_kill_fixes_the_stale_header_and_cuts_the_torn_frame(
    tmp_path: pathlib.Path,
) -> None:
    # What a kill -9 leaves: data written past the header's last update, and half a frame.
    path = tmp_path / "killed.wav"
    recorder = Recorder(path, channels="dual")
    spoken, heard = sine(440, 1.0), sine(700, 1.0)
    write_all(recorder, spoken, heard)
    recorder.suspend()
    with path.open("r+b") as file:
        file.seek(40)
        file.write(struct.pack("<I", RATE // 2 * 4))  # the header of an earlier flush
        file.seek(0, 2)
        file.write(b"\x01\x02\x03")  # a torn stereo frame (4 bytes whole)

    resumed = Recorder(path, channels="dual", resume=True)
    write_all(resumed, sine(1000, 0.5), sine(1300, 0.5))
    result = resumed.close()

    samples = read_wav(path)
    assert result.duration_s == pytest.approx(1.5)
    assert len(samples) == round(1.5 * RATE)
    assert path.stat().st_size == 44 + round(1.5 * RATE) * 4
    assert np.array_equal(samples[:RATE, 0], spoken)
    assert np.array_equal(samples[RATE:, 0], sine(1000, 0.5))


def test_a_suspended_recording_keeps_its_trailing_silence_for_the_next_part(
    tmp_path: pathlib.Path,
) -> None:
    # trim-silence trims only when the recording ends, never at a suspension.
    path = tmp_path / "trim.wav"
    recorder = Recorder(path, track="inbound", trim_silence=True)
    write_all(recorder, sine(440, 0.5), silence(0.5))
    write_all(recorder, silence(0.5), silence(0.5))
    assert recorder.suspend().duration_s == pytest.approx(1.0)

    resumed = Recorder(path, track="inbound", trim_silence=True, resume=True)
    write_all(resumed, sine(440, 0.5), silence(0.5))
    write_all(resumed, silence(0.5), silence(0.5))  # trailing: trimmed at the end
    assert resumed.close().duration_s == pytest.approx(1.5)
    assert len(read_wav(path)) == round(1.5 * RATE)


def test_padding_stops_at_the_max_length(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "max.wav"
    recorder = Recorder(path, max_length_s=2.0)
    write_all(recorder, sine(440, 1.5), silence(1.5))
    recorder.suspend()

    resumed = Recorder(path, max_length_s=2.0, resume=True)
    resumed.pad_silence(10.0)
    assert resumed.max_length_reached
    assert not resumed.write(sine(440, 0.02), silence(0.02))
    result = resumed.close()
    assert result.duration_s == pytest.approx(2.0) and result.max_length_reached


def test_a_file_already_at_its_max_length_takes_no_more(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "full.wav"
    recorder = Recorder(path, max_length_s=1.0)
    write_all(recorder, sine(440, 1.5), silence(1.5))
    assert recorder.suspend().max_length_reached

    resumed = Recorder(path, max_length_s=1.0, resume=True)
    assert resumed.max_length_reached
    assert not resumed.write(sine(440, 0.02), silence(0.02))
    assert resumed.close().duration_s == pytest.approx(1.0)
    assert len(read_wav(path)) == RATE


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "No such file"),
        (b"not a wav file at all, just some bytes here...", "not a 2-channel"),
    ],
)
def test_a_file_that_cannot_be_continued_is_a_recording_error(
    tmp_path: pathlib.Path, content: bytes | None, match: str
) -> None:
    path = tmp_path / "gone.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(RecordingError, match=match):
        Recorder(path, channels="dual", resume=True)
    if content is not None:
        assert path.read_bytes() == content  # refused, untouched


def test_a_wav_of_another_layout_is_not_continued(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "mono.wav"
    Recorder(path).suspend()  # mono
    with pytest.raises(RecordingError, match="not a 2-channel 8000 Hz WAV"):
        Recorder(path, channels="dual", resume=True)


# ---- MP3 -----------------------------------------------------------------------------------
def test_a_resumed_mp3_decodes_as_one_recording_with_the_gap_silent(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "call.mp3"
    recorder = Recorder(path, track="inbound", fmt="mp3")
    write_all(recorder, sine(440, 1.0), silence(1.0))
    first = recorder.suspend()
    # The encoder's tail was flushed: the whole first second decodes (and a little padding).
    assert len(decode_mp3(path)) >= RATE

    resumed = Recorder(path, track="inbound", fmt="mp3", resume=True)
    resumed.pad_silence(0.5)
    write_all(resumed, sine(1000, 1.0), silence(1.0))
    result = resumed.close()

    samples = decode_mp3(path)[:, 0]
    # The encoder delay and frame padding of each part shift the parts by up to ~0.3 s.
    assert share(window(samples, 0.3, 0.9), 440) > 0.9
    assert rms(window(samples, 1.5, 1.65)) < 100
    assert share(window(samples, 2.1, 2.6), 1000) > 0.9
    # What was recorded, plus the first part's encoder delay and padding (its whole frames
    # are what a resumed recorder can count): at most one MP3 frame group per restart.
    assert first.duration_s == pytest.approx(1.0)
    assert 2.5 <= result.duration_s <= 2.5 + 0.2
    assert len(samples) / RATE == pytest.approx(result.duration_s, abs=0.2)


def test_a_torn_mp3_frame_is_cut_off_before_appending(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "killed.mp3"
    recorder = Recorder(path, channels="dual", fmt="mp3")
    write_all(recorder, sine(440, 1.0), sine(700, 1.0))
    recorder.suspend()
    whole = path.read_bytes()
    path.write_bytes(whole[:-100])  # the kill cut the last frame's write

    resumed = Recorder(path, channels="dual", fmt="mp3", resume=True)
    write_all(resumed, sine(1000, 1.0), sine(1300, 1.0))
    resumed.close()

    data = path.read_bytes()
    frame_bytes = 72 * 64_000 // RATE  # MPEG-2.5 Layer III, 64 kbit/s stereo, no padding
    assert len(whole) % frame_bytes == 0 and len(data) % frame_bytes == 0
    assert data[: len(whole) - frame_bytes] == whole[: len(whole) - frame_bytes]
    samples = decode_mp3(path, channels=2)
    assert share(window(samples[:, 1], 0.3, 0.8), 700) > 0.9
    assert share(window(samples[:, 1], 1.6, 2.0), 1300) > 0.9


def test_an_mp3_of_another_layout_is_not_continued(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "mono.mp3"
    recorder = Recorder(path, fmt="mp3")
    write_all(recorder, sine(440, 0.5), silence(0.5))
    recorder.suspend()
    before = path.read_bytes()
    with pytest.raises(RecordingError, match="not a 2-channel 8000 Hz MP3"):
        Recorder(path, channels="dual", fmt="mp3", resume=True)
    assert path.read_bytes() == before


def test_pad_silence_is_refused_below_zero(tmp_path: pathlib.Path) -> None:
    recorder = Recorder(tmp_path / "x.wav")
    with pytest.raises(ValueError, match="seconds"):
        recorder.pad_silence(-1.0)
    recorder.close()


def test_an_mp3_closed_with_nothing_new_is_left_as_it_was(tmp_path: pathlib.Path) -> None:
    # A recording stopped by a process that then stopped before saving it: the next one only
    # reopens and closes it. (lame refuses to flush an encoder that was fed nothing.)
    path = tmp_path / "stopped.mp3"
    recorder = Recorder(path, fmt="mp3")
    write_all(recorder, sine(440, 1.0), silence(1.0))
    first = recorder.suspend()
    before = path.read_bytes()

    result = Recorder(path, fmt="mp3", resume=True).close()

    assert path.read_bytes() == before
    assert result.size_bytes == len(before)
    assert result.duration_s == pytest.approx(len(decode_mp3(path)) / RATE)
    assert result.duration_s >= first.duration_s
    assert Recorder(tmp_path / "empty.mp3", fmt="mp3").close().duration_s == 0
