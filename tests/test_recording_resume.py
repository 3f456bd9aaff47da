"""Recordings survive a restart of the engine (issue 12, points 2 and 3), through the app.

A recording runs on a bridged call; the app stops (its cleanup closes the file properly
without ending the recording) and a new app starts on the same store. The recording goes on in
the same file; when it stops, one ``call.recording.saved`` names a file that holds the audio
from before the restart, the outage as silence, and the audio from after it. A recording that
cannot be continued ends with ``call.recording.error``. The Recorder's own appending is tested
in ``tests/test_recorder_resume.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
import wave
from pathlib import Path
from typing import Any

import miniaudio
import numpy as np
import pytest
from numpy.typing import NDArray

from engine.api.keys import STORE
from engine.config import Settings, sqlite_path
from engine.machine.model import RecordingOptions
from engine.store.live_records import LiveRecording
from engine.store.sql import SqlStore
from media.codecs import PCMA_8K
from tests.call_fakes import Harness, share

RATE = 8000
WINDOW = RATE // 10  # 100 ms: long enough for a clean FFT, short enough to find the gap
OUTAGE_S = 3.0  # how long the engine was "down", set on the file's mtime


@pytest.fixture
async def h(aiohttp_server: Any, aiohttp_client: Any, settings: Settings) -> Harness:
    return await Harness.start(aiohttp_client, aiohttp_server, settings)


async def stored_recordings(h: Harness) -> list[LiveRecording]:
    return await h.client.app[STORE].load_live_recordings()


async def recording_in_progress(h: Harness, leg: str) -> Path:
    """The file of the leg's recording in progress, as the store names it."""
    (stored,) = [r for r in await stored_recordings(h) if r.call_control_id == leg]
    return h.runtime.plane.recordings.directory / stored.path


async def talk(h: Harness, a: str, b: str, tone_a: float, tone_b: float) -> None:
    """Both parties speak their tone for about a second (frames paced by the media tick)."""
    h.speak(a, tone_a)
    h.speak(b, tone_b)
    await asyncio.gather(h.outputs[a].collect(50), h.outputs[b].collect(50))


def read_stereo(path: Path, fmt: str) -> NDArray[np.int16]:
    """The file's samples as (frames, 2), read with the stdlib or miniaudio, not our code."""
    if fmt == "wav":
        with wave.open(str(path), "rb") as reader:
            assert (reader.getnchannels(), reader.getframerate()) == (2, RATE)
            raw = reader.readframes(reader.getnframes())
        return np.frombuffer(raw, dtype="<i2").reshape(-1, 2)
    decoded = miniaudio.decode(path.read_bytes(), nchannels=2, sample_rate=RATE)
    return np.array(decoded.samples, dtype=np.int16).reshape(-1, 2)


def segments(channel: NDArray[np.int16], tones: tuple[float, ...]) -> list[str]:
    """Each 100 ms window named by the tone that fills it, "silence", or "?" (a boundary)."""
    names = []
    for start in range(0, len(channel) - WINDOW + 1, WINDOW):
        window = channel[start : start + WINDOW]
        loud = [t for t in tones if share(window, t) > 0.9]
        rms = float(np.sqrt(np.mean(window.astype(np.float64) ** 2)))
        names.append(f"{loud[0]:g}" if loud else "silence" if rms < 100 else "?")
    return names


