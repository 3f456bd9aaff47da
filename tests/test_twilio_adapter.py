"""The Twilio adapter through the real app, with the Twilio simulator as Twilio.

Numbers are connected through the platform API (which provisions them on the simulator), calls
are placed by the simulator with signed webhooks and real media streams, and applications
command legs through the Call Control API. Refusals are checked for what they leave behind:
no leg, no live channel, and other calls' audio undisturbed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from structlog.testing import capture_logs

from adapters.leg_tokens import DEFAULT_TTL_S, LegTokens
from adapters.simulators import Callee, CallState, ToneSource, TwilioCall, TwilioSimulator
from adapters.twilio.gateway import MEDIA_PATH, STATUS_PATH, VOICE_PATH
from adapters.twilio.signature import compute_signature
from adapters.twilio.twiml import Hangup, Reject, parse_twiml
from adapters.twilio.webhooks import CallbackOrder, TwilioStatus
from tests.platform_client import BRIDGES
from tests.twilio_env import (
    SECRET_KEY,
    WAIT_S,
    AppHooks,
    TwilioEnv,
    assert_hears,
    record_after,
)

NUMBER = "+15550001111"
SECOND_NUMBER = "+15550001112"
CALLER = "+15557654321"
CALLEE = "+15559990000"


@pytest.fixture
async def sim() -> AsyncIterator[TwilioSimulator]:
    async with TwilioSimulator() as simulator:
        yield simulator


@pytest.fixture
async def env(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, sim: TwilioSimulator
) -> TwilioEnv:
    return await TwilioEnv.start(aiohttp_server, aiohttp_client, tmp_path, sim)


@pytest.fixture
async def hooks(aiohttp_server: Any) -> AppHooks:
    return await AppHooks.start(aiohttp_server)


def voice_form(env: TwilioEnv, to: str = NUMBER, **changes: str) -> dict[str, str]:
    return {
        "AccountSid": env.sim.account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": "CA" + "1" * 32,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "From": CALLER,
        "To": to,
        **changes,
    }


async def post_form(
    env: TwilioEnv, path: str, form: dict[str, str], signature: str | None
) -> tuple[int, str]:
    headers = {"X-Twilio-Signature": signature} if signature is not None else {}
    resp = await env.client.post(path, data=form, headers=headers)
    return resp.status, await resp.text()


def sign(env: TwilioEnv, path: str, form: dict[str, str], token: str | None = None) -> str:
    return compute_signature(token or env.sim.auth_token, env.public_url + path, form)


def twiml_of(call: TwilioCall) -> list[Any]:
    return [parse_twiml(r.response) for r in call.events if r.kind == "voice" and r.ok]


async def completed_delivered(call: TwilioCall) -> None:
    """Wait until callbridge has answered the call's ``completed`` status callback."""
    await call.wait_until(
        lambda c: any(r.kind == "completed" and r.status is not None for r in c.events)
    )


# --- provisioning ---------------------------------------------------------------------------------


async def test_connecting_a_number_points_it_at_callbridge_and_disconnecting_resets_it(
    env: TwilioEnv,
) -> None:
    bridge = await env.bridge("Support", (NUMBER,))
    number = env.sim.numbers[NUMBER]
    assert number.voice_url == env.public_url + VOICE_PATH
    assert number.voice_method == "POST"
    # A voice webhook callbridge answers 5xx (an input it failed on) comes back as a fallback.
    assert number.voice_fallback_url == env.public_url + VOICE_PATH
    assert number.voice_fallback_method == "POST"
    assert number.status_callback == env.public_url + STATUS_PATH
    lookup = next(r for r in env.sim.requests if r.path.endswith("/IncomingPhoneNumbers.json"))
    assert lookup.query == {"PhoneNumber": [NUMBER]}
    assert lookup.auth == ("basic", env.sim.account_sid, env.sim.auth_token)

    reply = await env.org.call(
        "POST", f"{BRIDGES}{bridge['slug']}/disconnect-provider/", {"phone_number": NUMBER}
    )
    assert reply.status == 200, reply.text
    assert number.voice_url is None
    assert number.voice_fallback_url is None
    assert number.status_callback is None


