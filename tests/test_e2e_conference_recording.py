"""A conference's recording through the official telnyx SDK, on real audio (issue 14, point 1:
``record_start``, ``record_pause``, ``record_resume``, ``record_stop``).

A Twilio caller and two Telnyx callers (the simulators), each speaking its own tone, are put in
one conference; the recording is started, paused, resumed and stopped with
``client.conferences.actions``. ``conference.recording.saved`` arrives with the fields of the
SDK's ``ConferenceRecordingSaved``; its recording URL downloads a WAV whose every 20 ms frame
holds all three tones at their levels and nothing else (``benchmarks/loadtest/judge.py``); the
paused time is not in it: its length is the recorded ticks only, and C, muted only while the
recording was paused, is missing from no run of frames longer than late arrivals explain. The
recording is listed in the organization's recordings as the conference's. record_stop with
nothing recording, and a field callbridge would not carry out, get Telnyx's 422.
"""

from __future__ import annotations

import io
import wave
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import telnyx
from telnyx.types.conference_recording_saved import Payload as SavedPayload

from adapters.simulators import SimulatedCall
from benchmarks.loadtest.frames import FRAME_SAMPLES
from benchmarks.loadtest.judge import Voice, judge
from tests.e2e_checks import MAX_LATE_RUN, hearing, voices
from tests.test_e2e_conferences import sdk_for, three_answered
from tests.test_e2e_cross_provider import World, world

# The recording hears all three at once: levels for a room of four keep three summed unclipped.
A_VOICE, B_VOICE, C_VOICE = voices(3, room_size=4)
NOBODY = Voice(bin=60, level_dbfs=A_VOICE.level_dbfs)  # a tone nobody speaks
RECORDED = 75  # frames recorded before the pause and after it
PAUSED = 60


async def frames_pass(call: SimulatedCall, count: int) -> None:
    """Wait until ``call`` (tapped) has received ``count`` more frames: time, on the media's
    own clock."""
    ear: Any = call.playout
    until = len(ear.frames) + count
    await call.wait_until(lambda _call: len(ear.frames) >= until)


async def test_a_conference_recording_through_the_sdk(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        sdk = sdk_for(w, w.org.token)
        try:
            await _recorded(w, sdk)
        finally:
            await sdk.close()


async def _recorded(w: World, sdk: telnyx.AsyncTelnyx) -> None:
    legs = await three_answered(w, sdk, (A_VOICE, B_VOICE, C_VOICE))
    (a_call, a), (_b_call, b), (_c_call, c) = legs["A"], legs["B"], legs["C"]
    created = await sdk.conferences.create(call_control_id=a, name="recorded")
    assert created.data is not None
    conf = created.data.id
    for leg in (b, c):
        await sdk.conferences.actions.join(conf, call_control_id=leg)
    await hearing(a_call, [B_VOICE, C_VOICE], A_VOICE)
    await _refused(sdk, conf)

    ticks = w.runtime.plane.mixer.counters
    await sdk.conferences.actions.record_start(conf, format="wav", channels="single")
    started = ticks.ticks
    await frames_pass(a_call, RECORDED)
    await sdk.conferences.actions.record_pause(conf)
    paused = ticks.ticks
    # Only while paused: C is muted, the room hears A and B alone.
    await sdk.conferences.actions.mute(conf, call_control_ids=[c])
    await frames_pass(a_call, PAUSED)
    await sdk.conferences.actions.unmute(conf, call_control_ids=[c])
    await sdk.conferences.actions.record_resume(conf)
    resumed = ticks.ticks
    await frames_pass(a_call, RECORDED)
    await sdk.conferences.actions.record_stop(conf)
    stopped = ticks.ticks

    event = await w.app_server.wait_for("conference.recording.saved", a)
    payload = event["payload"]
    assert set(payload) <= set(SavedPayload.model_fields), "only the SDK's fields"
    got = SavedPayload.model_validate(payload)
    assert (got.conference_id, got.call_control_id, got.format, got.channels) == (
        conf,
        a,
        "wav",
        "single",
    )
    assert got.recording_started_at and got.recording_ended_at
    assert got.recording_started_at < got.recording_ended_at
    assert got.recording_urls and got.recording_urls.wav and got.public_recording_urls
    assert w.app_server.of("conference.recording.saved") == [event], "one, for the one file"

    frames = await _download(got.recording_urls.wav)
    recorded = (paused - started) + (stopped - resumed)
    assert abs(len(frames) - recorded) <= 6, (len(frames), recorded)
    assert len(frames) < stopped - started - PAUSED + 10, "the paused time is left out"
    result = judge(frames, [A_VOICE, B_VOICE, C_VOICE], NOBODY)
    assert result.established_at is not None and result.established_at <= MAX_LATE_RUN
    assert result.misrouted == (), result.misrouted[:3]
    assert result.longest_gap <= MAX_LATE_RUN, f"missing a voice: {list(result.gaps[:20])}"

    listed = [r async for r in sdk.recordings.list(filter={"conference_id": conf})]
    assert [(r.id, r.source, r.conference_id) for r in listed] == [
        (got.recording_id, "conference", conf)
    ]
    assert listed[0].call_control_id == a and listed[0].download_urls is not None


async def _download(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        assert reply.status == 200, await reply.text()
        assert reply.content_type == "audio/wav"
        body = await reply.read()
    with wave.open(io.BytesIO(body), "rb") as reader:
        assert (reader.getnchannels(), reader.getframerate()) == (1, 8000)
        samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    return samples[: len(samples) // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)


async def _refused(sdk: telnyx.AsyncTelnyx, conf: str) -> None:
    """Nothing to stop, pause or resume yet; fields callbridge would not carry out: 422 each,
    in Telnyx's error shape, naming the field where there is one."""
    for request in (
        sdk.conferences.actions.record_stop(conf),
        sdk.conferences.actions.record_pause(conf),
        sdk.conferences.actions.record_resume(conf),
    ):
        with pytest.raises(telnyx.UnprocessableEntityError) as caught:
            await request
        (error,) = caught.value.body["errors"]  # type: ignore[index]
        assert error["code"] and error["title"] and "no recording" in error["detail"]
    cases: list[tuple[Any, str]] = [
        (sdk.conferences.actions.record_start(conf, format="wav", region="US"), "region"),
        (
            sdk.conferences.actions.record_start(conf, format="wav", extra_body={"max_length": 9}),
            "max_length",
        ),
        (sdk.post(f"/conferences/{conf}/actions/record_start", body={}, cast_to=object), "format"),
        (sdk.conferences.actions.record_stop(conf, region="US"), "region"),
    ]
    for request, field in cases:
        with pytest.raises(telnyx.UnprocessableEntityError) as caught:
            await request
        error = caught.value.body["errors"][0]  # type: ignore[index]
        assert error["source"]["pointer"] == "/" + field, error