def assert_before_gap_after(names: list[str], before: str, after: str) -> None:
    """At least half a second of ``before``, then only silence (bar a few boundary windows,
    MP3 smears edges) for at least the outage, then at least half a second of ``after``."""
    assert names.count(before) >= 5 and names.count(after) >= 5, names
    last_before = len(names) - 1 - names[::-1].index(before)
    first_after = names.index(after)
    assert after not in names[:first_after] and before not in names[last_before + 1 :], names
    between = names[last_before + 1 : first_after]
    assert between.count("?") <= 4 and set(between) <= {"silence", "?"}, names
    assert between.count("silence") * WINDOW / RATE >= OUTAGE_S - 0.3, names


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
async def test_a_recording_goes_on_in_the_same_file_after_a_restart(
    h: Harness, aiohttp_client: Any, settings: Settings, fmt: str
) -> None:
    a, b = await h.up(), await h.up(media=PCMA_8K)
    await h.bridged(a, b)
    await h.ok(a, "record_start", format=fmt, channels="dual")
    await talk(h, a, b, 440, 1000)
    path = await recording_in_progress(h, a)

    stopped_at = time.time()
    await h.client.close()  # the old app's cleanup closes the file, the recording goes on
    assert (await asyncio.to_thread(path.stat)).st_size > 0
    down_since = time.time() - OUTAGE_S
    os.utime(path, (down_since, down_since))  # as if it had been written OUTAGE_S ago
    h = await h.restarted(aiohttp_client, settings)

    assert await recording_in_progress(h, a) == path  # still in progress, same file
    await h.media(a)
    await h.media(b, PCMA_8K)
    await talk(h, a, b, 700, 1300)
    await h.ok(a, "record_stop")
    saved = await h.receiver.next("call.recording.saved", a)

    assert await h.recording_file(saved.payload["recording_urls"][fmt]) == path.resolve()
    samples = await asyncio.to_thread(read_stereo, path, fmt)
    tones = (440.0, 700.0, 1000.0, 1300.0)
    assert_before_gap_after(segments(samples[:, 0], tones), "440", "700")  # what a said
    assert_before_gap_after(segments(samples[:, 1], tones), "1000", "1300")  # what a heard
    # One saved recording, of the whole duration, started when the first process started it.
    assert (await h.barrier(a)).count("call.recording.saved") == 1
    assert "call.recording.error" not in h.receiver.types(a)
    payload = saved.payload
    assert payload["recording_started_at"] < payload["recording_ended_at"]
    record = await h.client.app[STORE].recording_by_id(payload["recording_id"])
    assert record is not None
    # MP3: the decoded file also holds each part's encoder delay and last-frame padding.
    slack = 0.002 if fmt == "wav" else 0.35
    assert record.duration_ms / 1000 == pytest.approx(len(samples) / RATE, abs=slack)
    assert record.duration_ms / 1000 >= OUTAGE_S + 1.5  # a second each side of the outage
    assert record.started_at < stopped_at < record.ended_at
    assert await stored_recordings(h) == []  # over: nothing left to continue


async def test_a_paused_recording_stays_paused_across_a_restart_and_has_no_outage_in_it(
    h: Harness, aiohttp_client: Any, settings: Settings
) -> None:
    a, b = await h.up(), await h.up()
    await h.bridged(a, b)
    await h.ok(a, "record_start", format="wav", channels="dual")
    await talk(h, a, b, 440, 1000)
    await h.ok(a, "record_pause")
    await talk(h, a, b, 700, 700)  # paused: not recorded
    path = await recording_in_progress(h, a)
    await h.client.close()
    down_since = time.time() - OUTAGE_S
    os.utime(path, (down_since, down_since))  # as if written OUTAGE_S ago: the pause began then
    h = await h.restarted(aiohttp_client, settings)
    assert h.runtime.machine.leg(a).recording_paused
    await h.media(a)
    await h.media(b)
    await talk(h, a, b, 700, 700)  # still paused after the restart
    await h.ok(a, "record_resume")
    await talk(h, a, b, 1300, 1600)
    await h.ok(a, "record_stop")
    saved = await h.receiver.next("call.recording.saved", a)
    samples = await asyncio.to_thread(read_stereo, path, "wav")
    names = segments(samples[:, 0], (440.0, 700.0, 1300.0))
    assert "700" not in names and names.count("440") >= 5 and names.count("1300") >= 5, names
    # What was recorded, back to back: no outage, no pause (a few quiet windows at the seams).
    assert names.count("silence") + names.count("?") <= 6, names
    assert saved.payload["recording_urls"]["wav"]


async def test_a_recording_whose_leg_ended_while_down_is_saved(
    h: Harness, aiohttp_client: Any, settings: Settings
) -> None:
    a = await h.up()
    await h.ok(a, "record_start", format="wav", channels="single")
    await h.outputs[a].collect(10)
    path = await recording_in_progress(h, a)

    h = await h.restarted(aiohttp_client, settings, unreachable={a})

    await h.receiver.next("call.hangup", a)
    saved = await h.receiver.next("call.recording.saved", a)
    assert await h.recording_file(saved.payload["recording_urls"]["wav"]) == path.resolve()
    assert await stored_recordings(h) == []


