"""End to end: Telnyx calls in each codec a real Telnyx call can carry, bridged to a Twilio caller.

The Telnyx simulator models the rules callbridge got wrong before (PROTOCOLS.md 3.4, corrected
2026-12): a call streams its own negotiated codec unless ``stream_codec`` asks for the other
G.711 (Telnyx transcodes only PCMU<->PCMA), and whatever callbridge sends back is decoded as the
declared ``stream_bidirectional_codec``. So a PCMA call whose A-law callbridge echoed back would
be heard garbled, and a G.722 call streams G.722 whatever callbridge asks for. Each caller speaks
a marked tone (``VoiceSource``) and every frame each one receives is judged by the load test's
checker (tests/e2e_checks.py): the other caller at its level within 1.5 dB, never its own voice,
nothing foreign, no frame missing once the room is established.

Codecs callbridge cannot decode (OPUS) and streams that never come or fail: the leg is asked for
a new stream once and then hung up at the simulator, with ``call.hangup`` to the application.

G.722 is a filter bank, and the path of a G.722 caller's voice holds three filters with delays
that are not whole frames (the simulator's 8->16 kHz resampler, G.722's QMF, callbridge's
16->8 kHz resampler). The checker's markers are sign flips of a frame-periodic tone; through such
a path a flip (and the voice's onset) lands inside a frame and splatters over every bin of that
one frame. So the G.722 caller speaks without markers, and what the Twilio caller hears of it is
judged frame by frame, from its first clean frame on, for presence, level, own voice and foreign
audio, not for loss and duplication; those are judged on the other direction, which is G.711
end to end and takes the same queues.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from telnyx import AsyncTelnyx

from adapters.simulators import CallState, TelnyxCall, TwilioCall
from benchmarks.loadtest.frames import Thresholds
from benchmarks.loadtest.judge import Voice, VoiceSource, judge
from tests.e2e_checks import LISTEN_FRAMES, Tap, hearing, tap
from tests.test_e2e_cross_provider import (
    TELNYX_NUMBER,
    TELNYX_VOICE,
    TWILIO_NUMBER,
    TWILIO_VOICE,
    World,
    world,
)

MEDIA_WAIT_S = 0.5
# The same voice with no marker turn within any test's length (see the module docstring).
UNMARKED_TELNYX_VOICE = Voice(TELNYX_VOICE.bin, TELNYX_VOICE.level_dbfs, marker_period=1_000_000)
# A frame the mixer drops to bound latency after a burst (media/mixer.py, counted as shed) is a
# jump in a waveform that G.722's ADPCM keeps only nearly frame-periodic, and the filters after it
# smear the jump over a frame: seen above the checker's -42 dBFS floor on a neighbouring bin, where
# the steady path stays below -56 dBFS (measured offline through the same codecs and filters).
# The foreign-tone floor for this path is raised to -36 dBFS: a voice routed where it should not
# be is at -12 dBFS here, 24 dB above it, and still caught.
G722_PATH = Thresholds(foreign_floor_dbfs=-36.0)


def sdk(w: World) -> AsyncTelnyx:
    return AsyncTelnyx(api_key=w.org.token, base_url=w.base_url + "/v2", max_retries=0)


async def bridged_callers(
    w: World, codec: str, telnyx_voice: Voice
) -> tuple[TwilioCall, TelnyxCall, str, str]:
    """A Twilio caller and a Telnyx caller whose call negotiated ``codec``, both answered and
    bridged by the application through the official telnyx SDK; both tapped."""
    client = sdk(w)
    legs: dict[str, str] = {}
    both = asyncio.Event()

    async def application(data: dict[str, Any]) -> None:
        payload = data["payload"]
        if data["event_type"] == "call.initiated":
            await client.calls.actions.answer(payload["call_control_id"])
        elif data["event_type"] == "call.answered":
            legs[payload["to"]] = payload["call_control_id"]
            if len(legs) == 2:
                await client.calls.actions.bridge(
                    legs[TWILIO_NUMBER], call_control_id_to_bridge_with=legs[TELNYX_NUMBER]
                )
                both.set()

    w.app_server.on_event = application
    try:
        twilio_call = await w.twilio.place_inbound_call(
            "+15557770001", TWILIO_NUMBER, source=VoiceSource(TWILIO_VOICE)
        )
        tap(twilio_call)
        telnyx_call = await w.telnyx.place_inbound_call(
            "+15557770002", TELNYX_NUMBER, source=VoiceSource(telnyx_voice), codec=codec
        )
        tap(telnyx_call)
        async with asyncio.timeout(8):
            await both.wait()
        for leg in legs.values():
            await w.app_server.wait_for("call.bridged", leg)
    finally:
        await client.close()
    return twilio_call, telnyx_call, legs[TWILIO_NUMBER], legs[TELNYX_NUMBER]


@pytest.mark.parametrize("codec", ["PCMA", "PCMU", "G722"])
async def test_a_telnyx_call_in_each_decodable_codec_and_a_twilio_caller_hear_each_other(
    tmp_path: Path, codec: str
) -> None:
    wideband = codec == "G722"
    telnyx_voice = UNMARKED_TELNYX_VOICE if wideband else TELNYX_VOICE
    async with world(tmp_path) as w:
        twilio_call, telnyx_call, twilio_leg, telnyx_leg = await bridged_callers(
            w, codec, telnyx_voice
        )
        if wideband:
            await heard_without_markers(twilio_call, telnyx_voice, TWILIO_VOICE)
        else:
            await hearing(twilio_call, [telnyx_voice], TWILIO_VOICE)
        await hearing(telnyx_call, [TWILIO_VOICE], telnyx_voice)
        answer = next(r for r in w.telnyx.requests if r.path.endswith("/actions/answer"))
        # Both directions declared; PCMU asked for, which Telnyx transcodes PCMA calls to.
        assert answer.json["stream_codec"] == "PCMU"
        assert answer.json["stream_bidirectional_codec"] == "PCMU"
        assert answer.json["stream_bidirectional_target_legs"] == "self"
        streamed = "G722" if codec == "G722" else "PCMU"
        assert (w.runtime.machine.leg(telnyx_leg).media_format or "").startswith(streamed)
        assert w.runtime.machine.leg(twilio_leg).is_alive


async def heard_without_markers(call: TwilioCall, voice: Voice, own: Voice) -> None:
    """Every frame ``call`` received, once it first held ``voice``, holds it at its level, and
    never ``own`` or anything foreign (``judge``'s rules, markers aside)."""
    ear = call.playout
    assert isinstance(ear, Tap)

    def enough(_call: object) -> bool:
        got = judge(ear.frames, [voice], own, G722_PATH) if ear.frames else None
        start = None if got is None else got.established_at
        return start is not None and len(ear.frames) >= start + LISTEN_FRAMES

    await call.wait_until(enough, 5)
    result = judge(ear.frames, [voice], own, G722_PATH)
    start = result.established_at
    assert start is not None and start < 25, result.problems()  # within half a second
    # The voice's onset reaches the listener mid-frame through the filters' delays, and that one
    # frame splatters; everything from the first clean frame on must be clean.
    assert not result.gaps, result.problems()
    assert [m for m in result.misrouted if m[0] >= start] == [], result.problems()


async def test_an_opus_stream_is_asked_for_again_then_the_leg_is_hung_up(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        await _leg_without_usable_media(w, codec="OPUS", reason="unsupported_codec")


@pytest.mark.parametrize(("fault", "reason"), [("fail", "stream_failed"), ("never", None)])
async def test_a_stream_that_fails_or_never_connects_ends_with_call_hangup(
    tmp_path: Path, fault: str, reason: str | None
) -> None:
    async with world(tmp_path) as w:
        # "never": no stream and no webhook ever comes; the wait runs out (media_timeout), unless
        # the restart's streaming_start is the one that reports nothing either.
        await _leg_without_usable_media(w, stream_fault=fault, reason=reason or "media_timeout")


async def _leg_without_usable_media(w: World, *, reason: str, **call_options: Any) -> None:
    # Short waits keep the test short; the streams that do start are judged with the default.
    w.runtime.machine.media_wait_s = MEDIA_WAIT_S
    client = sdk(w)

    async def application(data: dict[str, Any]) -> None:
        if data["event_type"] == "call.initiated":
            await client.calls.actions.answer(data["payload"]["call_control_id"])

    w.app_server.on_event = application
    try:
        call = await w.telnyx.place_inbound_call(
            "+15557770003", TELNYX_NUMBER, source=VoiceSource(TELNYX_VOICE), **call_options
        )
        answered = await w.app_server.wait_for("call.answered")
        leg = answered["payload"]["call_control_id"]
        # Two waits of MEDIA_WAIT_S at most, then the hangup: well within the timeout.
        hangup = await w.app_server.wait_for("call.hangup", leg, timeout_s=8 * MEDIA_WAIT_S + 2)
        await call.wait_for(CallState.ENDED)
    finally:
        await client.close()
    payload = hangup["payload"]
    assert payload["hangup_cause"] == "unspecified"
    assert payload["callbridge_reason"] == reason
    actions = [r.path.rsplit("/", 1)[-1] for r in w.telnyx.requests if "/actions/" in r.path]
    # One new stream asked for, then the hangup at Telnyx: no answered, silent leg remains.
    assert actions.count("streaming_start") == 1, actions
    assert actions.index("streaming_start") < actions.index("hangup")
    assert not w.runtime.machine.leg(leg).is_alive


async def test_a_twilio_leg_asked_for_a_new_stream_gets_one_and_is_heard_again(
    tmp_path: Path,
) -> None:
    """The Twilio side of a restart: callbridge updates the live call with new stream TwiML, the
    simulator stops the old stream and runs the new document, and the bridged audio resumes."""
    async with world(tmp_path) as w:
        twilio_call, _, twilio_leg, _ = await bridged_callers(w, "PCMU", TELNYX_VOICE)
        await hearing(twilio_call, [TELNYX_VOICE], TWILIO_VOICE)
        # As a provider's streaming.failed or a refused start would report it.
        await w.runtime.media_failed(twilio_leg, "stream_failed", "test: stream lost")
        update = await w.twilio.wait_for_request(lambda r: bool(r.form.get("Twiml")))
        assert twilio_call.sid in update.path
        assert "<Connect><Stream" in update.form["Twiml"][0]
        await twilio_call.wait_until(lambda c: len(c.streams) == 2 and c.stream is not None, 5)
        assert w.runtime.machine.leg(twilio_leg).state.value == "bridged"
        # What the caller hears on its new stream is judged afresh: the peer, and nothing else.
        ear = tap_again(twilio_call)
        await hearing(twilio_call, [TELNYX_VOICE], TWILIO_VOICE)
        assert ear.frames
        assert not [r for r in w.twilio.requests if r.form.get("Status") == ["completed"]]


def tap_again(call: TwilioCall) -> Tap:
    """A fresh ear on a call whose earlier stream was judged already."""
    ear = Tap(call.playout.max_queued_samples)
    call.playout = ear
    return ear
