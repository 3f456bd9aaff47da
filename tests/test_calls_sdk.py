"""The official ``telnyx`` SDK, pointed at callbridge with ``base_url``, drives the whole
command set, parses our responses, raises its typed errors on ours, and verifies our webhooks
with its own Ed25519 verification and the key from ``GET /v2/public_key``."""

from __future__ import annotations

import base64
import inspect
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import telnyx
from telnyx.lib.webhook_verification import WebhookVerificationError, verify_webhook_signature

from engine.config import Settings
from engine.machine.model import TimerKind
from tests.call_fakes import Harness, b64, write_wav


@pytest.fixture
async def h(aiohttp_server, aiohttp_client, settings: Settings) -> Harness:  # type: ignore[no-untyped-def]
    return await Harness.start(aiohttp_client, aiohttp_server, settings)


@pytest.fixture
async def sdk(h: Harness) -> AsyncIterator[telnyx.AsyncTelnyx]:
    async with h.sdk() as client:
        yield client


async def unwrap(sdk: telnyx.AsyncTelnyx, payload: str, headers: dict[str, str], key: str) -> Any:
    """``client.webhooks.unwrap``: the SDK's ED25519 patch (telnyx.lib.webhooks_ed25519) makes
    the async client's a coroutine; the generated one is a plain method."""
    event = sdk.webhooks.unwrap(payload, headers=headers, key=key)
    return await event if inspect.isawaitable(event) else event


async def public_key(h: Harness) -> str:
    reply = await h.request("GET", "/v2/public_key")
    assert reply.status == 200, reply
    return str(reply.body["data"]["public_key"])


async def test_the_sdk_drives_every_command(
    h: Harness, sdk: telnyx.AsyncTelnyx, tmp_path: Path
) -> None:
    actions = sdk.calls.actions
    # An incoming call, answered and bridged with a dialled one.
    a = await h.incoming()
    answered = await actions.answer(a, client_state=b64("a"), command_id="answer-1")
    assert answered.data is not None and answered.data.result == "ok"
    await h.answered(a)
    await h.media(a)
    dialed = await sdk.calls.dial(
        connection_id=h.bridge["slug"],
        from_="+15550001111",
        to="+15550003333",
        timeout_secs=20,
        time_limit_secs=600,
        client_state=b64("b"),
    )
    assert dialed.data is not None and dialed.data.is_alive is False
    b = dialed.data.call_control_id
    assert dialed.data.call_leg_id and dialed.data.call_session_id
    assert dialed.data.client_state == b64("b")
    assert h.timers.delay(b, TimerKind.RING_TIMEOUT) == 20
    await h.answered(b)
    await h.media(b)
    bridged = await actions.bridge(
        a,
        call_control_id_to_bridge_with=b,
        park_after_unbridge="self",
        mute_dtmf="none",
        play_ringtone=False,
        ringtone="uk",
        prevent_double_bridge=False,
        record="record-from-answer",
        record_format="wav",
        record_channels="single",
    )
    assert bridged.data is not None and bridged.data.result == "ok"
    await h.receiver.next("call.bridged", a)
    await h.receiver.next("call.bridged", b)
    assert h.room_of(a) == h.room_of(b) is not None
    # Media commands.
    await actions.send_dtmf(a, digits="1#", duration_millis=100)
    wav = write_wav(tmp_path / "media" / "hi.wav", 500, 0.2)  # the media directory
    await actions.start_playback(a, audio_url=wav.as_uri(), target_legs="both", overlay=False)
    await h.receiver.next("call.playback.started", a)
    await actions.stop_playback(a)
    await h.receiver.next("call.playback.ended", a)
    await actions.stop_recording(a)  # the bridge's record-from-answer
    await h.receiver.next("call.recording.saved", a)
    await actions.start_recording(a, format="wav", channels="dual", recording_track="both")
    await actions.pause_recording(a)
    assert h.runtime.machine.leg(a).recording_paused
    recording_id = h.runtime.machine.leg(a).recording_id
    assert recording_id is not None
    await actions.resume_recording(a, recording_id=recording_id)
    assert not h.runtime.machine.leg(a).recording_paused
    await actions.stop_recording(a)
    await h.receiver.next("call.recording.saved", a)
    # State, status.
    updated = await actions.update_client_state(a, client_state=b64("a2"))
    assert updated.data is not None and updated.data.result == "ok"
    status = await sdk.calls.retrieve_status(a)
    assert status.data is not None
    assert (status.data.call_control_id, status.data.is_alive) == (a, True)
    assert status.data.client_state == b64("a2") and status.data.record_type == "call"
    assert isinstance(status.data.call_duration, int)
    # Queues: b leaves the bridge for a queue (a is parked), then leaves it.
    await actions.enqueue(b, queue_name="support", max_wait_time_secs=60)
    await h.receiver.next("call.enqueued", b)
    assert h.state(a) == "parked"
    await actions.leave_queue(b)
    await h.receiver.next("call.dequeued", b)
    await actions.bridge(b, call_control_id_to_bridge_with=a)
    # callbridge's own unbridge, through the SDK's generic client.
    result = await sdk.post(f"/calls/{a}/actions/unbridge", body={}, cast_to=object)
    assert result == {"data": {"result": "ok"}}
    # Ending calls.
    await actions.hangup(a)
    c = await h.incoming()
    await actions.reject(c, cause="USER_BUSY")
    hangup = await h.receiver.next("call.hangup", c)
    assert hangup.payload["hangup_cause"] == "user_busy"
    ended = await sdk.calls.retrieve_status(a)
    assert ended.data is not None and ended.data.is_alive is False
    await h.runtime.settle()
    assert h.gateway.ops(a) == ["answer", "hangup"] and h.gateway.ops(c) == ["reject"]