async def test_connecting_a_number_with_a_twiml_app_clears_it_and_calls_then_arrive(
    env: TwilioEnv,
) -> None:
    # Twilio ignores VoiceUrl while the number has a VoiceApplicationSid: calls would go to
    # the app (here one without a voice URL, so they fail) however connect had set VoiceUrl.
    app_sid = env.sim.add_application()
    number = env.sim.add_number(NUMBER, voice_application_sid=app_sid)
    await env.bridge("Support", (NUMBER,))
    update = next(
        r for r in env.sim.requests if r.method == "POST" and r.path.endswith(f"/{number.sid}.json")
    )
    assert update.form["VoiceApplicationSid"] == [""]
    assert number.voice_application_sid is None
    assert number.voice_url == env.public_url + VOICE_PATH
    call = await env.sim.place_inbound_call(CALLER, NUMBER, source=ToneSource(440))
    await call.wait_for(CallState.STREAMING)
    assert call.routed_to == "voice_url"
    assert call.protocol_errors == []


async def test_a_number_on_a_sip_trunk_is_refused_and_left_as_it_was(env: TwilioEnv) -> None:
    trunk = "TK" + "7" * 32
    number = env.sim.add_number(NUMBER, voice_url="https://pbx.example/voice", trunk_sid=trunk)
    bridge = await env.org.create_bridge("Support")
    reply = await env.connect(bridge["slug"], NUMBER)
    assert reply.status == 400, reply.text
    assert reply.body["status_code"] == 400
    assert f"phone number {NUMBER} is on Twilio SIP trunk {trunk}" in reply.text
    assert "remove the number from the trunk" in reply.text
    # Looked up, never changed, and not connected on callbridge's side either.
    assert [r.method for r in env.sim.requests if "IncomingPhoneNumbers" in r.path] == ["GET"]
    assert (number.trunk_sid, number.voice_url) == (trunk, "https://pbx.example/voice")
    got = await env.org.call("GET", f"{BRIDGES}{bridge['slug']}/")
    assert got.body["data"]["numbers"] == []


async def test_a_number_not_on_the_account_cannot_be_connected(env: TwilioEnv) -> None:
    bridge = await env.org.create_bridge("Support")
    reply = await env.connect(bridge["slug"], "+15550009999")
    assert reply.status == 400, reply.text
    assert "phone number +15550009999 is not on this Twilio account" in reply.text
    got = await env.org.call("GET", f"{BRIDGES}{bridge['slug']}/")
    assert got.body["data"]["numbers"] == []


async def test_an_unreachable_twilio_is_a_provider_error(env: TwilioEnv) -> None:
    config = await env.org.create_config(
        "twilio",
        name="Nowhere",
        account_sid="AC" + "3" * 32,
        auth_token=env.sim.auth_token,
        api_base_url="http://127.0.0.1:1",
    )
    bridge = await env.org.create_bridge("Support")
    reply = await env.org.call(
        "POST",
        f"{BRIDGES}{bridge['slug']}/connect-provider/",
        {"provider_config_id": config["id"], "phone_number": NUMBER},
    )
    assert reply.status == 502, reply.text
    assert "Twilio is unreachable at http://127.0.0.1:1" in reply.text


# --- webhook verification and inbound routing -----------------------------------------------------


async def test_a_bad_or_missing_signature_is_403_and_creates_no_leg(env: TwilioEnv) -> None:
    await env.bridge("Support", (NUMBER,))
    form = voice_form(env)
    for signature in [
        None,
        "",
        "bm90IGEgc2lnbmF0dXJl",
        sign(env, VOICE_PATH, form, token="another-accounts-token"),
        sign(env, VOICE_PATH, {**form, "From": "+15550000000"}),  # signed other fields
        sign(env, VOICE_PATH + "?x=1", form),  # signed another URL
    ]:
        status, text = await post_form(env, VOICE_PATH, form, signature)
        assert status == 403, (signature, text)
    # Signed with the right token, but for another account.
    other = voice_form(env, AccountSid="AC" + "2" * 32)
    status, _ = await post_form(env, VOICE_PATH, other, sign(env, VOICE_PATH, other))
    assert status == 403
    assert env.leg_count() == 0 and await env.live_count(NUMBER) == 0

    # The same request, signed as Twilio signs it, is accepted (answered into the conference).
    status, text = await post_form(env, VOICE_PATH, form, sign(env, VOICE_PATH, form))
    assert status == 200 and "<Connect><Stream" in text, text
    assert env.leg_count() == 1


