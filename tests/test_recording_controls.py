"""record_start's timeout_secs and play_beep do what Telnyx documents (issue 14, point 7), through
the app with real audio paced by the media tick.

- ``timeout_secs``: "The number of seconds that Telnyx will wait for the recording to be stopped
  if silence is detected. The timer only starts when the speech is detected." Silence before any
  speech never ends a recording; after speech, that much silence ends it as record_stop would.
- ``play_beep``: "If enabled, a beep sound will be played at the start of a recording." The leg
  hears 1 kHz for 250 ms (callbridge's choice: Telnyx names no tone) and it is in the recording.
The frame-by-frame rule is tested in ``tests/test_silence_timeout.py``.
"""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from engine.config import Settings
from engine.machine.model import TimerKind
from tests.call_fakes import Harness, share

RATE = 8000
FRAME = RATE // 50


@pytest.fixture
async def h(aiohttp_server: Any, aiohttp_client: Any, settings: Settings) -> Harness:
    return await Harness.start(aiohttp_client, aiohttp_server, settings)


def read_mono(path: Path) -> NDArray[np.int16]:
    with wave.open(str(path), "rb") as reader:
        assert (reader.getnchannels(), reader.getframerate()) == (1, RATE)
        return np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")


def loud_frames(samples: NDArray[np.int16]) -> list[int]:
    """The indexes of the 20 ms frames that are not silence (RMS of 100 or more)."""
    frames = samples[: len(samples) // FRAME * FRAME].reshape(-1, FRAME).astype(np.float64)
    return [int(i) for i in np.flatnonzero(np.sqrt((frames**2).mean(axis=1)) >= 100)]


async def saved_file(h: Harness, leg: str) -> Path:
    saved = await h.receiver.next("call.recording.saved", leg)
    return await h.recording_file(saved.payload["recording_urls"]["wav"])


async def say_briefly(h: Harness, leg: str, frames: int) -> None:
    """The leg's far end says 440 Hz for about ``frames`` frames, then nothing."""
    stop = h.speak(leg, 440)
    await h.outputs[leg].collect(frames)
    stop()


def assert_ends_one_second_after_speech(samples: NDArray[np.int16], silent_before_s: float) -> None:
    loud = loud_frames(samples)
    assert loud, "the speech is in the recording"
    assert loud[0] * FRAME / RATE >= silent_before_s, "silence before speech did not end it"
    tail_s = (len(samples) - (loud[-1] + 1) * FRAME) / RATE
    # One second of silence ends it; the stop reaches the tap a few ticks later at most.
    assert 0.98 <= tail_s <= 1.5, tail_s


async def test_timeout_secs_ends_the_recording_after_speech_then_that_much_silence(
    h: Harness,
) -> None:
    leg = await h.up()
    body = {"format": "wav", "channels": "single", "recording_track": "inbound"}
    await h.ok(leg, "record_start", timeout_secs=1, **body)
    await h.outputs[leg].collect(100)  # 2 s of silence: no speech yet, so nothing ends
    assert "call.recording.saved" not in await h.barrier(leg)
    assert h.runtime.machine.leg(leg).recording_id is not None
    await say_briefly(h, leg, 10)
    samples = read_mono(await saved_file(h, leg))  # nobody sent record_stop
    assert_ends_one_second_after_speech(samples, silent_before_s=1.9)
    assert h.runtime.machine.leg(leg).recording_id is None
    assert "call.recording.error" not in h.receiver.types(leg)


async def test_without_timeout_secs_silence_after_speech_does_not_end_it(h: Harness) -> None:
    leg = await h.up()
    await h.ok(leg, "record_start", format="wav", channels="single")
    await say_briefly(h, leg, 10)
    await h.outputs[leg].collect(75)
    assert "call.recording.saved" not in await h.barrier(leg)
    await h.ok(leg, "record_stop")
    await saved_file(h, leg)


async def test_bridge_record_timeout_secs_ends_the_record_from_answer_recording(
    h: Harness,
) -> None:
    a, b = await h.up(), await h.up()
    await h.bridged(
        a, b, record="record-from-answer", record_format="wav", record_channels="single",
        record_track="inbound", record_timeout_secs=1,
    )  # fmt: skip
    h.speak(b, 0)  # b's provider streams its silence, as providers do all call long
    await h.outputs[a].collect(60)
    await say_briefly(h, a, 10)
    samples = read_mono(await saved_file(h, a))
    assert_ends_one_second_after_speech(samples, silent_before_s=1.0)


async def test_bridge_refuses_play_beep_which_telnyx_bridge_does_not_have(h: Harness) -> None:
    a, b = await h.up(), await h.up()
    reply = await h.act(a, "bridge", call_control_id=b, record="record-from-answer", play_beep=True)
    assert reply.status == 422
    (error,) = reply.body["errors"]
    assert error["source"] == {"pointer": "/play_beep"}


def beep_frames(h: Harness, leg: str, frames: list[bytes]) -> list[int]:
    samples = h.outputs[leg].samples(frames)
    windows = [samples[i * FRAME : (i + 1) * FRAME] for i in range(len(frames))]
    return [i for i, window in enumerate(windows) if share(window, 1000) > 0.5]


@pytest.mark.parametrize("play_beep", [True, False])
async def test_play_beep_plays_a_beep_to_the_leg_as_the_recording_starts(
    h: Harness, play_beep: bool
) -> None:
    leg = await h.up()
    output = h.outputs[leg]
    await output.collect(2)
    start = len(output.frames)
    await h.ok(leg, "record_start", format="wav", channels="single", play_beep=play_beep)
    answered = len(output.frames) - start  # ticks the command itself took (a loaded machine)
    await output.collect(40)
    heard = output.frames[start : start + 40]
    beeped = beep_frames(h, leg, heard)
    samples = output.samples(heard)
    if not play_beep:
        assert beeped == []
        assert float(np.abs(samples).max()) < 100, "the leg hears nothing"
        return
    # 250 ms: 12 or 13 frames in a row (the beep may straddle a frame), then nothing.
    assert 12 <= len(beeped) <= 14, beeped
    assert beeped == list(range(beeped[0], beeped[0] + len(beeped)))
    assert beeped[0] <= answered + 2, "at the start of the recording"
    after = samples[(beeped[-1] + 2) * FRAME :]
    assert float(np.abs(after).max()) < 100, "the beep ends"
    await h.ok(leg, "record_stop")
    recorded = read_mono(await saved_file(h, leg))
    assert share(recorded[: 10 * FRAME], 1000) > 0.9, "the beep is in the recording"


async def say_then_hush(h: Harness, leg: str, frequency: float, frames: int) -> None:
    """The far end says ``frequency`` for about ``frames`` frames, then is silent until what it
    said has all been mixed (a few frames)."""
    stop = h.speak(leg, frequency)
    await h.outputs[leg].collect(frames)
    stop()
    await h.outputs[leg].collect(5)


def frames_of(samples: NDArray[np.int16], frequency: float) -> list[int]:
    count = len(samples) // FRAME
    return [i for i in range(count) if share(samples[i * FRAME : (i + 1) * FRAME], frequency) > 0.5]


async def test_record_pause_leaves_out_what_is_said_until_record_resume_in_one_file(
    h: Harness,
) -> None:
    leg = await h.up()
    body = {"format": "wav", "channels": "single", "recording_track": "inbound"}
    await h.ok(leg, "record_start", **body)
    await say_then_hush(h, leg, 440, 25)
    await h.ok(leg, "record_pause")
    await h.ok(leg, "record_pause")  # paused already: still ok, nothing changes
    await say_then_hush(h, leg, 880, 25)
    await say_then_hush(h, leg, 880, 25)
    recording_id = h.runtime.machine.leg(leg).recording_id
    await h.ok(leg, "record_resume", recording_id=recording_id)
    await say_then_hush(h, leg, 1300, 25)
    await h.ok(leg, "record_stop")
    samples = read_mono(await saved_file(h, leg))
    first, paused, second = (frames_of(samples, hz) for hz in (440, 880, 1300))
    assert paused == [], "nothing said while paused is in the recording"
    assert len(first) >= 20 and len(second) >= 20, (first, second)
    assert max(first) < min(second)
    # The file holds the recorded stretches only: about 30 + 30 frames, not the 60 paused.
    assert len(samples) / FRAME < 90, len(samples) / FRAME
    assert h.receiver.types(leg).count("call.recording.saved") == 1


async def test_record_pause_without_a_recording_is_refused(h: Harness) -> None:
    leg = await h.up()
    reply = await h.act(leg, "record_pause")
    assert reply.status == 422
    await h.ok(leg, "record_start", format="wav", channels="single")
    reply = await h.act(leg, "record_resume", recording_id="not-this-one")
    assert reply.status == 422
    assert reply.body["errors"][0]["source"] == {"pointer": "/recording_id"}


async def test_max_length_counts_recorded_time_not_the_pause(h: Harness) -> None:
    leg = await h.up()
    await h.ok(leg, "record_start", format="wav", channels="single", max_length=1)
    assert h.timers.delay(leg, TimerKind.RECORD_LIMIT) == 1
    await h.outputs[leg].collect(25)  # about 0.5 s recorded
    await h.ok(leg, "record_pause")
    assert not [k for k in h.timers.pending if k.kind is TimerKind.RECORD_LIMIT]
    await h.outputs[leg].collect(75)  # 1.5 s paused: past the limit by the clock
    await h.ok(leg, "record_resume")
    left = h.timers.delay(leg, TimerKind.RECORD_LIMIT)
    assert 0.2 <= left <= 0.6, left  # what is left of the second, whatever the pause took
    await h.outputs[leg].collect(40)  # the recorder takes no more than the limit meanwhile
    h.timers.fire(leg, TimerKind.RECORD_LIMIT)
    samples = read_mono(await saved_file(h, leg))
    assert len(samples) / RATE == pytest.approx(1.0, abs=0.021), len(samples) / RATE
