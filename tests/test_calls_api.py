"""The Call Control API through the real app: every command, its errors, and its webhooks.

Legs are created the way an adapter will create them (``Harness.incoming``/``up``) on a
recording fake gateway; webhooks are delivered by the app's own outbox loop to a receiver on
127.0.0.1. Audio behaviour (ringback, mixing, DTMF relay, recordings) is in test_runtime.py.
"""

from __future__ import annotations

import base64
import itertools
import socket
import time
from typing import Any

import orjson
import pytest

from engine.api.keys import LIVE_LEGS
from engine.config import Settings
from engine.machine.commands import ACTIONS
from engine.machine.model import TimerKind
from engine.webhooks.signing import verify
from tests.call_fakes import Harness, b64, share, tone_frames, write_wav

pytestmark = pytest.mark.both_databases  # the same tests on SQLite and on PostgreSQL


@pytest.fixture
async def h(aiohttp_server, aiohttp_client, settings: Settings) -> Harness:  # type: ignore[no-untyped-def]
    return await Harness.start(aiohttp_client, aiohttp_server, settings)


def error(reply: Any, status: int, code: str, pointer: str | None = None) -> dict[str, Any]:
    assert reply.status == status, reply
    assert list(reply.body) == ["errors"], reply.body
    (err,) = reply.body["errors"]
    assert err["code"] == code, err
    assert err["title"] and err["detail"], err
    if pointer is not None:
        assert err["source"] == {"pointer": pointer}, err
    return err  # type: ignore[no-any-return]


# ---- authentication and addressing ----------------------------------------------------------
async def test_a_missing_or_bad_bearer_token_is_401(h: Harness) -> None:
    leg = await h.up(media=None)
    for authorization in [
        None,
        "",
        "Bearer",
        "Bearer wrong-token",
        "Token {token}",
        "Basic {token}",
    ]:
        headers = (
            {}
            if authorization is None
            else {"Authorization": authorization.format(token=h.org.token)}
        )
        for method, path in [
            ("POST", f"/v2/calls/{leg}/actions/hangup"),
            ("GET", f"/v2/calls/{leg}"),
            ("POST", "/v2/calls"),
            ("PUT", f"/v2/calls/{leg}/actions/client_state_update"),
        ]:
            resp = await h.client.request(
                method, path, headers=headers, json={"client_state": "aGk="}
            )
            body = await resp.json()
            assert resp.status == 401, (authorization, method, path, body)
            assert body["errors"][0]["code"] == "10009"
    assert h.state(leg) == "answered", "nothing was done"


async def test_an_unknown_leg_is_404(h: Harness) -> None:
    error(await h.act("v3:nope", "hangup"), 404, "10005")
    error(await h.request("GET", "/v2/calls/v3:nope"), 404, "10005")
    reply = await h.request(
        "PUT", "/v2/calls/v3:nope/actions/client_state_update", {"client_state": "aGk="}
    )
    error(reply, 404, "10005")


async def test_another_organizations_leg_is_404_and_shows_none_of_its_data(h: Harness) -> None:
    leg = await h.up(media=None, client_state=b64("secret-state"))
    for reply in [
        await h.act(leg, "hangup", org=h.other_org),
        await h.act(leg, "bridge", org=h.other_org, call_control_id=leg),
        await h.request("GET", f"/v2/calls/{leg}", org=h.other_org),
        await h.request(
            "PUT",
            f"/v2/calls/{leg}/actions/client_state_update",
            {"client_state": "aGk="},
            org=h.other_org,
        ),
    ]:
        error(reply, 404, "10005")
        text = orjson.dumps(reply.body).decode()
        assert b64("secret-state") not in text and "+1555000" not in text
    assert h.state(leg) == "answered"
    assert h.runtime.machine.leg(leg).client_state == b64("secret-state")


async def test_another_organization_cannot_bridge_with_or_link_to_a_leg(h: Harness) -> None:
    mine = await h.up(media=None)
    theirs = await h.incoming(org=h.other_org)
    await h.answered(theirs)
    error(await h.act(mine, "bridge", call_control_id=theirs), 404, "10005", "/call_control_id")
    reply = await h.request(
        "POST",
        "/v2/calls",
        {"connection_id": "c", "from": "+15550001111", "to": "+15550003333", "link_to": theirs},
    )
    error(reply, 404, "10005", "/link_to")
    assert h.state(mine) == h.state(theirs) == "answered"


async def test_an_unknown_action_is_404(h: Harness) -> None:
    leg = await h.up(media=None)
    error(await h.act(leg, "teleport"), 404, "10005", "/action")
    error(await h.act(leg, "speak", payload="hi", voice="female"), 404, "10005", "/action")