async def test_status_callbacks_are_verified_and_unknown_calls_acknowledged(
    env: TwilioEnv,
) -> None:
    await env.bridge("Support", (NUMBER,))
    call = await env.sim.place_inbound_call(CALLER, NUMBER, source=ToneSource(440))
    await call.wait_for(CallState.STREAMING)
    leg = env.leg_of(call)
    completed = voice_form(env, CallSid=call.sid, CallStatus="completed", SequenceNumber="9")
    for signature in [None, "bm90IGEgc2lnbmF0dXJl", sign(env, STATUS_PATH, completed, "x")]:
        status, _ = await post_form(env, STATUS_PATH, completed, signature)
        assert status == 403
    assert env.state(leg) == "bridged", "a forged callback ends nothing"
    # Unknown calls and in-progress statuses change nothing either, and are acknowledged.
    unknown = voice_form(env, CallSid="CA" + "9" * 32, CallStatus="completed")
    assert (await post_form(env, STATUS_PATH, unknown, sign(env, STATUS_PATH, unknown)))[0] == 200
    ringing = voice_form(env, CallSid=call.sid, CallStatus="ringing")
    assert (await post_form(env, STATUS_PATH, ringing, sign(env, STATUS_PATH, ringing)))[0] == 200
    assert env.state(leg) == "bridged"
    # The caller hangs up: Twilio's completed callback ends the leg and frees the channel.
    await call.hang_up()
    await completed_delivered(call)
    ended = env.runtime.machine.leg(leg)
    assert ended.hangup_cause is not None and ended.hangup_cause.value == "normal_clearing"
    assert ended.hangup_source is not None and ended.hangup_source.value == "caller"
    assert await env.live_count(NUMBER) == 0 and len(env.kit.legs) == 0
    # A late, reordered callback for the ended call is harmless.
    late = voice_form(env, CallSid=call.sid, CallStatus="in-progress")
    assert (await post_form(env, STATUS_PATH, late, sign(env, STATUS_PATH, late)))[0] == 200


async def test_a_draft_bridge_rejects_busy(env: TwilioEnv) -> None:
    await env.bridge("Draft", (NUMBER,), status="DRAFT")
    call = await env.sim.place_inbound_call(CALLER, NUMBER)
    await call.wait_for(CallState.ENDED)
    assert call.end_reason == "busy"
    assert twiml_of(call) == [(Reject("busy"),)]
    assert env.leg_count() == 0


async def test_a_number_at_its_channels_count_rejects_busy_until_a_channel_frees(
    env: TwilioEnv,
) -> None:
    bridge = await env.bridge("Support", (NUMBER,))
    capped = await env.org.call(
        "POST",
        f"{BRIDGES}{bridge['slug']}/connect-provider/",
        {"provider_config_id": env.config["id"], "phone_number": NUMBER, "channels_count": 1},
    )
    assert capped.status == 200, capped.text
    first = await env.sim.place_inbound_call(CALLER, NUMBER, source=ToneSource(440))
    await first.wait_for(CallState.STREAMING)
    second = await env.sim.place_inbound_call("+15557654322", NUMBER)
    await second.wait_for(CallState.ENDED)
    assert (second.end_reason, twiml_of(second)) == ("busy", [(Reject("busy"),)])
    assert await env.live_count(NUMBER) == 1

    await first.hang_up()
    third = await env.sim.place_inbound_call("+15557654323", NUMBER)
    await third.wait_for(CallState.STREAMING)
    assert await env.live_count(NUMBER) == 1


async def test_a_number_on_no_bridge_is_rejected_and_logged(env: TwilioEnv) -> None:
    env.sim.add_number(SECOND_NUMBER, voice_url=env.public_url + VOICE_PATH)
    with capture_logs() as logs:
        call = await env.sim.place_inbound_call(CALLER, SECOND_NUMBER)
        await call.wait_for(CallState.ENDED)
    assert twiml_of(call) == [(Reject("rejected"),)]
    assert call.end_reason == "no-answer"
    assert any(
        e["event"] == "twilio call to a number on no bridge rejected" and e["to"] == SECOND_NUMBER
        for e in logs
    ), logs
    assert env.leg_count() == 0


