"""The Telnyx adapter against the Telnyx simulator, through the real app on 127.0.0.1.

Webhook security (signature, window, dedupe, order), admission (DRAFT, channels), the media
socket's refusals, reordered media, dial/hangup through Telnyx's REST API, provisioning.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import websockets
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.exceptions import ConnectionClosed

from adapters.leg_tokens import DEFAULT_TTL_S, LegTokens
from adapters.media_order import MediaOrder
from adapters.simulators import Callee, CallState, TelnyxCall, ToneSource, WebhookFaults
from adapters.simulators.audio import FRAME_SAMPLES, SilenceSource
from adapters.simulators.pacing import Impairments
from adapters.telnyx.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_webhook
from adapters.telnyx.webhooks import build_event
from engine.api.keys import LIVE_LEGS, STORE
from engine.errors import ProviderError
from engine.machine.model import RejectCause
from media.codecs import ULAW_DECODE
from tests.platform_client import BRIDGES
from tests.telnyx_harness import (
    SECRET_KEY,
    Stack,
    caller,
    frame_rows,
    heard_since,
    telnyx_stack,
    tone_margins,
    wait_ticks,
)

NUMBER = "+15550002222"
OTHER = "+15550003333"
WEBHOOK = "/webhooks/telnyx"


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with telnyx_stack(tmp_path) as s:
        yield s


def bearer(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.org.token}"}


async def command(stack: Stack, leg: str, action: str, **body: Any) -> None:
    resp = await stack.client.post(
        f"/v2/calls/{leg}/actions/{action}", json=body, headers=bearer(stack)
    )
    assert resp.status == 200, await resp.text()


def answer_incoming(stack: Stack) -> None:
    """The application answers every incoming leg as soon as it hears of it."""

    async def on_event(data: dict[str, Any]) -> None:
        if data["event_type"] == "call.initiated" and data["payload"]["direction"] == "incoming":
            await command(stack, data["payload"]["call_control_id"], "answer")

    stack.app_server.on_event = on_event


def kinds(call: TelnyxCall) -> list[tuple[str, int | None]]:
    return [(e.kind, e.status) for e in call.events]


def incoming_body(to: str, telnyx_id: str | None = None) -> bytes:
    payload = {
        "call_control_id": telnyx_id or "v3:" + uuid.uuid4().hex,
        "call_leg_id": str(uuid.uuid4()),
        "call_session_id": str(uuid.uuid4()),
        "connection_id": "1",
        "direction": "incoming",
        "from": caller(),
        "to": to,
        "state": "parked",
    }
    event = build_event("call.initiated", payload, str(uuid.uuid4()), datetime.now(UTC))
    return orjson.dumps(event)


def signed(key: Ed25519PrivateKey, body: bytes, at: int) -> dict[str, str]:
    return {SIGNATURE_HEADER: sign_webhook(key, body, at), TIMESTAMP_HEADER: str(at)}


def requests_to(stack: Stack, call: TelnyxCall, action: str) -> list[Any]:
    path = f"/v2/calls/{call.call_control_id}/actions/{action}"
    return [r for r in stack.sim.requests if r.path == path]


# --- provisioning ------------------------------------------------------------------------------


async def test_connecting_a_number_points_it_and_its_connection_at_callbridge(
    stack: Stack,
) -> None:
    connection = stack.sim.connections[stack.connection_id]
    connection.application_name = "Acme support line"
    slug = await stack.bridge(NUMBER)
    number = stack.sim.numbers[NUMBER]
    assert number.connection_id == stack.connection_id
    assert connection.webhook_event_url == stack.base_url + WEBHOOK
    # A webhook callbridge answers 5xx (an input it failed on) comes back through the failover.
    assert connection.webhook_event_failover_url == stack.base_url + WEBHOOK
    # The application update repeats the name it read (the SDK's update params require both
    # application_name and webhook_event_url), so the application is not renamed.
    application = f"/v2/call_control_applications/{stack.connection_id}"
    update = next(r for r in stack.sim.requests if r.path == application and r.method == "PATCH")
    assert update.json == {
        "application_name": "Acme support line",
        "webhook_event_url": stack.base_url + WEBHOOK,
        "webhook_event_failover_url": stack.base_url + WEBHOOK,
        "webhook_api_version": "2",
    }
    assert connection.application_name == "Acme support line"
    lookup = next(r for r in stack.sim.requests if r.path == "/v2/phone_numbers")
    assert lookup.query == {"filter[phone_number]": [NUMBER[1:]]}
    patch = next(r for r in stack.sim.requests if r.path == f"/v2/phone_numbers/{number.id}")
    assert (patch.method, patch.json) == ("PATCH", {"connection_id": stack.connection_id})
    assert all(r.auth == ("bearer", stack.sim.api_key) for r in stack.sim.requests)

    reply = await stack.org.call(
        "POST", f"{BRIDGES}{slug}/disconnect-provider/", {"phone_number": NUMBER}
    )
    assert reply.status == 200, reply.text
    assert number.connection_id is None


async def test_a_number_not_on_the_account_or_a_refused_key_is_400(stack: Stack) -> None:
    slug = await stack.bridge()
    reply = await stack.connect(slug, "+15550009999")
    assert reply.status == 400
    assert "+15550009999 is not a phone number of this Telnyx account" in reply.text

    stack.sim.add_number(OTHER)
    await stack.update_config(auth_token="not-the-key")
    reply = await stack.connect(slug, OTHER)
    assert reply.status == 400
    assert "API key" in reply.text
    assert stack.sim.numbers[OTHER].connection_id is None
    bridge = await stack.org.call("GET", f"{BRIDGES}{slug}/")
    assert bridge.body["data"]["numbers"] == []


# --- webhook security --------------------------------------------------------------------------


async def test_unsigned_or_badly_signed_webhooks_are_403_and_change_nothing(stack: Stack) -> None:
    await stack.bridge(NUMBER, webhook_url=stack.app_server.url)
    body = incoming_body(NUMBER)
    now = int(time.time())
    key = stack.sim.private_key
    good = signed(key, body, now)
    cases = {
        "no headers": {},
        "no timestamp": {SIGNATURE_HEADER: good[SIGNATURE_HEADER]},
        "no signature": {TIMESTAMP_HEADER: str(now)},
        "another key": signed(Ed25519PrivateKey.generate(), body, now),
        "another body": signed(key, body + b" ", now),
        "another timestamp": {**good, TIMESTAMP_HEADER: str(now - 1)},
        "330 s old": signed(key, body, now - 330),
        "330 s ahead": signed(key, body, now + 330),
    }
    before = stack.runtime.machine.snapshot()
    for name, headers in cases.items():
        resp = await stack.client.post(WEBHOOK, data=body, headers=headers)
        assert resp.status == 403, name
    assert stack.runtime.machine.snapshot() == before
    assert len(stack.kit.legs) == 0
    assert await stack.app[LIVE_LEGS].count_for_number(NUMBER) == 0

    # The very same body, signed now, is a call: only the signature was at fault.
    resp = await stack.client.post(WEBHOOK, data=body, headers=good)
    assert resp.status == 200
    await stack.app_server.wait_for("call.initiated")
    assert len(stack.kit.legs) == 1


async def test_a_configuration_without_public_key_cannot_verify_and_refuses(
    stack: Stack,
) -> None:
    await stack.bridge(NUMBER, webhook_url=stack.app_server.url)
    await stack.update_config(public_key=None)
    call = await stack.sim.place_inbound_call(caller(), NUMBER)
    await call.wait_until(lambda c: c.events)
    assert kinds(call) == [("call.initiated", 403)]
    assert len(stack.kit.legs) == 0


async def test_replayed_webhooks_outside_the_window_are_403(stack: Stack) -> None:
    await stack.bridge(NUMBER, webhook_url=stack.app_server.url)
    stale = await stack.sim.place_inbound_call(
        caller(), NUMBER, faults=WebhookFaults(stale=frozenset({"call.initiated"}))
    )
    await stale.wait_until(lambda c: c.events)
    assert kinds(stale) == [("call.initiated", 403)]
    assert len(stack.kit.legs) == 0

    call = await stack.sim.place_inbound_call(caller(), NUMBER)
    leg = await stack.leg_of(call)
    first = await stack.app_server.wait_for("call.initiated", leg.leg_id)
    initiated = call.events[0]
    before = stack.runtime.machine.snapshot()
    assert (await call.replay_webhook(initiated, age_s=600)).status == 403
    assert (await call.replay_webhook(initiated, age_s=-400)).status == 403
    assert (await call.replay_webhook(initiated, age_s=0, corrupt_signature=True)).status == 403
    # Inside the window the replay verifies, and is a duplicate of an event already handled.
    assert (await call.replay_webhook(initiated, age_s=10)).status == 200
    assert stack.runtime.machine.snapshot() == before
    assert stack.app_server.of("call.initiated") == [first]
    assert len(stack.kit.legs) == 1


async def test_duplicated_webhooks_are_handled_once(stack: Stack) -> None:
    await stack.bridge(NUMBER, webhook_url=stack.app_server.url)
    answer_incoming(stack)
    twice = frozenset({"call.initiated", "call.answered", "call.hangup"})
    call = await stack.sim.place_inbound_call(
        caller(), NUMBER, faults=WebhookFaults(duplicate=twice)
    )
    leg = await stack.leg_of(call)
    await stack.app_server.wait_for("call.answered", leg.leg_id)
    await call.wait_for(CallState.STREAMING)
    await call.hang_up()
    await stack.app_server.wait_for("call.hangup", leg.leg_id)
    await call.wait_until(lambda c: sum(e.kind == "call.hangup" for e in c.events) == 2)
    for kind in twice:
        assert [e.status for e in call.events if e.kind == kind] == [200, 200], kind
    for kind in ("call.initiated", "call.answered", "call.hangup"):
        assert len(stack.app_server.of(kind, leg.leg_id)) == 1, kind
    assert len(requests_to(stack, call, "answer")) == 1
    assert stack.leg_state(leg.leg_id) == "hangup"


async def test_a_hangup_overtaking_the_answer_is_tolerated(stack: Stack) -> None:
    await stack.bridge(NUMBER, webhook_url=stack.app_server.url)
    answer_incoming(stack)
    late = WebhookFaults(delay_ms={"call.answered": 1500})
    call = await stack.sim.place_inbound_call(caller(), NUMBER, faults=late)
    leg = await stack.leg_of(call)
    await call.wait_for(CallState.STREAMING)
    await call.hang_up()
    hangup = await stack.app_server.wait_for("call.hangup", leg.leg_id)
    assert hangup["payload"]["hangup_cause"] == "normal_clearing"
    assert hangup["payload"]["hangup_source"] == "caller"
    # The late call.answered arrives after the call.hangup: accepted, and changes nothing. The
    # stream's start had answered the leg already (machine/leg_setup.py): the application was
    # told once, before the hangup.
    await call.wait_until(lambda c: any(e.kind == "call.answered" for e in c.events))
    kinds_seen = [k for k, _ in kinds(call)]
    assert kinds_seen.index("call.hangup") < kinds_seen.index("call.answered")
    assert all(status == 200 for _, status in kinds(call)), kinds(call)
    told = [
        e["event_type"]
        for e in stack.app_server.events
        if e["payload"].get("call_control_id") == leg.leg_id
    ]
    assert told.count("call.answered") == 1
    assert told.index("call.answered") < told.index("call.hangup")
    assert stack.leg_state(leg.leg_id) == "hangup"


async def test_a_hangup_overtaking_the_initiated_starts_no_leg(stack: Stack) -> None:
    await stack.bridge(NUMBER, webhook_url=stack.app_server.url)
    late = WebhookFaults(delay_ms={"call.initiated": 300})
    call = await stack.sim.place_inbound_call(caller(), NUMBER, faults=late)
    await call.hang_up()
    await call.wait_until(lambda c: len(c.events) == 2)
    assert kinds(call) == [("call.hangup", 200), ("call.initiated", 200)]
    assert len(stack.kit.legs) == 0
    assert stack.app_server.events == []


async def test_a_webhook_for_an_unknown_call_is_200_and_ignored(stack: Stack) -> None:
    body = orjson.dumps(
        build_event("call.answered", {"call_control_id": "v3:nobody"}, str(uuid.uuid4()), "2025")
    )
    before = stack.runtime.machine.snapshot()
    resp = await stack.client.post(WEBHOOK, data=body)
    assert resp.status == 200
    resp = await stack.client.post(WEBHOOK, data=b"{not json")
    assert resp.status == 400
    assert stack.runtime.machine.snapshot() == before


# --- admission ---------------------------------------------------------------------------------


async def test_draft_or_inactive_bridges_and_full_numbers_reject_busy(stack: Stack) -> None:
    draft = await stack.bridge(NUMBER, status="DRAFT")
    busy = await stack.bridge(OTHER)  # default routing; capped below to one leg at a time
    capped = await stack.org.call(
        "POST",
        f"{BRIDGES}{busy}/connect-provider/",
        {"provider_config_id": stack.config_id, "phone_number": OTHER, "channels_count": 1},
    )
    assert capped.status == 200, capped.text
    refused = await stack.sim.place_inbound_call(caller(), NUMBER)
    await refused.wait_for(CallState.ENDED)
    assert [r.json for r in requests_to(stack, refused, "reject")] == [{"cause": "USER_BUSY"}]
    assert refused.hangup == ("user_busy", "callee", "486")

    reply = await stack.org.call("PATCH", f"{BRIDGES}{draft}/", {"status": "INACTIVE"})
    assert reply.status == 200
    refused = await stack.sim.place_inbound_call(caller(), NUMBER)
    await refused.wait_for(CallState.ENDED)
    assert [r.json for r in requests_to(stack, refused, "reject")] == [{"cause": "USER_BUSY"}]

    first = await stack.sim.place_inbound_call(caller(), OTHER, source=ToneSource(440))
    await first.wait_for(CallState.STREAMING)
    second = await stack.sim.place_inbound_call(caller(), OTHER)
    await second.wait_for(CallState.ENDED)
    assert [r.json for r in requests_to(stack, second, "reject")] == [{"cause": "USER_BUSY"}]
    assert first.state is CallState.STREAMING
    assert await stack.app[LIVE_LEGS].count_for_number(OTHER) == 1
    assert busy in stack.bridges

    # A number callbridge has no bridge for: nothing can verify the call, it is left alone.
    stack.sim.add_number("+15550004444", stack.connection_id)
    stray = await stack.sim.place_inbound_call(caller(), "+15550004444")
    await stray.wait_until(lambda c: c.events)
    assert kinds(stray) == [("call.initiated", 200)]
    assert requests_to(stack, stray, "reject") == []


# --- media socket ------------------------------------------------------------------------------


def start_frame(telnyx_id: str) -> str:
    return orjson.dumps(
        {
            "event": "start",
            "sequence_number": "1",
            "stream_id": str(uuid.uuid4()),
            "start": {
                "call_control_id": telnyx_id,
                "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
            },
        }
    ).decode()


CONNECTED = '{"event": "connected", "version": "1.0.0"}'


async def refused_with(
    stack: Stack, query: str, frames: list[str]
) -> tuple[int | None, str | None]:
    url = stack.base_url.replace("http://", "ws://") + "/media/telnyx" + query
    async with websockets.connect(url) as ws:
        for frame in frames:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(frame)
        async with asyncio.timeout(5):
            with contextlib.suppress(ConnectionClosed):
                async for _ in ws:
                    pass
        return ws.close_code, ws.close_reason


async def test_bad_media_sockets_are_closed_with_a_reason_and_disturb_no_call(
    stack: Stack,
) -> None:
    await stack.bridge(NUMBER, OTHER)
    a = await stack.sim.place_inbound_call(caller(), NUMBER, source=ToneSource(440))
    b = await stack.sim.place_inbound_call(caller(), OTHER, source=ToneSource(1000))
    await a.wait_for(CallState.STREAMING)
    await b.wait_for(CallState.STREAMING)
    leg_a = await stack.leg_of(a)
    tokens = stack.kit.context.tokens
    forged = LegTokens("another-secret-" + "x" * 32, time.time).issue(leg_a.leg_id)
    expired = LegTokens(SECRET_KEY, lambda: time.time() - 2 * DEFAULT_TTL_S).issue(leg_a.leg_id)
    good = tokens.issue(leg_a.leg_id)
    start_a, start_b = start_frame(a.call_control_id), start_frame(b.call_control_id)
    cases = [
        ("", [CONNECTED, start_a], 1008, "missing media token"),
        ("?token=nonsense", [CONNECTED, start_a], 1008, "malformed media token"),
        (f"?token={forged}", [CONNECTED, start_a], 1008, "media token signature mismatch"),
        (f"?token={expired}", [CONNECTED, start_a], 1008, "media token expired"),
        (f"?token={good}", [CONNECTED, start_b], 1008, "the media token is not for this call"),
        (f"?token={good}", [CONNECTED, start_a], 1008, "the leg already has a media stream"),
        # Junk before start is dropped and counted, never fatal (issue 10 point 4): this stream
        # is refused for its start, a call that is not the token's, not for the junk before it.
        (
            f"?token={good}",
            [
                "{not json",
                '{"event": "media", "media": {"payload": "%%%"}}',
                '{"event": "hello"}',
                start_b,
            ],
            1008,
            "the media token is not for this call",
        ),
        (
            f"?token={good}",
            ['{"event": "start", "start": {}}'],
            1007,
            "start frame lacks the 'stream_id' string",
        ),
        (
            f"?token={good}",
            ["{not json"] * 51,
            1007,
            "flood: more than 50 unusable frames within 1 s",
        ),
    ]
    tick = b.playout_tick
    for query, frames, code, reason in cases:
        assert await refused_with(stack, query, frames) == (code, reason), reason
    assert stack.kit.context.require_sessions().refused == len(cases)

    # Both calls kept their one stream and still hear each other.
    await wait_ticks(a, a.playout_tick + 40)
    await wait_ticks(b, tick + 40)
    assert len(a.streams) == len(b.streams) == 1
    assert a.protocol_errors == b.protocol_errors == []
    heard_a = a.received_audio()[-30 * FRAME_SAMPLES :]
    heard_b = b.received_audio()[-30 * FRAME_SAMPLES :]
    assert min(tone_margins(heard_a, [1000], [440])) >= 20
    assert min(tone_margins(heard_b, [440], [1000])) >= 20


# --- reordered media ---------------------------------------------------------------------------

# Distinct mu-law codes whose decoded value is not 0 (0x7F and 0xFF both decode to 0): frame n
# of the counting caller is the value of code n, so what the other caller hears names the frame.
_CODES = [code for code in range(256) if ULAW_DECODE[code] != 0]
_VALUE_TO_FRAME = {int(ULAW_DECODE[code]): n for n, code in enumerate(_CODES)}


class CountingSource:
    """Frame n is 160 samples of one value that only frame n (mod 254) uses."""

    def __init__(self) -> None:
        self.n = 0

    def next_frame(self) -> np.ndarray[Any, np.dtype[np.int16]]:
        value = ULAW_DECODE[_CODES[self.n % len(_CODES)]]
        self.n += 1
        return np.full(FRAME_SAMPLES, value, dtype=np.int16)


def frames_heard(call: TelnyxCall) -> list[int]:
    """The counting caller's frame numbers in the order ``call`` heard them (silence skipped)."""
    heard: list[int] = []
    for row in frame_rows(call.received_audio()):
        if row[0] == 0:
            continue
        assert (row == row[0]).all(), "a frame was cut or mixed"
        heard.append(_VALUE_TO_FRAME[int(row[0])])
    return heard