# ---- bodies -----------------------------------------------------------------------------------
BAD_PARAMETERS: list[tuple[str, dict[str, Any], str, str]] = [
    ("bridge", {}, "/call_control_id", "10004"),
    ("bridge", {"call_control_id": 5}, "/call_control_id", "10015"),
    ("bridge", {"call_control_id": "x", "queue": "q"}, "/queue", "10015"),
    ("bridge", {"call_control_id": "x", "mute_dtmf": "loud"}, "/mute_dtmf", "10015"),
    ("bridge", {"call_control_id": "x", "ringtone": "xx"}, "/ringtone", "10015"),
    (
        "bridge",
        {"call_control_id": "x", "park_after_unbridge": "other"},
        "/park_after_unbridge",
        "10015",
    ),
    ("bridge", {"call_control_id": "x", "play_ringtone": "yes"}, "/play_ringtone", "10015"),
    ("bridge", {"call_control_id": "x", "record_max_length": 99999}, "/record_max_length", "10015"),
    ("reject", {}, "/cause", "10004"),
    ("reject", {"cause": "BECAUSE"}, "/cause", "10015"),
    ("enqueue", {}, "/queue_name", "10004"),
    ("enqueue", {"queue_name": "q", "max_wait_time_secs": 0}, "/max_wait_time_secs", "10015"),
    ("record_start", {"format": "wav"}, "/channels", "10004"),
    ("record_start", {"format": "ogg", "channels": "single"}, "/format", "10015"),
    ("playback_start", {}, "/audio_url", "10004"),
    ("playback_start", {"audio_url": "ftp://example.com/a.wav"}, "/audio_url", "10015"),
    ("playback_start", {"media_name": "tone-440", "loop": "forever"}, "/loop", "10015"),
    ("send_dtmf", {}, "/digits", "10004"),
    ("send_dtmf", {"digits": "12x"}, "/digits", "10015"),
    ("send_dtmf", {"digits": "1", "duration_millis": 5}, "/duration_millis", "10015"),
    ("answer", {"webhook_url": "ftp://x"}, "/webhook_url", "10015"),
    ("hangup", {"client_state": "not base64!"}, "/client_state", "10015"),
    ("client_state_update", {}, "/client_state", "10004"),
    ("client_state_update", {"client_state": "%%%"}, "/client_state", "10015"),
]


async def test_bad_parameters_are_422_naming_the_field(h: Harness) -> None:
    leg = await h.incoming()
    for action, body, pointer, code in BAD_PARAMETERS:
        method = "PUT" if action == "client_state_update" else "POST"
        reply = await h.request(method, f"/v2/calls/{leg}/actions/{action}", body)
        try:
            error(reply, 422, code, pointer)
        except AssertionError as exc:
            raise AssertionError(f"{action} {body}: {exc}") from None
    assert h.state(leg) == "initiated", "a refused command changes nothing"
    assert h.runtime.machine.leg(leg).client_state is None
    assert h.runtime.machine.leg(leg).queue_name is None


BAD_DIALS: list[tuple[dict[str, Any], str, str]] = [
    ({"from": "+15550001111", "to": "+15550003333"}, "/connection_id", "10004"),
    ({"connection_id": "c", "to": "+15550003333"}, "/from", "10004"),
    ({"connection_id": "c", "from": "12345", "to": "+15550003333"}, "/from", "10016"),
    ({"connection_id": "c", "from": "+15550001111", "to": "nowhere"}, "/to", "10016"),
    ({"connection_id": "c", "from": "+15550001111", "to": ["+1555", "+1556"]}, "/to", "10015"),
    (
        {"connection_id": "c", "from": "+15550001111", "to": "+15550003333", "timeout_secs": 1},
        "/timeout_secs",
        "10015",
    ),
    (
        {
            "connection_id": "c",
            "from": "+15550001111",
            "to": "+15550003333",
            "time_limit_secs": 10**6,
        },
        "/time_limit_secs",
        "10015",
    ),
    (
        {
            "connection_id": "c",
            "from": "+15550001111",
            "to": "+15550003333",
            "bridge_on_answer": True,
        },
        "/link_to",
        "10004",
    ),
    (
        {"connection_id": "c", "from": "+15550001111", "to": "+15550003333", "client_state": "!"},
        "/client_state",
        "10015",
    ),
    (
        {"connection_id": "c", "from": "+15550001111", "to": "+15550003333", "link_to": "v3:none"},
        "/link_to",
        "10005",
    ),
]