# --- the application decides ----------------------------------------------------------------------


async def test_the_voice_webhook_is_held_until_the_application_rejects(
    env: TwilioEnv, hooks: AppHooks
) -> None:
    await env.bridge("Support", (NUMBER, SECOND_NUMBER), webhook_url=hooks.url)
    busy = await env.sim.place_inbound_call(CALLER, NUMBER)
    leg = (await hooks.next("call.initiated")).leg
    assert busy.state is CallState.RINGING and not busy.events, "no TwiML before the decision"
    await env.act(leg, "reject", {"cause": "USER_BUSY"})
    await busy.wait_for(CallState.ENDED)
    assert (busy.end_reason, twiml_of(busy)) == ("busy", [(Reject("busy"),)])
    hangup = await hooks.next("call.hangup", leg)
    assert hangup.payload["hangup_cause"] == "user_busy"

    rejected = await env.sim.place_inbound_call(CALLER, SECOND_NUMBER)
    leg = (await hooks.next("call.initiated")).leg
    await env.act(leg, "reject", {"cause": "CALL_REJECTED"})
    await rejected.wait_for(CallState.ENDED)
    assert twiml_of(rejected) == [(Reject("rejected"),)]
    assert await env.live_count(NUMBER) == await env.live_count(SECOND_NUMBER) == 0


async def test_a_caller_who_hangs_up_while_held_ends_the_leg_as_originator_cancel(
    env: TwilioEnv, hooks: AppHooks
) -> None:
    await env.bridge("Support", (NUMBER,), webhook_url=hooks.url)
    call = await env.sim.place_inbound_call(CALLER, NUMBER)
    leg = (await hooks.next("call.initiated")).leg
    await call.hang_up()  # still ringing: Twilio reports it canceled
    hangup = await hooks.next("call.hangup", leg)
    assert (hangup.payload["hangup_cause"], hangup.payload["hangup_source"]) == (
        "originator_cancel",
        "caller",
    )
    await call.wait_until(lambda c: any(r.kind == "voice" for r in c.events))
    assert twiml_of(call) == [(Hangup(),)], "the held webhook is released"
    assert await env.live_count(NUMBER) == 0 and len(env.kit.legs) == 0
    status, reply = await env.api("POST", f"/v2/calls/{leg}/actions/answer", {})
    assert (status, reply["errors"][0]["code"]) == (422, "90018")


async def test_an_undecided_call_is_rejected_busy_after_the_timeout(
    env: TwilioEnv, hooks: AppHooks
) -> None:
    env.kit.decision_timeout_s = 0.3
    await env.bridge("Support", (NUMBER,), webhook_url=hooks.url)
    call = await env.sim.place_inbound_call(CALLER, NUMBER)
    leg = (await hooks.next("call.initiated")).leg
    await call.wait_for(CallState.ENDED)
    assert (call.end_reason, twiml_of(call)) == ("busy", [(Reject("busy"),)])
    hangup = await hooks.next("call.hangup", leg)
    assert (hangup.payload["hangup_cause"], hangup.payload["sip_hangup_cause"]) == (
        "timeout",
        "486",
    )
    assert await env.live_count(NUMBER) == 0
    status, reply = await env.api("POST", f"/v2/calls/{leg}/actions/answer", {})
    assert (status, reply["errors"][0]["code"]) == (422, "90018"), "too late to answer"


