"""The runtime on real audio, through the app: mixing, passthrough, ringback, DTMF relay,
playback, recording, media streams and provider-call lanes.

The app's own media tick runs in the background on the real 20 ms clock; tests wait on what a
leg's output has received (asyncio events), never on sleeps, and judge audio by its spectrum.
"""

from __future__ import annotations

import asyncio
import io
import wave
from pathlib import Path

import numpy as np
import pytest

from engine.admission.live import Place
from engine.api.keys import LIVE_LEGS
from engine.config import Settings
from engine.machine import events as ev
from engine.machine.model import HangupCause
from media.codecs import PCMA_8K, PCMU_8K
from tests.call_fakes import Harness, RecordingGateway, share, tone_frames, write_wav

DIGIT_5 = (770.0, 1336.0)


@pytest.fixture
async def h(aiohttp_server, aiohttp_client, settings: Settings) -> Harness:  # type: ignore[no-untyped-def]
    return await Harness.start(aiohttp_client, aiohttp_server, settings)


def heard(h: Harness, leg: str, frames: list[bytes]) -> np.ndarray:  # type: ignore[type-arg]
    return h.outputs[leg].samples(frames)


def is_silent(samples: np.ndarray) -> bool:  # type: ignore[type-arg]
    return int(np.abs(samples.astype(np.int32)).max()) < 64


# ---- mixing -----------------------------------------------------------------------------------
async def test_bridged_legs_hear_each_other_and_not_themselves(h: Harness) -> None:
    a = await h.up(media=PCMU_8K)
    b = await h.up(media=PCMA_8K)  # another codec: the tick decodes, mixes and encodes
    h.speak(a, 440)
    h.speak(b, 1000)
    before_a = heard(h, a, await h.outputs[a].collect(5))
    assert is_silent(before_a), "a leg in no room hears silence"
    await h.bridged(a, b)
    room = h.room_of(a)
    assert room is not None and not h.runtime.plane.mixer.is_passthrough(room)
    await h.outputs[a].collect(3)  # the first frames may still be from before the bridge
    got_a, got_b = await asyncio.gather(h.outputs[a].collect(25), h.outputs[b].collect(25))
    a_heard, b_heard = heard(h, a, got_a), heard(h, b, got_b)
    assert share(a_heard, 1000) > 0.9 and share(a_heard, 440) < 0.01
    assert share(b_heard, 440) > 0.9 and share(b_heard, 1000) < 0.01
    # After unbridge, a hears silence again and b (hung up: no policy) is out of the mixer.
    await h.ok(a, "unbridge")
    await h.outputs[a].collect(3)
    assert is_silent(heard(h, a, await h.outputs[a].collect(10)))
    assert h.room_of(b) is None


async def test_a_two_party_room_of_one_codec_forwards_frames_on_arrival(h: Harness) -> None:
    a, b = await h.up(), await h.up()
    await h.bridged(a, b)
    room = h.room_of(a)
    assert room is not None and h.runtime.plane.mixer.is_passthrough(room)
    out_a, out_b = h.outputs[a], h.outputs[b]
    a_says = [f for f, _ in zip(tone_frames(440), range(25), strict=False)]
    b_says = [f for f, _ in zip(tone_frames(1000), range(25), strict=False)]
    for mine, theirs in zip(a_says, b_says, strict=True):
        # No await in between: nothing but the frame itself can reach the outputs.
        na, nb = len(out_a.frames), len(out_b.frames)
        h.runtime.media_frame(a, mine)
        h.runtime.media_frame(b, theirs)
        assert out_b.frames[nb:] == [mine] and out_a.frames[na:] == [theirs]
    a_heard = out_a.samples(out_a.frames[-25:])
    b_heard = out_b.samples(out_b.frames[-25:])
    assert share(a_heard, 1000) > 0.9 and share(a_heard, 440) < 0.01
    assert share(b_heard, 440) > 0.9 and share(b_heard, 1000) < 0.01


async def test_media_stopping_takes_the_leg_out_of_the_mixer(h: Harness) -> None:
    a, b = await h.up(), await h.up()
    await h.bridged(a, b)
    await h.runtime.media_stopped(a)
    hook = await h.receiver.next("streaming.stopped", a)
    assert hook.payload["call_control_id"] == a
    assert not h.runtime.plane.is_attached(a) and h.state(a) == "bridged"
    await h.media(a)  # the stream comes back: mixed again
    assert h.room_of(a) == h.room_of(b) is not None