@pytest.mark.parametrize(
    ("action", "body", "field"),
    [
        (
            "playback_start",
            {"media_name": "tone-440", "playback_content": "AAAA"},
            "playback_content",
        ),
        ("answer", {"preferred_codecs": "PCMA"}, "preferred_codecs"),
        ("hangup", {"custom_headers": []}, "custom_headers"),
    ],
)
async def test_a_call_control_field_callbridge_does_not_carry_out_is_refused(
    h: Harness, action: str, body: dict[str, Any], field: str
) -> None:
    leg = await h.up()
    reply = await h.act(leg, action, **body)
    assert reply.status == 422, reply
    assert reply.body["errors"][0]["source"] == {"pointer": f"/{field}"}
    dial = {"connection_id": h.bridge["slug"], "from": "+15550001111", "to": "+15550003333"}
    reply = await h.request("POST", "/v2/calls", {**dial, "stream_url": "wss://x.example/s"})
    assert reply.status == 422 and reply.body["errors"][0]["source"] == {"pointer": "/stream_url"}


async def test_bad_dial_parameters_are_refused_naming_the_field(h: Harness) -> None:
    for body, pointer, code in BAD_DIALS:
        reply = await h.request("POST", "/v2/calls", body)
        try:
            error(reply, 404 if code == "10005" else 422, code, pointer)
        except AssertionError as exc:
            raise AssertionError(f"{body}: {exc}") from None
    await h.runtime.settle()
    assert h.gateway.dials == []


async def test_a_body_that_is_not_a_json_object_is_422(h: Harness) -> None:
    leg = await h.up(media=None)
    headers = {"Authorization": f"Bearer {h.org.token}", "Content-Type": "application/json"}
    for raw in [b"{not json", b"[1, 2]", b'"text"']:
        for path in [f"/v2/calls/{leg}/actions/hangup", "/v2/calls"]:
            resp = await h.client.post(path, data=raw, headers=headers)
            body = await resp.json()
            assert resp.status == 422, (raw, path, body)
            assert body["errors"][0]["code"] == "10015"
    assert h.state(leg) == "answered"


async def test_an_empty_body_is_an_empty_command(h: Harness) -> None:
    leg = await h.up(media=None)
    resp = await h.client.post(
        f"/v2/calls/{leg}/actions/hangup", headers={"Authorization": f"Bearer {h.org.token}"}
    )
    assert (resp.status, await resp.json()) == (200, {"data": {"result": "ok"}})


async def test_an_oversized_body_is_413(h: Harness, settings: Settings) -> None:
    leg = await h.up(media=None)
    big: dict[str, Any] = {"client_state": b64("x" * settings.max_body_bytes)}
    error(await h.act(leg, "hangup", **big), 413, "10015")
    assert h.state(leg) == "answered"


async def test_a_command_on_an_ended_leg_is_422_90018(h: Harness) -> None:
    a = await h.up(media=None)
    b = await h.up(media=None)
    await h.ok(a, "hangup")
    commands: list[tuple[str, dict[str, Any]]] = [
        ("hangup", {}),
        ("answer", {}),
        ("bridge", {"call_control_id": b}),
        ("send_dtmf", {"digits": "1"}),
        ("enqueue", {"queue_name": "q"}),
    ]
    for action, body in commands:
        err = error(await h.act(a, action, **body), 422, "90018")
        assert err["title"] == "Call has already ended"
    err = error(await h.act(b, "bridge", call_control_id=a), 422, "90018", "/call_control_id")
    assert err["title"] == "Call has already ended"
    reply = await h.request(
        "PUT", f"/v2/calls/{a}/actions/client_state_update", {"client_state": "aGk="}
    )
    error(reply, 422, "90018")
    assert h.state(b) == "answered"


async def test_a_command_the_state_refuses_is_422_and_changes_nothing(h: Harness) -> None:
    leg = await h.incoming()
    err = error(await h.act(leg, "enqueue", queue_name="q"), 422, "10015")
    assert "initiated" in err["detail"]
    error(await h.act(leg, "unbridge"), 422, "10015")
    assert h.state(leg) == "initiated"