async def test_an_outbound_dial_is_placed_answered_streamed_and_hung_up_through_rest(
    env: TwilioEnv, hooks: AppHooks
) -> None:
    bridge = await env.bridge("Support", (NUMBER,), webhook_url=hooks.url)
    env.sim.set_callee(CALLEE, Callee("answer", ring_ms=100, source=lambda: ToneSource(700)))
    caller = await env.sim.place_inbound_call(CALLER, NUMBER, source=ToneSource(440))
    leg_a = (await hooks.next("call.initiated")).leg
    await env.act(leg_a, "answer")
    await caller.wait_for(CallState.STREAMING)

    status, reply = await env.api(
        "POST",
        "/v2/calls",
        {
            "connection_id": bridge["slug"],
            "from": NUMBER,
            "to": CALLEE,
            "timeout_secs": 20,
            "link_to": leg_a,
            "bridge_on_answer": True,
        },
    )
    assert status == 200, reply
    leg_b = reply["data"]["call_control_id"]
    create = await env.sim.wait_for_request(lambda r: r.path.endswith("/Calls.json"))
    assert create.auth == ("basic", env.sim.account_sid, env.sim.auth_token)
    query = f"?leg={leg_b}"
    assert create.form == {
        "To": [CALLEE],
        "From": [NUMBER],
        "Url": [env.public_url + VOICE_PATH + query],
        "StatusCallback": [env.public_url + STATUS_PATH + query],
        "StatusCallbackMethod": ["POST"],
        "StatusCallbackEvent": ["initiated", "ringing", "answered", "completed"],
        "Timeout": ["20"],
    }
    callee = await env.sim.wait_for_call(lambda c: c.direction == "outbound")
    await callee.wait_for(CallState.STREAMING)
    await hooks.next("call.answered", leg_b)
    await hooks.next("call.bridged", leg_b)
    await asyncio.gather(record_after(caller, 0.2), record_after(callee, 0.2))
    heard_a, heard_b = await asyncio.gather(record_after(caller, 0.6), record_after(callee, 0.6))
    assert_hears(heard_a, (700.0,), 440.0)
    assert_hears(heard_b, (440.0,), 700.0)

    await env.act(leg_b, "hangup")
    hangup = await env.sim.wait_for_request(lambda r: r.path.endswith(f"/Calls/{callee.sid}.json"))
    assert hangup.form == {"Status": ["completed"]} and hangup.status == 200
    await callee.wait_for(CallState.ENDED)
    assert callee.end_reason == "completed"
    # A was bridged without park_after_unbridge: it is hung up through REST as well.
    await caller.wait_for(CallState.ENDED)
    assert (await hooks.next("call.hangup", leg_a)).payload["hangup_cause"] == "normal_clearing"
    assert len(env.kit.legs) == 0


async def test_out_of_order_status_callbacks_never_move_a_leg_backwards(
    env: TwilioEnv, hooks: AppHooks
) -> None:
    bridge = await env.bridge("Support", (NUMBER,), webhook_url=hooks.url)
    # initiated(0), ringing(1) and in-progress(2) reach callbridge as 2, 1, 0.
    env.sim.callback_order = "reversed"
    env.sim.set_callee(CALLEE, Callee("answer", ring_ms=100))
    with capture_logs() as logs:
        status, reply = await env.api(
            "POST", "/v2/calls", {"connection_id": bridge["slug"], "from": NUMBER, "to": CALLEE}
        )
        assert status == 200, reply
        leg = reply["data"]["call_control_id"]
        callee = await env.sim.wait_for_call(lambda c: c.direction == "outbound")
        await hooks.next("call.answered", leg)
        await callee.wait_until(
            lambda c: any(r.kind == "initiated" and r.status == 200 for r in c.events)
        )
    delivered = [r.kind for r in callee.events if r.kind in ("initiated", "ringing", "answered")]
    assert delivered == ["answered", "ringing", "initiated"], "the simulator reordered them"
    late = [e for e in logs if e["event"] == "late twilio status callback ignored"]
    assert [(e["call_status"], e["sequence_number"]) for e in late] == [
        ("ringing", 1),
        ("initiated", 0),
    ]
    assert {e["latest_status"] for e in late} == {"in-progress"}
    twilio_leg = env.kit.legs.by_id(leg)
    assert twilio_leg is not None and twilio_leg.callbacks.status == "in-progress"
    assert env.state(leg) == "answered"
    assert "call.hangup" not in [h.event_type for h in hooks.hooks if h.leg == leg]

    # A terminal status ends the call even when it seems older than the newest one seen: a
    # call reports exactly one, and nothing after it could bring the call back.
    completed = voice_form(
        env,
        CallSid=callee.sid,
        CallStatus="completed",
        SequenceNumber="1",
        Direction="outbound-api",
    )
    path = f"{STATUS_PATH}?leg={leg}"
    assert (await post_form(env, path, completed, sign(env, path, completed)))[0] == 200
    hangup = await hooks.next("call.hangup", leg)
    assert hangup.payload["hangup_cause"] == "normal_clearing"
    assert env.kit.legs.by_id(leg) is None
    await callee.end("completed")  # Twilio's own completed then finds no leg: acknowledged
    await completed_delivered(callee)
    assert callee.protocol_errors == []