async def test_default_routing_answers_and_mixes_calls_in_the_bridges_room(h: Harness) -> None:
    """A bridge with no webhook URL: the leg is answered and joins its conference room."""
    legs = []
    for n, fmt in enumerate([PCMU_8K, PCMA_8K]):
        leg = f"v3:default-{n}"
        h.runtime.live.hold(leg, org_id=h.org.org_id, place=Place(h.bridge["id"], "+15550002222"))
        h.runtime.bind(leg, h.gateway)
        await h.runtime.event(
            ev.LegInitiated(
                call_control_id=leg,
                call_leg_id=f"leg-{n}",
                call_session_id=f"session-{n}",
                org_id=h.org.org_id,
                connection_id=h.bridge["slug"],
                from_="+15550001111",
                to="+15550002222",
                default_conference=h.bridge["id"],
            )
        )
        await h.gateway.wait("answer", leg)
        await h.answered(leg)
        await h.media(leg, fmt)
        legs.append(leg)
    a, b = legs
    room = h.room_of(a)
    assert room is not None and room.startswith("conf:") and h.room_of(b) == room
    h.speak(a, 440)
    h.speak(b, 1000)
    await h.outputs[a].collect(3)
    assert share(heard(h, a, await h.outputs[a].collect(20)), 1000) > 0.9
    live = h.client.app[LIVE_LEGS]
    assert await live.count_for_bridge(h.bridge["id"]) == 2
    await h.hung_up(b)
    assert h.state(a) == "bridged" and h.room_of(a) == room, "a conference stays"
    assert await live.count_for_bridge(h.bridge["id"]) == 1, (
        "the far end's hangup frees the channel"
    )
    assert await live.count_for_number("+15550002222") == 1
    assert h.receiver.hooks == [], "nobody listens: no webhooks"


# ---- ringback ---------------------------------------------------------------------------------
async def test_play_ringtone_plays_the_chosen_ringback_until_the_peer_answers(h: Harness) -> None:
    a = await h.up()
    b = await h.dial()
    await h.ok(a, "bridge", call_control_id=b, play_ringtone=True, ringtone="th")
    assert h.state(a) == "bridging"
    ringing = heard(h, a, await h.outputs[a].collect(10))
    assert share(ringing, 400) > 0.9, "Thai ringback: 400 Hz"
    assert share(ringing, 440) + share(ringing, 480) < 0.01, "not the US default"
    await h.answered(b)
    await h.receiver.next("call.bridged", a)
    await h.outputs[a].collect(3)
    assert is_silent(heard(h, a, await h.outputs[a].collect(10))), "ringback stops on answer"
    await h.media(b, PCMA_8K)
    h.speak(b, 1000)
    await h.outputs[a].collect(3)
    assert share(heard(h, a, await h.outputs[a].collect(20)), 1000) > 0.9


async def test_without_play_ringtone_the_caller_hears_silence_while_the_peer_rings(
    h: Harness,
) -> None:
    a = await h.up()
    b = await h.dial()
    await h.ok(a, "bridge", call_control_id=b)
    await h.outputs[a].collect(2)
    assert is_silent(heard(h, a, await h.outputs[a].collect(10)))


async def test_ringback_starts_when_the_callers_media_starts_after_the_bridge(
    h: Harness,
) -> None:
    a = await h.up(media=None)
    b = await h.dial()
    await h.ok(a, "bridge", call_control_id=b, play_ringtone=True)
    await h.media(a)
    ringing = heard(h, a, await h.outputs[a].collect(10))
    assert share(ringing, 440) + share(ringing, 480) > 0.9, "US ringback: 440 + 480 Hz"


# ---- DTMF -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mute_dtmf", "b_hears_a", "a_hears_b"),
    [
        ("none", True, True),
        ("opposite", False, True),
        ("self", True, False),
        ("both", False, False),
    ],
)
async def test_out_of_band_dtmf_is_relayed_unless_muted(
    h: Harness, mute_dtmf: str, b_hears_a: bool, a_hears_b: bool
) -> None:
    # Two codecs: the tick mixes the room. Both far ends stream silence, as providers do all
    # call long: a listener is sent frames while its speaker's keep coming.
    a, b = await h.up(media=PCMU_8K), await h.up(media=PCMA_8K)
    await h.bridged(a, b, mute_dtmf=mute_dtmf)
    h.speak(a, 0)
    h.speak(b, 0)
    for speaker, listener, hears in [(a, b, b_hears_a), (b, a, a_hears_b)]:
        await h.runtime.media_dtmf(speaker, "5")
        hook = await h.receiver.next("call.dtmf.received", speaker)  # the webhook is always sent
        assert hook.payload["digit"] == "5"
        got = heard(h, listener, await h.outputs[listener].collect(12))
        level = min(share(got, f) for f in DIGIT_5)
        if hears:
            assert level > 0.3, (speaker, listener)
        else:
            assert is_silent(got), (speaker, listener)