# ---- every command answers {"data": {"result": "ok"}} --------------------------------------
async def test_every_action_answers_ok(h: Harness, tmp_path: Any) -> None:
    wav = write_wav(tmp_path / "media" / "hello.wav", 440, 0.2)
    a, b = await h.incoming(), await h.incoming()
    done: set[str] = set()

    async def ok(leg: str, action: str, **body: Any) -> None:
        await h.ok(leg, action, **body)
        done.add(action)

    await ok(a, "answer")
    await h.answered(a)
    await h.media(a)
    await ok(b, "reject", cause="USER_BUSY")
    c = await h.up()
    reply = await h.request(
        "PUT", f"/v2/calls/{a}/actions/client_state_update", {"client_state": b64("s")}
    )
    assert (reply.status, reply.body) == (200, {"data": {"result": "ok"}})
    await ok(a, "client_state_update", client_state=b64("t"))  # POST works too
    await ok(a, "send_dtmf", digits="12#")
    await ok(a, "playback_start", audio_url=wav.as_uri())
    await ok(a, "playback_stop")
    await ok(a, "gather", maximum_digits=2)
    await ok(a, "gather_stop")
    await ok(a, "gather_using_audio", audio_url=wav.as_uri())
    await ok(a, "gather_stop")
    await ok(a, "record_start", format="wav", channels="single")
    await ok(a, "record_pause")
    await ok(a, "record_resume")
    await ok(a, "record_stop")
    with socket.create_server(("127.0.0.1", 0)) as silent:  # takes the TCP connection, says nothing
        url = f"ws://127.0.0.1:{silent.getsockname()[1]}/stream"
        await ok(a, "streaming_start", stream_url=url)
        await ok(a, "streaming_stop")  # while its websocket is still opening
    await ok(a, "enqueue", queue_name="sales")
    await ok(a, "leave_queue")
    await ok(a, "bridge", call_control_id=c)
    s = await h.dial(supervise_call_control_id=a, supervisor_role="monitor")
    await h.answered(s)
    await ok(s, "switch_supervisor_role", role="whisper")
    await ok(a, "unbridge")
    await ok(a, "hangup")
    assert done == set(ACTIONS)
    await h.runtime.settle()


# ---- status, dial, public key ---------------------------------------------------------------
async def test_call_status(h: Harness) -> None:
    leg = await h.up(media=None, client_state=b64("hello"))
    data = await h.status(leg)
    core = h.runtime.machine.leg(leg)
    assert data == {
        "record_type": "call",
        "call_control_id": leg,
        "call_leg_id": core.call_leg_id,
        "call_session_id": core.call_session_id,
        "client_state": b64("hello"),
        "is_alive": True,
        "call_duration": data["call_duration"],
        "state": "answered",
        "start_time": data["start_time"],
        "end_time": None,
        "media": None,  # no media stream yet (engine/media_plane/stats.py)
    }
    assert isinstance(data["call_duration"], int) and 0 <= data["call_duration"] <= 2
    assert data["start_time"].endswith("Z")
    await h.ok(leg, "hangup")
    data = await h.status(leg)
    assert data["is_alive"] is False and data["state"] == "hangup" and data["end_time"]


async def test_answer_webhook_url_receives_the_later_events(h: Harness) -> None:
    leg = await h.incoming()
    own = h.receiver.url + "?app=answered"
    await h.ok(leg, "answer", webhook_url=own)
    await h.answered(leg)
    initiated = await h.receiver.next("call.initiated", leg)
    answered = await h.receiver.next("call.answered", leg)
    assert initiated.body["meta"]["delivered_to"] == h.receiver.url
    assert answered.body["meta"]["delivered_to"] == own


async def test_dial_uses_the_bridge_named_by_connection_id(h: Harness) -> None:
    reply = await h.request(
        "POST",
        "/v2/calls",
        {
            "connection_id": h.bridge["slug"],
            "from": "+15550001111",
            "to": "+15550003333",
            "timeout_secs": 15,
            "client_state": b64("dialed"),
        },
    )
    assert reply.status == 200, reply
    data = reply.body["data"]
    leg = data["call_control_id"]
    assert data["record_type"] == "call" and data["is_alive"] is False
    assert data["call_leg_id"] and data["call_session_id"] and data["client_state"] == b64("dialed")
    assert h.resolver.asked == [(h.org.org_id, h.bridge["slug"], "+15550003333")]
    await h.runtime.settle()
    (dial,) = h.gateway.dials
    assert (dial.call_control_id, dial.from_, dial.to, dial.timeout_secs) == (
        leg,
        "+15550001111",
        "+15550003333",
        15,
    )
    hook = await h.receiver.next("call.initiated", leg)  # the bridge's webhook_url
    assert hook.payload["direction"] == "outgoing" and hook.payload["state"] == "parked"
    assert hook.payload["client_state"] == b64("dialed")
    assert hook.body["meta"] == {"attempt": 1, "delivered_to": h.receiver.url}
    assert (await h.status(leg))["state"] == "dialing"


async def test_dial_webhook_url_overrides_the_bridges(h: Harness) -> None:
    own = h.receiver.url + "?app=own"
    leg = await h.dial(webhook_url=own)
    hook = await h.receiver.next("call.initiated", leg)
    assert hook.body["meta"]["delivered_to"] == own


async def test_a_repeated_dial_command_id_places_one_call(h: Harness) -> None:
    first = await h.dial(command_id="dial-1")
    second = await h.dial(command_id="dial-1")
    third = await h.dial(command_id="dial-2")
    await h.runtime.settle()
    assert first == second != third
    assert [d.call_control_id for d in h.gateway.dials] == [first, third]


