"""Conference hold, play, stop and send_dtmf through the official telnyx SDK, on real audio.

A Twilio caller and two Telnyx callers (the simulators) in one conference built with
``client.conferences``. The audio played (hold audio, a playback) is itself a ``Voice`` written
to a WAV in the media directory, so what each caller receives is judged per 20 ms frame by
``tests/e2e_checks.py`` exactly as the callers' voices are: a held participant hears its hold
audio and nothing of the room, nobody hears it, and unhold restores the room; a play to the
conference is heard by everyone on top of the room, with its webhooks; send_dtmf to one
participant is decoded by a DTMF receiver at its far end.
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path
from typing import Any

import numpy as np
import telnyx

from adapters.simulators import SimulatedCall
from benchmarks.loadtest.judge import Voice, VoiceSource
from media.dtmf import DtmfDetector
from tests.e2e_checks import hearing, hearing_since, voices
from tests.test_e2e_conferences import sdk_for, since_now, three_answered
from tests.test_e2e_cross_provider import World, world

A_VOICE, B_VOICE, C_VOICE, HOLD_VOICE, PLAY_VOICE = voices(5, room_size=4)
WAV_FRAMES = 400  # 8 s, a whole number of marker periods: a looped WAV keeps its markers


def voice_wav(path: Path, voice: Voice) -> str:
    """A WAV of ``voice`` as a caller speaks it; its file:// URL."""
    source = VoiceSource(voice)
    samples = np.concatenate([source.next_frame() for _ in range(WAV_FRAMES)])
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(samples.astype("<i2").tobytes())
    return path.resolve().as_uri()


def events_of(w: World, prefix: str) -> list[tuple[str, str | None]]:
    return [
        (e["event_type"], e["payload"].get("call_control_id"))
        for e in w.app_server.events
        if e["event_type"].startswith(prefix)
    ]


async def test_hold_play_stop_and_send_dtmf_in_a_conference(tmp_path: Path) -> None:
    media = tmp_path / "media"
    hold_url = voice_wav(media / "hold.wav", HOLD_VOICE)
    play_url = voice_wav(media / "play.wav", PLAY_VOICE)
    async with world(tmp_path, media_dir=media) as w:
        sdk = sdk_for(w, w.org.token)
        try:
            legs = await three_answered(w, sdk, (A_VOICE, B_VOICE, C_VOICE))
            conf = await _conference(w, sdk, legs)
            await _hold(sdk, conf, legs, hold_url)
            await _play(w, sdk, conf, legs, play_url)
            await _send_dtmf(sdk, conf, legs)
        finally:
            await sdk.close()


async def _conference(w: World, sdk: telnyx.AsyncTelnyx, legs: dict[str, Any]) -> str:
    (a_call, a), (b_call, b), (c_call, c) = legs["A"], legs["B"], legs["C"]
    created = await sdk.conferences.create(call_control_id=a, name="media")
    assert created.data is not None
    conf = created.data.id
    await sdk.conferences.actions.join(conf, call_control_id=b)
    await sdk.conferences.actions.join(conf, call_control_id=c)
    await asyncio.gather(
        hearing(a_call, [B_VOICE, C_VOICE], A_VOICE),
        hearing(b_call, [A_VOICE, C_VOICE], B_VOICE),
        hearing(c_call, [A_VOICE, B_VOICE], C_VOICE),
    )
    return conf


async def _hold(sdk: telnyx.AsyncTelnyx, conf: str, legs: dict[str, Any], url: str) -> None:
    (a_call, _), (b_call, b), (c_call, _) = legs["A"], legs["B"], legs["C"]
    await sdk.conferences.actions.hold(conf, call_control_ids=[b], audio_url=url)
    held = [p.call_control_id async for p in sdk.conferences.list_participants(conf) if p.on_hold]
    assert held == [b]
    starts = [since_now(call) for call in (a_call, b_call, c_call)]
    # B hears its hold audio alone; nobody hears B, nor B's hold audio.
    await asyncio.gather(
        hearing_since(a_call, starts[0], [C_VOICE], A_VOICE),
        hearing_since(b_call, starts[1], [HOLD_VOICE], B_VOICE),
        hearing_since(c_call, starts[2], [A_VOICE], C_VOICE),
    )
    await sdk.conferences.actions.unhold(conf, call_control_ids=[b])
    found = await sdk.conferences.retrieve_participant(b, id=conf)
    assert found.data is not None and not found.data.on_hold
    starts = [since_now(call) for call in (a_call, b_call)]
    await asyncio.gather(
        hearing_since(a_call, starts[0], [B_VOICE, C_VOICE], A_VOICE),
        hearing_since(b_call, starts[1], [A_VOICE, C_VOICE], B_VOICE),
    )


async def _play(
    w: World, sdk: telnyx.AsyncTelnyx, conf: str, legs: dict[str, Any], url: str
) -> None:
    (a_call, a), (b_call, _), (c_call, c) = legs["A"], legs["B"], legs["C"]
    await sdk.conferences.actions.play(conf, audio_url=url, loop="infinity")
    starts = [since_now(call) for call in (a_call, b_call, c_call)]
    await asyncio.gather(
        hearing_since(a_call, starts[0], [B_VOICE, C_VOICE, PLAY_VOICE], A_VOICE),
        hearing_since(b_call, starts[1], [A_VOICE, C_VOICE, PLAY_VOICE], B_VOICE),
        hearing_since(c_call, starts[2], [A_VOICE, B_VOICE, PLAY_VOICE], C_VOICE),
    )
    await sdk.conferences.actions.stop(conf)
    start = since_now(a_call)
    await hearing_since(a_call, start, [B_VOICE, C_VOICE], A_VOICE)
    await w.app_server.wait_until(
        lambda: len(events_of(w, "conference.playback")) == 2, "playback started and ended"
    )
    assert events_of(w, "conference.playback") == [
        ("conference.playback.started", None),
        ("conference.playback.ended", None),
    ]
    started = w.app_server.of("conference.playback.started")[0]["payload"]
    assert started["conference_id"] == conf and started["media_url"] == url
    assert set(started) >= {"connection_id", "creator_call_session_id", "occurred_at"}

    # To one participant, once: its own events, and the playback ends by itself.
    await sdk.conferences.actions.play(conf, audio_url=url, call_control_ids=[c], loop=1)
    await w.app_server.wait_until(
        lambda: len(events_of(w, "conference.participant.playback")) == 2,
        "participant playback started and ended",
        within=30,
    )
    assert events_of(w, "conference.participant.playback") == [
        ("conference.participant.playback.started", c),
        ("conference.participant.playback.ended", c),
    ]
    assert a != c


async def _send_dtmf(sdk: telnyx.AsyncTelnyx, conf: str, legs: dict[str, Any]) -> None:
    c_call, c = legs["C"]
    await sdk.conferences.actions.mute(conf)  # C's far end hears the digits alone
    start = since_now(c_call)
    await sdk.conferences.actions.send_dtmf(conf, digits="159#", call_control_ids=[c])
    # 4 digits of 250 ms with 100 ms gaps: 1.4 s; wait for 2 s of frames.
    await c_call.wait_until(lambda _call: len(_frames(c_call)) >= start + 100, 10)
    assert _decoded(_frames(c_call)[start:]) == "159#"


def _frames(call: SimulatedCall) -> list[Any]:
    return call.playout.frames  # type: ignore[attr-defined, no-any-return]


def _decoded(frames: list[Any]) -> str:
    detector = DtmfDetector()
    return "".join(digit for frame in frames for _, digit in detector.process(frame[None]))