def callback(status: str, seq: int | None = None, at: str | None = None) -> TwilioStatus:
    return TwilioStatus("CA1", "AC1", status, sequence_number=seq, timestamp=at)


T1, T2 = "Tue, 01 Dec 2026 10:00:01 +0000", "Tue, 01 Dec 2026 10:00:02 +0000"


@pytest.mark.parametrize(
    ("arrivals", "admitted", "latest"),
    [
        pytest.param([("in-progress", 2, T2), ("ringing", 1, T1)], [True, False], "in-progress",
                     id="late-ringing-by-sequence"),
        pytest.param([("ringing", 1, T2), ("in-progress", 2, T1)], [True, True], "in-progress",
                     id="sequence-wins-over-timestamp"),
        pytest.param([("in-progress", None, T2), ("ringing", None, T1)], [True, False],
                     "in-progress", id="late-ringing-by-timestamp"),
        pytest.param([("ringing", None, T1), ("in-progress", None, T1)], [True, True],
                     "in-progress", id="same-second-is-not-older"),
        pytest.param([("in-progress", 2, None), ("ringing", None, None)], [True, True], "ringing",
                     id="no-way-to-tell-is-new"),
        pytest.param([("in-progress", 2, T2), ("in-progress", 2, T2)], [True, False],
                     "in-progress", id="a-retried-callback"),
        pytest.param([("ringing", 1, "not a date"), ("initiated", 0, None)], [True, False],
                     "ringing", id="bad-timestamp-ignored"),
    ],
)  # fmt: skip
def test_callback_order_admits_only_the_newest_callback(
    arrivals: list[tuple[str, int | None, str | None]], admitted: list[bool], latest: str
) -> None:
    order = CallbackOrder()
    assert [order.admit(callback(*arrival)) for arrival in arrivals] == admitted
    assert order.status == latest


async def test_a_busy_callee_ends_the_dialled_leg_with_user_busy(
    env: TwilioEnv, hooks: AppHooks
) -> None:
    bridge = await env.bridge("Support", (NUMBER,), webhook_url=hooks.url)
    env.sim.set_callee(CALLEE, Callee("busy", ring_ms=50))
    status, reply = await env.api(
        "POST", "/v2/calls", {"connection_id": bridge["slug"], "from": NUMBER, "to": CALLEE}
    )
    assert status == 200, reply
    leg = reply["data"]["call_control_id"]
    hangup = await hooks.next("call.hangup", leg)
    assert (hangup.payload["hangup_cause"], hangup.payload["hangup_source"]) == (
        "user_busy",
        "callee",
    )
    assert hangup.payload["sip_hangup_cause"] == "486"


async def test_a_refused_dial_ends_the_leg_cleanly(env: TwilioEnv, hooks: AppHooks) -> None:
    bridge = await env.bridge("Support", (NUMBER,), webhook_url=hooks.url)
    # Twilio refuses a From that is not on the account (error 21210).
    status, reply = await env.api(
        "POST", "/v2/calls", {"connection_id": bridge["slug"], "from": CALLER, "to": CALLEE}
    )
    assert status == 200, reply
    leg = reply["data"]["call_control_id"]
    hangup = await hooks.next("call.hangup", leg)
    assert hangup.payload["hangup_cause"] == "unspecified"
    assert len(env.kit.legs) == 0


# --- the media websocket --------------------------------------------------------------------------


def start_frame(token: str | None, call_sid: str) -> dict[str, Any]:
    parameters = {"leg_token": token} if token is not None else {}
    return {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": "AC" + "0" * 32,
            "streamSid": "MZ" + "0" * 32,
            "callSid": call_sid,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": parameters,
        },
        "streamSid": "MZ" + "0" * 32,
    }


CONNECTED = {"event": "connected", "protocol": "Call", "version": "1.0.0"}