async def test_dial_link_to_with_bridge_on_answer(h: Harness) -> None:
    a = await h.up()
    b = await h.dial(link_to=a, bridge_on_answer=True)
    assert h.runtime.machine.leg(b).call_session_id == h.runtime.machine.leg(a).call_session_id
    hook = await h.receiver.next("call.initiated", b)
    assert hook.payload["state"] == "bridging"
    await h.answered(b)
    await h.media(b)
    await h.receiver.next("call.answered", b)
    await h.receiver.next("call.bridged", b)
    await h.receiver.next("call.bridged", a)
    assert h.state(a) == h.state(b) == "bridged"
    assert h.room_of(a) is not None and h.room_of(a) == h.room_of(b)


async def test_timeout_secs_ends_an_unanswered_dial_with_cause_timeout(h: Harness) -> None:
    leg = await h.dial(timeout_secs=15)
    assert h.timers.delay(leg, TimerKind.RING_TIMEOUT) == 15
    h.timers.fire(leg, TimerKind.RING_TIMEOUT)
    hook = await h.receiver.next("call.hangup", leg)
    assert hook.payload["hangup_cause"] == "timeout"
    assert hook.payload["hangup_source"] == "caller"
    await h.runtime.settle()
    assert h.gateway.ops(leg) == ["dial", "hangup"]
    assert h.receiver.types(leg) == ["call.initiated", "call.hangup"]


async def test_an_answer_cancels_the_ring_timeout(h: Harness) -> None:
    leg = await h.dial(timeout_secs=15)
    await h.answered(leg)
    with pytest.raises(AssertionError):
        h.timers.key(leg, TimerKind.RING_TIMEOUT)
    assert h.state(leg) == "answered"


async def test_time_limit_secs_ends_an_answered_leg_with_cause_time_limit(h: Harness) -> None:
    leg = await h.dial(time_limit_secs=60)
    await h.answered(leg)
    assert h.timers.delay(leg, TimerKind.TIME_LIMIT) == 60
    h.timers.fire(leg, TimerKind.TIME_LIMIT)
    hook = await h.receiver.next("call.hangup", leg)
    assert hook.payload["hangup_cause"] == "time_limit"
    assert h.receiver.types(leg) == ["call.initiated", "call.answered", "call.hangup"]
    await h.runtime.settle()
    assert h.gateway.ops(leg) == ["dial", "hangup"]


async def test_public_key_verifies_the_webhooks(h: Harness) -> None:
    reply = await h.request("GET", "/v2/public_key")
    assert reply.status == 200, reply
    key = reply.body["data"]["public_key"]
    assert len(base64.b64decode(key)) == 32
    assert reply.body["data"]["keys"][0]["public_key"] == key
    leg = await h.incoming()
    hook = await h.receiver.next("call.initiated", leg)
    stamp = hook.headers["telnyx-timestamp"]
    signature = base64.b64decode(hook.headers["telnyx-signature-ed25519"])
    assert abs(int(stamp) - time.time()) < 60
    assert verify(base64.b64decode(key), hook.raw, signature, stamp)
    assert not verify(base64.b64decode(key), hook.raw + b" ", signature, stamp)


# ---- webhooks ---------------------------------------------------------------------------------
async def test_webhooks_are_telnyx_shaped_and_in_order_per_leg(h: Harness) -> None:
    a = await h.up(client_state=b64("a-state"))
    b = await h.up()
    await h.ok(a, "bridge", call_control_id=b)
    await h.ok(a, "hangup")
    await h.receiver.next("call.hangup", b)  # b was left behind with no policy: hung up
    a_hooks = await h.receiver.count(5, a)
    assert [x.event_type for x in a_hooks] == [
        "call.initiated",
        "call.answered",
        "streaming.started",
        "call.bridged",
        "call.hangup",
    ]
    for hook in a_hooks:
        data = hook.body["data"]
        assert set(data) == {"record_type", "event_type", "id", "occurred_at", "payload"}
        assert data["record_type"] == "event" and data["occurred_at"].endswith("Z")
        assert hook.body["meta"] == {"attempt": 1, "delivered_to": h.receiver.url}
        payload = data["payload"]
        assert payload["call_control_id"] == a and payload["connection_id"] == h.bridge["slug"]
        assert {"call_leg_id", "call_session_id", "from", "to"} <= set(payload)
    # client_state was set by answer, so call.initiated has none and every later one has it.
    assert [x.payload["client_state"] for x in a_hooks] == [None] + [b64("a-state")] * 4
    assert len({x.body["data"]["id"] for x in h.receiver.hooks}) == len(h.receiver.hooks)
    hangup = a_hooks[-1].payload
    assert (hangup["hangup_cause"], hangup["hangup_source"], hangup["state"]) == (
        "normal_clearing",
        "callee",
        "hangup",
    )