async def test_send_dtmf_plays_the_digits_on_the_leg(h: Harness) -> None:
    a = await h.up()
    await h.ok(a, "send_dtmf", digits="5", duration_millis=200)
    got = heard(h, a, await h.outputs[a].collect(10))
    assert min(share(got, f) for f in DIGIT_5) > 0.3


# ---- playback ---------------------------------------------------------------------------------
async def test_playback_of_a_local_wav_to_its_end(h: Harness, tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "media" / "prompt.wav", 660, 0.3)
    a = await h.up()
    await h.ok(a, "playback_start", audio_url=wav.as_uri())
    started = await h.receiver.next("call.playback.started", a)
    assert (started.payload["media_url"], started.payload["overlay"]) == (wav.as_uri(), False)
    got = heard(h, a, await h.outputs[a].collect(8))
    assert share(got, 660) > 0.9
    ended = await h.receiver.next("call.playback.ended", a)
    assert (ended.payload["status"], ended.payload["media_url"]) == ("completed", wav.as_uri())
    await h.outputs[a].collect(2)
    assert is_silent(heard(h, a, await h.outputs[a].collect(5)))


async def test_a_playback_started_before_the_media_plays_once_it_starts(
    h: Harness, tmp_path: Path
) -> None:
    wav = write_wav(tmp_path / "media" / "early.wav", 660, 0.3)
    a = await h.up(media=None)
    await h.ok(a, "playback_start", audio_url=wav.as_uri())
    await h.receiver.next("call.playback.started", a)
    await h.media(a)
    assert share(heard(h, a, await h.outputs[a].collect(8)), 660) > 0.9
    ended = await h.receiver.next("call.playback.ended", a)
    assert ended.payload["status"] == "completed"


async def test_playback_stop_cancels_and_a_missing_file_is_reported(
    h: Harness, tmp_path: Path
) -> None:
    wav = write_wav(tmp_path / "media" / "long.wav", 660, 5.0)
    a = await h.up()
    await h.ok(a, "playback_start", audio_url=wav.as_uri(), loop="infinity")
    await h.receiver.next("call.playback.started", a)
    await h.ok(a, "playback_stop")
    assert (await h.receiver.next("call.playback.ended", a)).payload["status"] == "cancelled"
    # A file that is gone by the time the media plays (checked when the command came):
    # call.playback.ended says file_not_found.
    gone = write_wav(tmp_path / "media" / "gone.wav", 660, 0.3)
    b = await h.up(media=None)
    await h.ok(b, "playback_start", audio_url=gone.as_uri())
    await h.receiver.next("call.playback.started", b)
    gone.unlink()
    await h.media(b)
    assert (await h.receiver.next("call.playback.ended", b)).payload["status"] == "file_not_found"


async def test_playback_to_the_opposite_leg_and_a_hangup_ends_it(h: Harness) -> None:
    a, b = await h.up(), await h.up(media=PCMA_8K)
    await h.bridged(a, b, park_after_unbridge="self")
    h.speak(a, 0)  # both far ends stream their silence
    h.speak(b, 0)
    await h.ok(a, "playback_start", media_name="tone-700", target_legs="opposite", loop="infinity")
    await h.receiver.next("call.playback.started", a)
    await h.outputs[b].collect(2)
    assert share(heard(h, b, await h.outputs[b].collect(10)), 700) > 0.9
    assert is_silent(heard(h, a, await h.outputs[a].collect(5)))
    await h.ok(a, "hangup")
    assert (await h.receiver.next("call.playback.ended", a)).payload["status"] == "call_hangup"
    await h.outputs[b].collect(2)
    assert is_silent(heard(h, b, await h.outputs[b].collect(5)))