async def test_reordered_media_is_played_in_order(stack: Stack) -> None:
    await stack.bridge(NUMBER, OTHER)
    shuffled = Impairments(reorder=0.3, seed=11)
    a = await stack.sim.place_inbound_call(
        caller(), NUMBER, source=CountingSource(), impairments=shuffled
    )
    b = await stack.sim.place_inbound_call(caller(), OTHER, source=SilenceSource())
    await b.wait_until(lambda c: len(frames_heard(c)) >= 80, timeout_s=8)
    assert a.stream is not None and a.stream.sender is not None
    assert a.stream.sender.stats.reordered >= 10
    heard = frames_heard(b)
    assert heard == sorted(heard), "frames were played out of order"
    assert len(set(heard)) == len(heard)
    # Every frame played but at most the one the first reordering caught out.
    assert heard[-1] - heard[0] + 1 - len(heard) <= 1


def test_media_order_holds_a_reordering_stream_but_never_an_ordered_one() -> None:
    order = MediaOrder(window=2)

    def play(counter: int) -> list[int]:
        return [p[0] for p in order.push(counter, bytes([counter]))]

    # In order, and across gaps (a counter that also counts other messages): no wait.
    assert [play(n) for n in (1, 2, 4, 5)] == [[1], [2], [4], [5]]
    # 7 overtakes 6: 6 is too late to play in order; from now on the stream reorders.
    assert [play(7), play(6)] == [[7], []]
    assert order.counts.late == 1
    assert [play(9), play(8)] == [[], [8, 9]]
    # A gap that never fills is given up after two frames more.
    assert [play(11), play(12), play(13)] == [[], [], [11, 12, 13]]
    # Duplicates are dropped; a counter far behind is a new stream.
    assert [play(13), play(12)] == [[], []]
    assert [play(n) for n in (60, 61, 62, 63)] == [[], [], [60, 61, 62], [63]]
    assert [play(1), play(2)] == [[1], [2]]
    assert list(order.push(None, b"x")) == [b"x"]
    # What it saw, for the leg's media statistics: 3, 6, 10 and 14..59 never played; 6, 13 and
    # 12 came too late; 9, 11..13 and 60..62 were held behind a gap.
    assert (order.counts.lost, order.counts.late, order.counts.reordered) == (49, 3, 7)