# ---- bridge semantics -------------------------------------------------------------------------
async def test_bridge_puts_both_legs_in_one_room(h: Harness) -> None:
    a, b = await h.up(), await h.up()
    await h.ok(a, "bridge", call_control_id=b)
    first = await h.receiver.next("call.bridged", a)
    second = await h.receiver.next("call.bridged", b)
    assert first.payload["call_control_id"] == a and second.payload["call_control_id"] == b
    room = h.room_of(a)
    assert room is not None and h.room_of(b) == room
    assert set(h.runtime.plane.mixer.members(room)) == {a, b}
    assert h.state(a) == h.state(b) == "bridged"
    assert (await h.status(a))["state"] == "bridged"


async def test_a_bridge_waits_for_media_that_starts_later(h: Harness) -> None:
    a, b = await h.up(media=None), await h.up(media=None)
    await h.bridged(a, b)
    assert h.room_of(a) is None  # no media yet: nothing to mix, and no error
    await h.media(a)
    await h.media(b)
    assert h.room_of(a) is not None and h.room_of(a) == h.room_of(b)


@pytest.mark.parametrize(
    ("options", "fate"),
    [
        ({"park_after_unbridge": "self"}, "parked"),
        ({"hold_after_unbridge": True}, "held"),
        ({}, "hangup"),
    ],
)
async def test_bridging_a_bridged_leg_moves_it_and_the_peer_left_follows_its_policy(
    h: Harness, options: dict[str, Any], fate: str
) -> None:
    a, b, c = await h.up(), await h.up(), await h.up()
    await h.bridged(a, b, **options)
    await h.bridged(c, b)  # b moves to c
    assert h.room_of(b) is not None and h.room_of(b) == h.room_of(c)
    assert h.room_of(a) is None
    assert h.state(a) == fate
    await h.runtime.settle()
    if fate == "hangup":
        hook = await h.receiver.next("call.hangup", a)
        assert hook.payload["hangup_cause"] == "normal_clearing"
        assert h.gateway.ops(a) == ["answer", "hangup"]
    else:
        assert h.gateway.ops(a) == ["answer"]
        assert "call.hangup" not in await h.barrier(a)
        assert (await h.status(a))["is_alive"] is True


async def test_prevent_double_bridge_refuses_to_move_a_bridged_leg(h: Harness) -> None:
    a, b, c = await h.up(), await h.up(), await h.up()
    await h.bridged(a, b)
    room = h.room_of(a)
    reply = await h.act(c, "bridge", call_control_id=b, prevent_double_bridge=True)
    err = error(reply, 422, "10015", "/call_control_id")
    assert "prevent_double_bridge" in err["detail"]
    assert h.room_of(a) == h.room_of(b) == room and h.room_of(c) is None
    assert h.state(c) == "answered"


async def test_bridging_with_itself_or_an_ended_leg_is_refused(h: Harness) -> None:
    a, b = await h.up(), await h.up()
    error(await h.act(a, "bridge", call_control_id=a), 422, "10015", "/call_control_id")
    await h.hung_up(b)
    error(await h.act(a, "bridge", call_control_id=b), 422, "90018", "/call_control_id")
    error(await h.act(a, "bridge", call_control_id="v3:unknown"), 404, "10005", "/call_control_id")
    assert h.state(a) == "answered" and h.room_of(a) is None


async def test_the_far_end_hanging_up_ends_the_bridge(h: Harness) -> None:
    a, b = await h.up(), await h.up()
    await h.bridged(a, b, park_after_unbridge="self")
    await h.hung_up(b)
    hook = await h.receiver.next("call.hangup", b)
    assert (hook.payload["hangup_cause"], hook.payload["hangup_source"]) == (
        "normal_clearing",
        "caller",
    )
    assert h.state(a) == "parked" and h.room_of(a) is None
    assert await h.client.app[LIVE_LEGS].count_for_bridge(h.bridge["id"]) == 1


async def test_unbridge_parks_the_leg_and_the_peer_follows_its_own_policy(h: Harness) -> None:
    a, b, c, d = await h.up(), await h.up(), await h.up(), await h.up()
    await h.bridged(a, b)  # b is the target: no policy of its own, so it is hung up
    await h.ok(a, "unbridge")
    assert h.state(a) == "parked" and h.room_of(a) is None
    hook = await h.receiver.next("call.hangup", b)
    assert hook.payload["hangup_cause"] == "normal_clearing"
    await h.bridged(d, c, park_after_unbridge="self")
    await h.ok(c, "unbridge")
    assert h.state(c) == h.state(d) == "parked"
    assert h.room_of(c) is None and h.room_of(d) is None
    # A parked leg can be bridged again.
    await h.bridged(a, c)
    assert h.room_of(a) == h.room_of(c) is not None