# ---- recording --------------------------------------------------------------------------------
async def test_record_start_and_stop_write_a_wav(h: Harness, settings: Settings) -> None:
    a = await h.up(media=PCMU_8K)
    b = await h.up(media=PCMA_8K)
    h.speak(a, 440)
    h.speak(b, 1000)
    await h.bridged(a, b)
    await h.outputs[a].collect(3)
    await h.ok(a, "record_start", format="wav", channels="dual")
    await h.outputs[a].collect(25)
    await h.ok(a, "record_stop")
    saved = await h.receiver.next("call.recording.saved", a)
    payload = saved.payload
    assert payload["channels"] == "dual" and payload["recording_id"]
    url = payload["recording_urls"]["wav"]
    assert url.startswith(f"{settings.public_url}/v2/recordings/")
    assert payload["public_recording_urls"] == {"wav": url}
    status, content_type, body = await h.download(url)  # signed: no token needed
    assert (status, content_type) == (200, "audio/wav")
    with wave.open(io.BytesIO(body), "rb") as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (2, 2, 8000)
        samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    assert samples.size >= 2 * 8000 * 0.3
    spoken, heard_ = samples[0::2], samples[1::2]
    assert share(spoken[-2000:], 440) > 0.9, "left: what the leg said"
    assert share(heard_[-2000:], 1000) > 0.9, "right: what the leg heard"
    assert h.receiver.types(a)[-2:] == ["call.bridged", "call.recording.saved"]


async def test_a_recording_is_saved_when_the_leg_hangs_up(h: Harness) -> None:
    a = await h.up()
    await h.ok(a, "record_start", format="wav", channels="single")
    await h.outputs[a].collect(3)
    await h.hung_up(a, HangupCause.NORMAL_CLEARING)
    saved = await h.receiver.next("call.recording.saved", a)
    status, content_type, _ = await h.download(saved.payload["recording_urls"]["wav"])
    assert (status, content_type) == (200, "audio/wav"), "the call is over, the link still works"
    assert h.receiver.types(a)[-2:] == ["call.hangup", "call.recording.saved"]


async def test_a_recording_started_before_the_media_records_it(h: Harness) -> None:
    a = await h.up(media=None)
    await h.ok(a, "record_start", format="wav", channels="single")
    await h.media(a, PCMA_8K)
    h.speak(a, 440)
    await h.outputs[a].collect(15)
    await h.ok(a, "record_stop")
    saved = await h.receiver.next("call.recording.saved", a)
    path = await h.recording_file(saved.payload["recording_urls"]["wav"])
    with wave.open(str(path), "rb") as reader:
        samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    assert samples.size > 8000 * 0.1 and share(samples, 440) > 0.9


# ---- provider lanes ---------------------------------------------------------------------------
class GatedGateway(RecordingGateway):
    """Holds every ``answer`` until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    async def answer(self, call_control_id: str) -> None:
        self.entered.set()
        await self.release.wait()
        await super().answer(call_control_id)


async def test_provider_calls_run_in_order_per_leg_without_holding_up_others(
    h: Harness,
) -> None:
    gated = GatedGateway()
    slow = await h.incoming()
    h.runtime.bind(slow, gated)
    await h.ok(slow, "answer")
    await asyncio.wait_for(gated.entered.wait(), 5)
    await h.ok(slow, "hangup")  # queued behind the answer on the same leg
    other = await h.incoming()
    await h.ok(other, "reject", cause="CALL_REJECTED")
    await h.receiver.next("call.hangup", other)
    await h.gateway.wait("reject", other)
    assert gated.calls == [], "the slow leg's calls are still held"
    gated.release.set()
    await h.runtime.settle()
    assert gated.ops(slow) == ["answer", "hangup"]


async def test_a_failing_provider_never_strands_later_effects(h: Harness) -> None:
    h.gateway.fail("hangup", "gone at the provider")
    a, b = await h.up(), await h.up()
    await h.bridged(a, b)
    await h.ok(a, "hangup")  # a's provider hangup fails; b is still hung up and told so
    await h.receiver.next("call.hangup", a)
    await h.receiver.next("call.hangup", b)
    await h.runtime.settle()
    assert h.gateway.ops(a)[-1] == "hangup" and h.gateway.ops(b)[-1] == "hangup"
    assert h.state(a) == h.state(b) == "hangup"


async def test_ended_legs_are_forgotten_after_their_retention(h: Harness) -> None:
    a, b = await h.up(media=None), await h.up(media=None)
    await h.ok(a, "hangup")
    assert await h.runtime.prune() == [], "kept for an hour: commands get 90018"
    assert (await h.act(a, "hangup")).status == 422
    assert await h.runtime.prune(retention_s=0) == [a]
    assert a not in {leg.call_control_id for leg in (await h.runtime.store.load_live()).legs}
    assert (await h.act(a, "hangup")).status == 404
    assert h.state(b) == "answered"


async def test_closing_the_runtime_cancels_timers_and_waits_for_provider_calls(
    h: Harness,
) -> None:
    leg = await h.dial(timeout_secs=20)
    assert h.timers.pending
    await h.runtime.close()
    assert h.timers.pending == {}
    assert h.gateway.ops(leg) == ["dial"]