def test_media_order_counts_no_loss_on_a_counter_that_counts_other_messages() -> None:
    order = MediaOrder(window=2)
    order.count_gaps = False  # a sequence number: marks and DTMF take numbers too
    for n in (1, 2, 4, 5):
        order.push(n, b"x")
    assert order.counts.lost == 0


# --- REST: dial, bridge, hangup, failures ------------------------------------------------------


async def test_a_dial_reaches_telnyx_and_the_callee_is_bridged_and_hung_up(stack: Stack) -> None:
    slug = await stack.bridge(NUMBER, webhook_url=stack.app_server.url)
    answer_incoming(stack)
    a = await stack.sim.place_inbound_call(caller(), NUMBER, source=ToneSource(440))
    leg_a = (await stack.leg_of(a)).leg_id
    callee = "+15559990001"
    stack.sim.set_callee(callee, Callee(source=lambda: ToneSource(1000)))
    resp = await stack.client.post(
        "/v2/calls",
        json={"connection_id": slug, "to": callee, "from": NUMBER, "timeout_secs": 20},
        headers=bearer(stack),
    )
    assert resp.status == 200, await resp.text()
    leg_b = (await resp.json())["data"]["call_control_id"]

    dial = await stack.sim.wait_for_request(lambda r: (r.method, r.path) == ("POST", "/v2/calls"))
    body = dial.json
    assert dial.auth == ("bearer", stack.sim.api_key)
    assert body["connection_id"] == stack.connection_id
    assert (body["to"], body["from"], body["timeout_secs"]) == (callee, NUMBER, 20)
    # The URL names the leg: its webhooks reaching another node find the owner by it.
    assert body["webhook_url"] == f"{stack.base_url}{WEBHOOK}?leg={leg_b}"
    assert body["stream_url"].startswith(
        stack.base_url.replace("http", "ws") + "/media/telnyx?token="
    )
    assert body["stream_track"] == "inbound_track"
    assert body["stream_bidirectional_mode"] == "rtp"
    assert body["stream_bidirectional_codec"] == "PCMU"
    assert body["command_id"] == leg_b

    b = await stack.sim.wait_for_call(lambda c: c.direction == "outbound")
    await b.wait_for(CallState.STREAMING)
    await stack.app_server.wait_for("call.answered", leg_b)
    await a.wait_for(CallState.STREAMING)
    await command(stack, leg_a, "bridge", call_control_id=leg_b)
    await stack.app_server.wait_for("call.bridged", leg_a)
    await stack.app_server.wait_for("call.bridged", leg_b)
    tick_a, tick_b = a.playout_tick, b.playout_tick
    await wait_ticks(a, tick_a + 40)
    await wait_ticks(b, tick_b + 40)
    assert min(tone_margins(heard_since(a, tick_a + 10, 30), [1000], [440])) >= 20
    assert min(tone_margins(heard_since(b, tick_b + 10, 30), [440], [1000])) >= 20

    await command(stack, leg_b, "hangup")
    await b.wait_for(CallState.ENDED)
    assert len(requests_to(stack, b, "hangup")) == 1
    hangup = await stack.app_server.wait_for("call.hangup", leg_b)
    assert hangup["payload"]["hangup_cause"] == "normal_clearing"
    # Bridged without park_after_unbridge: the peer is hung up at Telnyx too.
    await a.wait_for(CallState.ENDED)
    assert len(requests_to(stack, a, "hangup")) == 1
    await stack.app_server.wait_for("call.hangup", leg_a)