# ---- queues ------------------------------------------------------------------------------------
async def test_queue_enqueue_bridge_with_head_and_leave(h: Harness) -> None:
    a, b, agent = await h.up(), await h.up(), await h.up()
    await h.ok(a, "enqueue", queue_name="support")
    await h.ok(b, "enqueue", queue_name="support", max_wait_time_secs=120)
    first = await h.receiver.next("call.enqueued", a)
    second = await h.receiver.next("call.enqueued", b)
    assert (first.payload["queue"], first.payload["current_position"]) == ("support", 1)
    assert second.payload["current_position"] == 2
    assert h.timers.delay(b, TimerKind.QUEUE_WAIT) == 120
    await h.ok(agent, "bridge", queue="support")
    dequeued = await h.receiver.next("call.dequeued", a)
    assert (dequeued.payload["reason"], dequeued.payload["queue_position"]) == ("bridged", 1)
    await h.receiver.next("call.bridged", agent)
    await h.receiver.next("call.bridged", a)
    assert h.room_of(a) == h.room_of(agent) is not None
    await h.ok(b, "leave_queue")
    left = await h.receiver.next("call.dequeued", b)
    assert left.payload["reason"] == "leave"
    assert h.state(b) == "parked"
    err = error(await h.act(b, "bridge", queue="support"), 422, "10015", "/queue")
    assert "empty" in err["detail"]
    error(await h.act(b, "leave_queue"), 422, "10015")


async def test_the_queue_wait_limit_parks_the_call(h: Harness) -> None:
    a = await h.up()
    await h.ok(a, "enqueue", queue_name="support", max_wait_time_secs=30)
    h.timers.fire(a, TimerKind.QUEUE_WAIT)
    hook = await h.receiver.next("call.dequeued", a)
    assert hook.payload["reason"] == "timeout"
    assert h.state(a) == "parked"


# ---- command_id and client_state --------------------------------------------------------------
async def test_a_repeated_command_id_is_carried_out_once(h: Harness) -> None:
    a = await h.incoming()
    await h.ok(a, "answer", command_id="c-1")
    await h.ok(a, "answer", command_id="c-1")  # a repeat: ok, nothing done
    error(await h.act(a, "answer", command_id="c-2"), 422, "10015")  # a new one is refused
    await h.runtime.settle()
    assert h.gateway.ops(a) == ["answer"]
    await h.answered(a)
    await h.ok(a, "enqueue", queue_name="q", command_id="c-3")
    await h.ok(a, "enqueue", queue_name="q", command_id="c-3")
    assert await h.barrier(a) == ["call.initiated", "call.answered", "call.enqueued"]
    # The same command_id on another leg is another command.
    b = await h.incoming()
    await h.ok(b, "answer", command_id="c-1")
    await h.runtime.settle()
    assert h.gateway.ops(b) == ["answer"]


async def test_client_state_is_echoed_on_every_later_webhook(h: Harness) -> None:
    a, b = await h.incoming(), await h.up()
    first, second = b64("first"), b64("second")
    await h.ok(a, "answer", client_state=first)
    await h.answered(a)
    await h.media(a)
    assert (await h.receiver.next("call.answered", a)).payload["client_state"] == first
    reply = await h.request(
        "PUT", f"/v2/calls/{a}/actions/client_state_update", {"client_state": second}
    )
    assert reply.status == 200
    assert (await h.status(a))["client_state"] == second
    await h.ok(a, "bridge", call_control_id=b)
    await h.ok(b, "hangup")
    hooks = await h.receiver.count(5, a)
    assert [x.payload["client_state"] for x in hooks] == [None, first, first, second, second]
    assert [x.event_type for x in hooks][-2:] == ["call.bridged", "call.hangup"]
    # b's webhooks never carry a's state.
    assert all(x.payload["client_state"] is None for x in h.receiver.of(b))


async def test_client_state_must_be_base64(h: Harness) -> None:
    a = await h.incoming()
    err = error(await h.act(a, "answer", client_state="not base64"), 422, "10015", "/client_state")
    assert "base64" in err["detail"]
    assert h.state(a) == "initiated"
    await h.runtime.settle()
    assert h.gateway.ops(a) == []