async def test_the_sdk_raises_its_typed_errors_on_ours(h: Harness, sdk: telnyx.AsyncTelnyx) -> None:
    actions = sdk.calls.actions
    with pytest.raises(telnyx.NotFoundError) as not_found:
        await actions.hangup("v3:unknown")
    assert not_found.value.status_code == 404
    assert not_found.value.body["errors"][0]["code"] == "10005"  # type: ignore[index]
    leg = await h.incoming()
    with pytest.raises(telnyx.UnprocessableEntityError) as bad:
        await actions.reject(leg, cause="BECAUSE")  # type: ignore[arg-type]
    assert bad.value.body["errors"][0]["source"] == {"pointer": "/cause"}  # type: ignore[index]
    with pytest.raises(telnyx.UnprocessableEntityError) as bad_state:
        await actions.answer(leg, client_state="not base64")
    assert bad_state.value.body["errors"][0]["source"] == {"pointer": "/client_state"}  # type: ignore[index]
    await actions.hangup(leg)
    with pytest.raises(telnyx.UnprocessableEntityError) as ended:
        await actions.hangup(leg)
    error = ended.value.body["errors"][0]  # type: ignore[index]
    assert (error["code"], error["title"]) == ("90018", "Call has already ended")
    other = telnyx.AsyncTelnyx(
        api_key=h.other_org.token, base_url=str(h.client.make_url("/v2")), max_retries=0
    )
    async with other:
        with pytest.raises(telnyx.NotFoundError):
            await other.calls.retrieve_status(leg)
    wrong = telnyx.AsyncTelnyx(
        api_key="not-a-token", base_url=str(h.client.make_url("/v2")), max_retries=0
    )
    async with wrong:
        with pytest.raises(telnyx.AuthenticationError):
            await wrong.calls.retrieve_status(leg)


async def test_the_sdk_verifies_our_webhooks(h: Harness, sdk: telnyx.AsyncTelnyx) -> None:
    key = await public_key(h)
    a = await h.up(client_state=b64("state"))
    await h.ok(a, "hangup")
    await h.receiver.next("call.hangup", a)
    hooks = h.receiver.of(a)
    assert [x.event_type for x in hooks] == [
        "call.initiated",
        "call.answered",
        "streaming.started",
        "call.hangup",
    ]
    for hook in hooks:
        payload = hook.raw.decode()
        event = await unwrap(sdk, payload, hook.headers, key)
        assert event.data is not None and event.data.event_type == hook.event_type
        verify_webhook_signature(payload, hook.headers, key)
        with pytest.raises((ValueError, WebhookVerificationError), match=r"[Ss]ignature"):
            await unwrap(sdk, payload.replace("state", "stat3"), hook.headers, key)
        with pytest.raises(WebhookVerificationError):
            verify_webhook_signature(payload + " ", hook.headers, key)
        other_key = base64.b64encode(bytes(32)).decode()
        with pytest.raises((ValueError, WebhookVerificationError)):
            await unwrap(sdk, payload, hook.headers, other_key)
    answered = await unwrap(sdk, hooks[1].raw.decode(), hooks[1].headers, key)
    assert answered.data.payload.client_state == b64("state")
    hangup = await unwrap(sdk, hooks[-1].raw.decode(), hooks[-1].headers, key)
    assert hangup.data.payload.hangup_cause == "normal_clearing"