async def test_a_refused_rest_call_ends_the_leg_and_already_ended_is_success(
    stack: Stack,
) -> None:
    await stack.bridge(NUMBER, webhook_url=stack.app_server.url)
    late = WebhookFaults(delay_ms={"call.hangup": 1000})
    call = await stack.sim.place_inbound_call(caller(), NUMBER, faults=late)
    leg = await stack.leg_of(call)
    await stack.app_server.wait_for("call.initiated", leg.leg_id)
    await call.hang_up()  # gone at Telnyx; its call.hangup is late
    await command(stack, leg.leg_id, "answer")
    # Telnyx answers 422 90018: the answer failed, so callbridge ends the leg itself.
    hangup = await stack.app_server.wait_for("call.hangup", leg.leg_id)
    assert hangup["payload"]["hangup_cause"] == "unspecified"
    assert [r.status for r in requests_to(stack, call, "answer")] == [422]
    await stack.sim.wait_for_request(
        lambda r: r.path.endswith(f"{call.call_control_id}/actions/hangup")
    )
    await call.wait_until(lambda c: any(e.kind == "call.hangup" for e in c.events))
    assert all(status == 200 for _, status in kinds(call))
    assert len(stack.app_server.of("call.hangup", leg.leg_id)) == 1

    # The gateway by itself: hangup and reject of an ended call succeed, answer does not.
    config = await stack.app[STORE].get_provider_config(stack.org.org_id, stack.config_id)
    assert config is not None
    gateway = stack.kit.gateway(config)
    stack.kit.legs.add("v3:probe", call.call_control_id, config)
    await gateway.hangup("v3:probe")
    await gateway.reject("v3:probe", RejectCause.USER_BUSY)
    with pytest.raises(ProviderError, match="90018"):
        await gateway.answer("v3:probe")
    gateway.forget("v3:probe")
    await gateway.hangup("v3:probe")  # nothing left to hang up: no request at all
    assert len(requests_to(stack, call, "hangup")) == 2
