"""A conference's recording survives a restart of the engine, as a leg's does
(``tests/test_recording_resume.py``), through the app.

A conference of two is recorded; the app stops (its cleanup closes the file without ending the
recording) and a new app starts on the same store. The recording's listener is put back in the
room, the recording goes on in the same file, and when it stops, one
``conference.recording.saved`` names a file that holds the room before the restart, the outage
as silence, and the room after it. A paused one stays paused. One nothing was stored about
ends with ``conference.recording.error``.
"""

from __future__ import annotations

import asyncio
import os
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from engine.config import Settings
from tests.call_fakes import Harness, share
from tests.test_recording_resume import (
    OUTAGE_S,
    WINDOW,
    assert_before_gap_after,
    forget_recordings_in_progress,
    stored_recordings,
)


@pytest.fixture
async def h(aiohttp_server: Any, aiohttp_client: Any, settings: Settings) -> Harness:
    return await Harness.start(aiohttp_client, aiohttp_server, settings)


async def recorded_conference(h: Harness) -> tuple[str, str, str]:
    """Legs a and b in a conference being recorded (WAV); returns a, b and its id."""
    a, b = await h.up(), await h.up()
    reply = await h.request("POST", "/v2/conferences", {"call_control_id": a, "name": "r"})
    assert reply.status == 200, reply
    conf = reply.body["data"]["id"]
    for action, body in (("join", {"call_control_id": b}), ("record_start", {"format": "wav"})):
        reply = await h.request("POST", f"/v2/conferences/{conf}/actions/{action}", body)
        assert reply.status == 200, reply
    return a, b, conf


async def act(h: Harness, conf: str, action: str) -> None:
    reply = await h.request("POST", f"/v2/conferences/{conf}/actions/{action}", {})
    assert (reply.status, reply.body) == (200, {"data": {"result": "ok"}}), reply


async def talk(h: Harness, a: str, b: str, tone_a: float, tone_b: float) -> None:
    """Both participants speak their tone for about a second (paced by the media tick)."""
    h.speak(a, tone_a)
    h.speak(b, tone_b)
    await asyncio.gather(h.outputs[a].collect(50), h.outputs[b].collect(50))


async def file_of(h: Harness, conf: str) -> Path:
    (stored,) = [r for r in await stored_recordings(h) if r.call_control_id == conf]
    return h.runtime.plane.recordings.directory / stored.path


def read_mono(path: Path) -> NDArray[np.int16]:
    with wave.open(str(path), "rb") as reader:
        assert (reader.getnchannels(), reader.getframerate()) == (1, 8000)
        return np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")


def segments(samples: NDArray[np.int16], pairs: dict[str, tuple[float, float]]) -> list[str]:
    """Each 100 ms window named by the pair of tones that fills it (both in it), "silence", or
    "?" (a boundary)."""
    names = []
    for start in range(0, len(samples) - WINDOW + 1, WINDOW):
        window = samples[start : start + WINDOW]
        found = [
            name
            for name, (x, y) in pairs.items()
            if share(window, x) > 0.3 and share(window, y) > 0.3
            and share(window, x) + share(window, y) > 0.9
        ]  # fmt: skip
        rms = float(np.sqrt(np.mean(window.astype(np.float64) ** 2)))
        names.append(found[0] if found else "silence" if rms < 100 else "?")
    return names


PAIRS = {"before": (440.0, 1000.0), "after": (700.0, 1300.0)}


async def test_a_conference_recording_goes_on_in_the_same_file_after_a_restart(
    h: Harness, aiohttp_client: Any, settings: Settings
) -> None:
    a, b, conf = await recorded_conference(h)
    await talk(h, a, b, 440, 1000)
    path = await file_of(h, conf)
    await h.client.close()  # the old app's cleanup closes the file, the recording goes on
    down_since = time.time() - OUTAGE_S
    os.utime(path, (down_since, down_since))  # as if it had been written OUTAGE_S ago
    h = await h.restarted(aiohttp_client, settings)

    assert await file_of(h, conf) == path  # still in progress, same file
    assert conf in h.runtime.plane.listeners, "its listener is back in the room"
    await h.media(a)
    await h.media(b)
    await talk(h, a, b, 700, 1300)
    await act(h, conf, "record_stop")
    saved = await h.receiver.next("conference.recording.saved", a)

    assert await h.recording_file(saved.payload["recording_urls"]["wav"]) == path.resolve()
    names = segments(await asyncio.to_thread(read_mono, path), PAIRS)
    assert_before_gap_after(names, "before", "after")
    assert [x.event_type for x in h.receiver.hooks].count("conference.recording.saved") == 1
    assert await stored_recordings(h) == []  # over: nothing left to continue
    assert conf not in h.runtime.plane.listeners


async def test_a_paused_conference_recording_stays_paused_across_a_restart(
    h: Harness, aiohttp_client: Any, settings: Settings
) -> None:
    a, b, conf = await recorded_conference(h)
    await talk(h, a, b, 440, 1000)
    await act(h, conf, "record_pause")
    path = await file_of(h, conf)
    h = await h.restarted(aiohttp_client, settings)
    await h.media(a)
    await h.media(b)
    await talk(h, a, b, 600, 1600)  # still paused after the restart: not recorded
    await act(h, conf, "record_resume")
    await talk(h, a, b, 700, 1300)
    await act(h, conf, "record_stop")
    await h.receiver.next("conference.recording.saved", a)
    names = segments(await asyncio.to_thread(read_mono, path), {**PAIRS, "paused": (600, 1600)})
    assert "paused" not in names and names.count("before") >= 5 and names.count("after") >= 5
    assert names.count("silence") + names.count("?") <= 6, names  # no outage, no pause


async def test_a_conference_recording_nothing_was_stored_about_ends_with_an_error(
    h: Harness, aiohttp_client: Any, settings: Settings
) -> None:
    # The process died between committing record_start and storing the recording's file.
    a, _b, conf = await recorded_conference(h)
    await h.client.close()
    await asyncio.to_thread(forget_recordings_in_progress, settings)
    h = await h.restarted(aiohttp_client, settings)
    error = await h.receiver.next("conference.recording.error", a)
    assert error.payload["conference_id"] == conf
    assert error.payload["callbridge_reason"] == "write_failed"
    assert h.runtime.machine.conference(conf, h.org.org_id).recording_id is None
    # A new one may start.
    reply = await h.request(
        "POST", f"/v2/conferences/{conf}/actions/record_start", {"format": "mp3"}
    )
    assert reply.status == 200, reply
