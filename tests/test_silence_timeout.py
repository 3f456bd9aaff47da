"""The silence timeout's verdict, frame by frame (media/silence_timeout.py)."""

from __future__ import annotations

import numpy as np
import pytest

from media.silence_timeout import SilenceTimeout

N = 160  # 20 ms at 8 kHz
SILENCE = np.zeros(N, dtype=np.int16)
SPEECH = (8000 * np.sin(2 * np.pi * 440 * np.arange(N) / 8000)).astype(np.int16)


def run(timer: SilenceTimeout, frames: list[np.ndarray]) -> list[int]:
    """The indexes of the frames on which the timeout ran out."""
    return [i for i, frame in enumerate(frames) if timer.feed(frame)]


def test_silence_before_any_speech_never_runs_out() -> None:
    assert run(SilenceTimeout(1, 8000), [SILENCE] * 500) == []


def test_it_runs_out_on_the_frame_that_completes_the_timeout_after_speech() -> None:
    frames = [SILENCE] * 10 + [SPEECH] * 5 + [SILENCE] * 100
    assert run(SilenceTimeout(1, 8000), frames) == [15 + 49]  # 50 frames of 20 ms: 1 s


def test_speech_again_starts_the_count_over() -> None:
    frames = [SPEECH] + [SILENCE] * 40 + [SPEECH] + [SILENCE] * 60
    assert run(SilenceTimeout(1, 8000), frames) == [41 + 50]


def test_any_recorded_direction_speaking_is_speech() -> None:
    timer = SilenceTimeout(0.04, 8000)
    assert not timer.feed(SILENCE, SPEECH)
    assert timer.heard_speech
    assert not timer.feed(SILENCE, SILENCE)
    assert timer.feed(SILENCE, SILENCE)


def test_the_ignored_start_is_not_speech() -> None:
    frames = [SPEECH] * 13 + [SILENCE] * 100  # a 250 ms beep, then nothing
    assert run(SilenceTimeout(1, 8000, ignore_s=0.26), frames) == []


def test_quiet_line_noise_is_silence() -> None:
    noise = np.random.default_rng(1).normal(0, 3, N).astype(np.int16)  # about -80 dBFS
    assert run(SilenceTimeout(0.1, 8000), [SPEECH] + [noise] * 10) == [5]


def test_a_timeout_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        SilenceTimeout(0, 8000)
