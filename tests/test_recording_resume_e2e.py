"""kill -9 or SIGTERM during a recording, with real processes (issue 12, points 2 and 3).

The world of ``tests/test_restart_e2e.py`` (``callbridge serve`` as a process, the Twilio and
Telnyx simulators, the application behind a webhook receiver): a bridged call is recorded, the
engine is killed with SIGKILL (a WAV recording) or stopped with SIGTERM, handing its calls
over (an MP3 recording, its encoder flushed on the way out), mid-recording, and a new process
started on the same database. The recording must go on in the same file: after
``stop_recording``, exactly one ``call.recording.saved`` names a file holding the caller's voice
before the stop, silence for the outage, and the voice again after it.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

import miniaudio
import numpy as np
import pytest
import telnyx
from numpy.typing import NDArray

from tests.e2e_checks import Tap
from tests.engine_process import (
    TWILIO_NUMBER,
    World,
    bridged_pair,
    new_stream_start,
    until,
    world,
)

pytestmark = pytest.mark.slow_family  # a process killed and restarted: once per CI run

RATE = 8000
WINDOW = RATE // 10  # 100 ms


def recording_bytes(w: World, fmt: str) -> int:
    """The size of the one recording file there is (0 before it exists)."""
    files = list((w.engine.tmp_path / "recordings").glob(f"org-*/*.{fmt}"))
    assert len(files) <= 1, files
    return files[0].stat().st_size if files else 0


def loudness(samples: NDArray[np.int16]) -> list[str]:
    """Each 100 ms window as "voice", "silence" or "?" (a boundary, or a level between)."""
    names = []
    for start in range(0, len(samples) - WINDOW + 1, WINDOW):
        window = samples[start : start + WINDOW].astype(np.float64)
        rms = float(np.sqrt(np.mean(window**2)))
        names.append("voice" if rms > 300 else "silence" if rms < 30 else "?")
    return names


def runs(names: list[str]) -> list[tuple[str, int]]:
    """Consecutive windows of one kind, boundary windows ("?") dropped."""
    out: list[tuple[str, int]] = []
    for name in (n for n in names if n != "?"):
        if out and out[-1][0] == name:
            out[-1] = (name, out[-1][1] + 1)
        else:
            out.append((name, 1))
    return out


async def record_across_a_restart(
    w: World, fmt: Literal["wav", "mp3"], stop: Callable[[], Awaitable[None]]
) -> None:
    """Record the Twilio caller (``fmt``), ``stop`` the engine two seconds in, start a new one,
    record three more seconds and stop: one ``call.recording.saved`` for the same file, which
    holds the voice, the outage as silence, and the voice again."""
    twilio_call, telnyx_call = await bridged_pair(w)
    leg = w.legs[TWILIO_NUMBER]
    sdk = telnyx.AsyncTelnyx(api_key=w.org.token, base_url=w.engine.base_url + "/v2")
    try:
        await sdk.calls.actions.start_recording(leg, format=fmt, channels="dual")
        # Two seconds on disk: WAV data grows at a known rate; MP3 at 64 kbit/s for stereo.
        two_seconds = 44 + 2 * RATE * 4 if fmt == "wav" else 2 * 64_000 // 8

        async def recorded_before() -> bool:
            return recording_bytes(w, fmt) >= two_seconds

        await until(recorded_before, "two seconds recorded before the engine stops")
        await stop()
        await w.engine.start()

        # The caller's new stream carries two seconds of audio before the recording stops.
        start = await new_stream_start(twilio_call, 2)
        await new_stream_start(telnyx_call, 2)
        assert isinstance(twilio_call.playout, Tap)
        playout = twilio_call.playout

        # Three seconds: the first frames of a new stream may wait for the adopting process
        # to bind it, and only the newest of those are mixed (the rest would be latency).
        await twilio_call.wait_until(lambda _call: len(playout.frames) >= start + 150)
        await sdk.calls.actions.stop_recording(leg)
    finally:
        await sdk.close()

    await w.receiver.wait_until(
        lambda: bool(w.receiver.of("call.recording.saved", leg)), "call.recording.saved"
    )
    (saved,) = w.receiver.of("call.recording.saved", leg)
    assert not w.receiver.of("call.recording.error", leg), w.engine.logs()
    assert not w.receiver.of("call.hangup", leg)
    async with w.session.get(saved["payload"]["recording_urls"][fmt]) as reply:
        assert reply.status == 200
        body = await reply.read()
    spoken = stereo(body, fmt)[:, 0]  # left: what the Twilio caller said
    # Silence at either end (the MP3 decoder's delay, the last frames) is not the outage.
    kinds = runs(loudness(spoken))
    kinds = kinds[1:] if kinds[0][0] == "silence" else kinds
    kinds = kinds[:-1] if kinds[-1][0] == "silence" else kinds
    # The voice (at least 1.5 s: what was on disk before the stop), the outage as silence
    # (a restart takes more than half a second), the voice again (at least 1.5 s).
    assert [kind for kind, _ in kinds] == ["voice", "silence", "voice"], kinds
    assert kinds[0][1] >= 15 and kinds[1][1] >= 5 and kinds[2][1] >= 15, kinds


def stereo(body: bytes, fmt: str) -> NDArray[np.int16]:
    """The file's samples as (frames, 2), read with the stdlib or miniaudio, not our code."""
    if fmt == "wav":
        with wave.open(io.BytesIO(body), "rb") as reader:
            assert (reader.getnchannels(), reader.getframerate()) == (2, RATE)
            raw = reader.readframes(reader.getnframes())
        return np.frombuffer(raw, dtype="<i2").reshape(-1, 2)
    decoded = miniaudio.decode(body, nchannels=2, sample_rate=RATE)
    return np.array(decoded.samples, dtype=np.int16).reshape(-1, 2)


async def test_kill_9_during_a_recording_continues_it_in_the_same_file(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        await record_across_a_restart(w, "wav", w.engine.kill)


async def test_sigterm_hands_an_mp3_recording_over_to_the_next_process(tmp_path: Path) -> None:
    async with world(tmp_path, CALLBRIDGE_SHUTDOWN_GRACE_S="1") as w:

        async def sigterm() -> None:
            await w.engine.terminate()
            assert await w.engine.exited() == 0, w.engine.logs()

        await record_across_a_restart(w, "mp3", sigterm)