async def refusal(
    env: TwilioEnv, frames: list[Any], headers: dict[str, str] | None = None
) -> tuple[int, str]:
    """Open a media socket, send ``frames``, and return the close code and reason."""
    async with env.client.ws_connect(MEDIA_PATH, headers=headers or {}) as ws:
        for frame in frames:
            await ws.send_str(frame if isinstance(frame, str) else orjson.dumps(frame).decode())
        async with asyncio.timeout(WAIT_S):
            message = await ws.receive()
        assert message.type is aiohttp.WSMsgType.CLOSE, message
        return int(message.data), str(message.extra)


async def test_bad_media_sockets_are_closed_with_a_reason_and_other_calls_keep_their_audio(
    env: TwilioEnv,
) -> None:
    numbers = (NUMBER, SECOND_NUMBER, "+15550001113")
    await env.bridge("Conference", numbers)
    a = await env.sim.place_inbound_call(CALLER, numbers[0], source=ToneSource(440))
    b = await env.sim.place_inbound_call("+15557654322", numbers[1], source=ToneSource(700))
    gone = await env.sim.place_inbound_call("+15557654323", numbers[2])
    await asyncio.gather(*(c.wait_for(CallState.STREAMING) for c in (a, b, gone)))
    token_a = env.stream_of(a).parameters["leg_token"]
    leg_a = env.leg_of(a)
    token_gone = env.stream_of(gone).parameters["leg_token"]
    await gone.hang_up()
    await completed_delivered(gone)
    assert len(env.kit.legs) == 2

    expired = LegTokens(SECRET_KEY, lambda: time.time() - 2 * DEFAULT_TTL_S).issue(leg_a)
    forged = LegTokens("another-secret-key-" + "x" * 32, time.time).issue(leg_a)
    wss = env.public_url.replace("http://", "ws://") + MEDIA_PATH
    good_signature = compute_signature(env.sim.auth_token, wss, None)
    cases: list[tuple[list[Any], dict[str, str], int, str]] = [
        ([CONNECTED, start_frame(None, a.sid)], {}, 1008, "no leg_token"),
        ([CONNECTED, start_frame("not-a-token", a.sid)], {}, 1008, "malformed media token"),
        ([CONNECTED, start_frame(forged, a.sid)], {}, 1008, "signature mismatch"),
        ([CONNECTED, start_frame(expired, a.sid)], {}, 1008, "media token expired"),
        ([CONNECTED, start_frame(token_gone, gone.sid)], {}, 1008, "the leg has ended"),
        ([CONNECTED, start_frame(token_a, "CA" + "7" * 32)], {}, 1008, "callSid is not"),
        (
            [CONNECTED, start_frame(token_a, a.sid)],
            {"X-Twilio-Signature": compute_signature("wrong-token", wss, None)},
            1008,
            "bad X-Twilio-Signature",
        ),
        (
            [CONNECTED, start_frame(token_a, a.sid)],
            {"X-Twilio-Signature": good_signature},
            1008,
            "already has a media stream",
        ),
        # Junk before start is dropped and counted, never fatal (issue 10 point 4): this stream
        # is refused for its start, a call that is not the leg's, not for the junk before it.
        (
            [
                CONNECTED,
                "{not json",
                {"event": "media", "streamSid": "MZ1", "media": {"payload": "%%%not base64"}},
                {"event": "hello", "streamSid": "MZ1"},
                {"event": "media", "media": {"payload": ""}},
                start_frame(token_a, "CA" + "7" * 32),
            ],
            {},
            1008,
            "callSid is not",
        ),
        ([CONNECTED, {"event": "start", "start": {}}], {}, 1007, "lacks the 'streamSid'"),
        (["{not json"] * 51, {}, 1007, "flood: more than 50 unusable frames"),
    ]
    with capture_logs() as logs:
        for frames, headers, code, reason in cases:
            got = await refusal(env, frames, headers)
            assert got[0] == code and reason in got[1], (reason, got)
    refused = [e for e in logs if e["event"] == "media stream refused"]
    assert len(refused) == len(cases), logs

    # A and B were never disturbed: still streaming, still hearing each other.
    assert a.state is CallState.STREAMING and b.state is CallState.STREAMING
    assert len(a.streams) == len(b.streams) == 1
    heard_a, heard_b = await asyncio.gather(record_after(a, 0.6), record_after(b, 0.6))
    assert_hears(heard_a, (700.0,), 440.0)
    assert_hears(heard_b, (440.0,), 700.0)