async def test_a_recording_whose_file_is_gone_ends_with_an_error_and_the_call_goes_on(
    h: Harness, aiohttp_client: Any, settings: Settings
) -> None:
    a = await h.up()
    await h.ok(a, "record_start", format="wav", channels="single")
    await h.outputs[a].collect(5)
    path = await recording_in_progress(h, a)
    await h.client.close()
    await asyncio.to_thread(path.unlink)

    h = await h.restarted(aiohttp_client, settings)

    error = await h.receiver.next("call.recording.error", a)
    assert error.payload["callbridge_reason"] == "write_failed"
    assert "call.recording.saved" not in h.receiver.types(a)
    assert await stored_recordings(h) == []
    # The call goes on, and a new recording can start and is saved.
    await h.media(a)
    await h.ok(a, "record_start", format="wav", channels="single")
    await h.outputs[a].collect(5)
    await h.ok(a, "record_stop")
    await h.receiver.next("call.recording.saved", a)


async def test_a_recording_nothing_was_stored_about_ends_with_an_error(
    h: Harness, aiohttp_client: Any, settings: Settings
) -> None:
    # The process died between committing record_start and storing the recording's file.
    a = await h.up()
    await h.ok(a, "record_start", format="wav", channels="single")
    await h.client.close()
    await asyncio.to_thread(forget_recordings_in_progress, settings)

    h = await h.restarted(aiohttp_client, settings)

    error = await h.receiver.next("call.recording.error", a)
    assert error.payload["callbridge_reason"] == "write_failed"
    assert h.runtime.machine.leg(a).recording_id is None


async def test_a_recording_stopped_but_not_yet_saved_when_the_process_stopped_is_saved(
    h: Harness, aiohttp_client: Any, settings: Settings
) -> None:
    a = await h.up()
    await h.ok(a, "record_start", format="mp3", channels="single")
    h.speak(a, 440)
    await h.outputs[a].collect(50)
    path = await recording_in_progress(h, a)
    await h.client.close()
    # As if record_stop had been committed and the process stopped before the file was saved.
    await asyncio.to_thread(stop_recording_in_store, settings, a)

    h = await h.restarted(aiohttp_client, settings)

    saved = await h.receiver.next("call.recording.saved", a)
    assert await h.recording_file(saved.payload["recording_urls"]["mp3"]) == path.resolve()
    samples = await asyncio.to_thread(read_stereo, path, "mp3")
    assert share(samples[RATE // 2 : RATE, 0], 440) > 0.9
    assert (await h.barrier(a)).count("call.recording.saved") == 1
    assert await stored_recordings(h) == []


def stop_recording_in_store(settings: Settings, leg: str) -> None:
    """What the machine stores on record_stop: no recording in progress, one still unsaved."""
    db = sqlite_path(settings.database_url)
    assert db is not None
    with sqlite3.connect(db, timeout=10) as conn:
        (raw,) = conn.execute(
            "SELECT state FROM live_legs WHERE call_control_id = ?", (leg,)
        ).fetchone()
        stored = json.loads(raw)
        assert stored["state"]["recording_id"] in stored["state"]["recordings_unsaved"]
        stored["state"]["recording_id"] = None
        conn.execute(
            "UPDATE live_legs SET state = ? WHERE call_control_id = ?", (json.dumps(stored), leg)
        )
        conn.execute(
            "DELETE FROM live_timers WHERE call_control_id = ? AND kind = 'record_limit'", (leg,)
        )


def forget_recordings_in_progress(settings: Settings) -> None:
    db = sqlite_path(settings.database_url)
    assert db is not None
    with sqlite3.connect(db, timeout=10) as conn:
        conn.execute("DELETE FROM live_recordings")


async def test_the_store_keeps_one_row_per_recording_in_progress(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'store.db'}")
    await store.start()
    try:
        options = RecordingOptions(format="wav", channels="single", trim="trim-silence")
        first = LiveRecording("v3:a/recording/1", "v3:a", 1, "org-1/a.wav", options, 10.5)
        await store.save_live_recording(first)
        moved = LiveRecording("v3:a/recording/1", "v3:a", 1, "org-1/a-2.wav", options, 10.5)
        await store.save_live_recording(moved)  # the same id again replaces the row
        other = LiveRecording("v3:b/recording/3", "v3:b", 2, "org-2/b.mp3", RecordingOptions(), 1)
        await store.save_live_recording(other)
        loaded = sorted(await store.load_live_recordings(), key=lambda r: r.recording_id)
        assert loaded == [moved, other]
        await store.delete_live_recording(first.recording_id)
        await store.delete_live_recording("v3:none/recording/1")  # unknown: no error
        assert await store.load_live_recordings() == [other]
    finally:
        await store.close()