# ---- hangup, reject, provider failures ---------------------------------------------------------
async def test_hangup_and_reject(h: Harness) -> None:
    a, b = await h.up(), await h.incoming()
    await h.ok(a, "hangup")
    await h.ok(b, "reject", cause="USER_BUSY")
    hangup = (await h.receiver.next("call.hangup", a)).payload
    assert (hangup["hangup_cause"], hangup["hangup_source"]) == ("normal_clearing", "callee")
    rejected = (await h.receiver.next("call.hangup", b)).payload
    assert (rejected["hangup_cause"], rejected["sip_hangup_cause"]) == ("user_busy", "486")
    await h.runtime.settle()
    assert h.gateway.ops(a) == ["answer", "hangup"] and h.gateway.ops(b) == ["reject"]
    assert [c.value for _, c in h.gateway.rejects] == ["USER_BUSY"]
    assert {a, b} <= set(h.gateway.forgotten)
    assert await h.client.app[LIVE_LEGS].count_for_bridge(h.bridge["id"]) == 0


async def test_a_failed_provider_answer_ends_the_leg_with_a_webhook(h: Harness) -> None:
    h.gateway.fail("answer")
    a = await h.incoming()
    await h.ok(a, "answer")  # accepted: the provider call runs after the reply
    hook = await h.receiver.next("call.hangup", a)
    assert (hook.payload["hangup_cause"], hook.payload["hangup_source"]) == (
        "unspecified",
        "unknown",
    )
    await h.runtime.settle()
    assert h.gateway.ops(a) == ["answer", "hangup"], "the provider is told to hang up too"
    assert (await h.status(a))["is_alive"] is False
    assert await h.client.app[LIVE_LEGS].count_for_bridge(h.bridge["id"]) == 0
    error(await h.act(a, "hangup"), 422, "90018")


async def test_a_failed_dial_ends_the_new_leg_with_a_webhook(h: Harness) -> None:
    h.gateway.fail("dial", "number unreachable")
    leg = await h.dial()
    hook = await h.receiver.next("call.hangup", leg)
    assert hook.payload["hangup_cause"] == "unspecified"
    assert h.receiver.types(leg) == ["call.initiated", "call.hangup"]
    await h.runtime.settle()
    assert h.gateway.ops(leg) == ["dial", "hangup"]
    assert h.timers.pending == {}, "its ring timer is gone"


async def test_a_failed_provider_hangup_still_ends_the_leg(h: Harness) -> None:
    h.gateway.fail("hangup")
    a = await h.up()
    await h.ok(a, "hangup")
    await h.receiver.next("call.hangup", a)
    await h.runtime.settle()
    assert h.state(a) == "hangup"
    assert h.receiver.types(a).count("call.hangup") == 1


def hold_tone_frames(h: Harness, leg: str, frames: list[bytes]) -> list[int]:
    samples = h.outputs[leg].samples(frames)
    windows = [samples[i * 160 : (i + 1) * 160] for i in range(len(frames))]
    return [i for i, window in enumerate(windows) if share(window, 440) > 0.5]


async def test_a_held_leg_hears_the_tone_on_hold_until_a_bridge_takes_it_off_hold(
    h: Harness,
) -> None:
    a, b, c = await h.up(), await h.up(), await h.up()
    await h.bridged(a, b, hold_after_unbridge=True)
    await h.bridged(c, b)  # b moves to c: a is left behind, held
    assert h.state(a) == "held"
    output = h.outputs[a]
    start = len(output.frames)
    await output.collect(230)  # 4.6 s: at least one whole burst of the 4 s cadence
    tone = hold_tone_frames(h, a, output.frames[start:])
    # 300 ms bursts (15 frames, 16 if one straddles a frame) 4 s apart, silence between.
    # The first one may have begun before the frames looked at (then frame 0 is no start: its
    # spacing to the next would read short): the last is whole.
    bursts = [i for i in tone if i - 1 not in tone and i > 0]
    assert 1 <= len(bursts) <= 2 and all(199 <= j - i <= 201 for i, j in itertools.pairwise(bursts))
    assert 14 <= len([i for i in tone if bursts[-1] <= i < bursts[-1] + 20]) <= 16, tone
    assert len(tone) <= 32, tone  # and nothing else but silence
    await h.bridged(a, c)  # a is taken off hold: c hears a, a hears c, no tone
    assert h.state(a) == "bridged"
    # A pair in passthrough: each frame c says is a frame a hears, nothing else is added.
    said = tone_frames(1000, h.outputs[c].fmt)
    start = len(output.frames)
    for _ in range(40):
        h.runtime.media_frame(c, next(said))
    if len(output.frames) < start + 40:  # not yet forwarded: still mixed for a tick or two
        await output.collect(start + 40 - len(output.frames))
    heard = h.outputs[a].samples(output.frames[start : start + 40])
    frames = [heard[i * 160 : (i + 1) * 160] for i in range(40)]
    assert all(share(f, 1000) > 0.5 and share(f, 440) < 0.01 for f in frames)
