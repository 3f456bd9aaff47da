"""Websocket agent legs: callbridge dials a voice bot and speaks Twilio Media Streams to it.

The protocol module is tested byte-exactly and table-driven with no event loop; everything else
runs the real app (``create_app``, SQLite in a temp dir) through the Call Control API, with bots
from ``tests.wsagent_bot`` on 127.0.0.1 and the application's webhooks delivered by the app's
own outbox to a receiver on 127.0.0.1. Nothing of callbridge is mocked; tests wait on what
arrives, with timeouts.
"""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pybase64
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from adapters.simulators.audio import ToneSource, noise_floor_db, tone_level_db
from adapters.wiring import ADAPTERS
from adapters.wsagent.gateway import WebsocketAgentGateway, safe_url
from adapters.wsagent.protocol import (
    MAX_PENDING_MARKS,
    AgentProtocolError,
    AgentStream,
    BotClear,
    BotMark,
    BotMedia,
    Playout,
    StreamIds,
)
from engine.api.keys import RUNTIME
from engine.app import create_app
from engine.config import Settings
from engine.errors import ProviderError
from engine.machine.effects import DialCall
from engine.machine.events import DtmfReceived
from engine.machine.model import DtmfSource
from media.codecs import PCMU_8K, encode
from tests.platform_client import Org, make_org
from tests.wsagent_bot import WAIT_S, AgentBot, BotSession

SID = "MZ" + "a" * 32
IDS = StreamIds("AC" + "1" * 32, "CA" + "2" * 32, SID)
HEX32 = re.compile(r"[0-9a-f]{32}")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---- the protocol, no I/O --------------------------------------------------------------------
def test_callbridge_renders_twilios_frames_exactly() -> None:
    stream = AgentStream(IDS)
    assert orjson.loads(stream.connected()) == {
        "event": "connected",
        "protocol": "Call",
        "version": "1.0.0",
    }
    assert orjson.loads(stream.start({"call_control_id": "v3:x", "from": "+1555"})) == {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": IDS.account_sid,
            "streamSid": SID,
            "callSid": IDS.call_sid,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"call_control_id": "v3:x", "from": "+1555"},
        },
        "streamSid": SID,
    }
    media = orjson.loads(stream.media(b"\xff\x7f\x00", 40))
    assert media == {
        "event": "media",
        "sequenceNumber": "2",
        "streamSid": SID,
        "media": {"track": "inbound", "chunk": "1", "timestamp": "40", "payload": "/38A"},
    }
    assert orjson.loads(stream.media(b"\xff", 60))["media"]["chunk"] == "2"
    assert orjson.loads(stream.mark("m1")) == {
        "event": "mark",
        "sequenceNumber": "4",
        "streamSid": SID,
        "mark": {"name": "m1"},
    }
    assert orjson.loads(stream.stop()) == {
        "event": "stop",
        "sequenceNumber": "5",
        "streamSid": SID,
        "stop": {"accountSid": IDS.account_sid, "callSid": IDS.call_sid},
    }


def test_a_peers_key_press_is_rendered_as_twilio_reports_one() -> None:
    stream = AgentStream(IDS)
    stream.start({})
    dtmf = orjson.loads(stream.dtmf("5"))
    # PROTOCOLS.md 5.1, key order included; pipecat's TwilioFrameSerializer reads
    # message["dtmf"]["digit"] from exactly this message.
    assert list(dtmf) == ["event", "streamSid", "sequenceNumber", "dtmf"]
    assert dtmf == {
        "event": "dtmf",
        "streamSid": SID,
        "sequenceNumber": "2",
        "dtmf": {"track": "inbound_track", "digit": "5"},
    }
    assert orjson.loads(stream.media(b"\xff", 20))["sequenceNumber"] == "3"


def test_stream_ids_are_twilio_shaped_stable_per_leg_and_checked() -> None:
    ids = StreamIds.for_leg("v3:abc", 7, "0123456789abcdef" * 2)
    assert ids.stream_sid == "MZ" + "0123456789abcdef" * 2
    for sid, prefix in [(ids.account_sid, "AC"), (ids.call_sid, "CA")]:
        assert sid.startswith(prefix) and HEX32.fullmatch(sid[2:])
    assert ids.call_sid == StreamIds.for_leg("v3:abc", 7, "f" * 32).call_sid
    assert ids.call_sid != StreamIds.for_leg("v3:abd", 7, "f" * 32).call_sid
    assert ids.account_sid != StreamIds.for_leg("v3:abc", 8, "f" * 32).account_sid
    with pytest.raises(ValueError, match="32 lower-case hex"):
        StreamIds.for_leg("v3:abc", 7, "xyz")


def test_the_bots_frames_are_parsed() -> None:
    stream = AgentStream(IDS)
    media = {"event": "media", "streamSid": SID, "media": {"payload": b64(b"\x01\x02")}}
    assert stream.parse(orjson.dumps(media).decode()) == BotMedia(b"\x01\x02")
    mark = {"event": "mark", "streamSid": SID, "mark": {"name": "greeting"}}
    assert stream.parse(orjson.dumps(mark).decode()) == BotMark("greeting")
    assert stream.parse(orjson.dumps({"event": "clear", "streamSid": SID}).decode()) == BotClear()


GOOD_MEDIA = {"event": "media", "streamSid": SID, "media": {"payload": "AAE="}}


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ({"streamSid": SID}, "unknown event None"),
        ({"event": "dtmf", "streamSid": SID}, "unknown event 'dtmf'"),
        ({"event": "start", "streamSid": SID}, "unknown event 'start'"),
        ({**GOOD_MEDIA, "track": "outbound"}, "extra keys ['track']"),
        ({"event": "media", "media": {"payload": "AAE="}}, "media frame: missing ['streamSid']"),
        ({**GOOD_MEDIA, "streamSid": "MZ" + "b" * 32}, "streamSid does not name"),
        ({**GOOD_MEDIA, "media": {"payload": "AAE=", "track": "x"}}, "exactly 'payload'"),
        ({**GOOD_MEDIA, "media": "AAE="}, "exactly 'payload'"),
        ({**GOOD_MEDIA, "media": {"payload": 5}}, "non-empty string"),
        ({**GOOD_MEDIA, "media": {"payload": ""}}, "non-empty string"),
        ({**GOOD_MEDIA, "media": {"payload": "A*E="}}, "not valid base64"),
        ({**GOOD_MEDIA, "media": {"payload": "AAE"}}, "not valid base64"),
        ({"event": "mark", "streamSid": SID, "mark": {"name": 1}}, "non-empty string"),
        ({"event": "mark", "streamSid": SID, "mark": {"name": "x" * 257}}, "longer than 256"),
        ({"event": "mark", "streamSid": SID, "name": "x"}, "extra keys ['name']"),
        ({"event": "clear", "streamSid": SID, "clear": {}}, "extra keys ['clear']"),
    ],
)
def test_frames_twilio_would_refuse_are_protocol_errors(frame: Any, reason: str) -> None:
    text = frame if isinstance(frame, str) else orjson.dumps(frame).decode()
    with pytest.raises(AgentProtocolError, match=re.escape(reason)) as caught:
        AgentStream(IDS).parse(text)
    assert caught.value.code == "31951"
    assert len(caught.value.reason.encode()) <= 123


def test_playout_feeds_a_frame_per_take_and_returns_marks_after_their_audio() -> None:
    playout = Playout(max_bytes=1000)
    assert playout.queue_mark("nothing-ahead") == ["nothing-ahead"]
    assert playout.queue_audio(bytes(range(200)))
    assert playout.queue_mark("after-200") == []
    assert playout.queue_audio(b"\x01" * 200)
    assert playout.queue_mark("after-400") == []
    assert playout.take() == (bytes(range(160)), [])
    assert playout.take() == (bytes(range(160, 200)) + b"\x01" * 120, ["after-200"])
    assert playout.take() == (b"\x01" * 80, ["after-400"])
    assert playout.take() == (b"", [])
    # Over the limit: nothing of it is queued.
    assert playout.queue_audio(b"\x00" * 1000)
    assert not playout.queue_audio(b"\x00")
    assert playout.queued_bytes == 1000


def test_clear_drops_the_audio_and_returns_every_pending_mark() -> None:
    playout = Playout(max_bytes=10_000)
    playout.queue_audio(b"\x00" * 500)
    playout.queue_mark("a")
    playout.queue_audio(b"\x00" * 500)
    playout.queue_mark("b")
    playout.take()
    assert playout.clear() == ["a", "b"]
    assert playout.take() == (b"", [])
    assert playout.queue_mark("c") == ["c"], "after a clear, nothing is ahead of a new mark"


def test_pending_marks_are_bounded() -> None:
    playout = Playout(max_bytes=10)
    playout.queue_audio(b"\x00")
    for i in range(MAX_PENDING_MARKS):
        playout.queue_mark(str(i))
    with pytest.raises(AgentProtocolError, match="marks pending"):
        playout.queue_mark("one too many")


def test_safe_url_drops_credentials_and_query() -> None:
    assert safe_url("wss://u:secret@bot.example:8443/v1/ws?token=t") == (
        "wss://bot.example:8443/v1/ws"
    )
    assert safe_url("ws://[::1/x") == "<invalid url>"


# ---- the real app ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hook:
    event_type: str
    payload: dict[str, Any]


class WebhookReceiver:
    """The application's webhook endpoint: records deliveries, wakes waiting tests."""

    def __init__(self) -> None:
        self.hooks: list[Hook] = []
        self.url = ""
        self._changed = asyncio.Condition()

    async def _handle(self, request: web.Request) -> web.Response:
        data = orjson.loads(await request.read())["data"]
        async with self._changed:
            self.hooks.append(Hook(data["event_type"], data["payload"]))
            self._changed.notify_all()
        return web.Response(text="ok")

    def of(self, leg: str) -> list[Hook]:
        return [h for h in self.hooks if h.payload.get("call_control_id") == leg]

    def types(self, leg: str) -> list[str]:
        return [h.event_type for h in self.of(leg)]

    async def wait(self, leg: str, event_type: str) -> Hook:
        def found() -> Hook | None:
            return next((h for h in self.of(leg) if h.event_type == event_type), None)

        async with asyncio.timeout(WAIT_S), self._changed:
            await self._changed.wait_for(lambda: found() is not None)
        hook = found()
        assert hook is not None
        return hook


@dataclass
class Env:
    client: TestClient[web.Request, web.Application]
    org: Org
    bridge: dict[str, Any]
    hooks: WebhookReceiver
    gateway: WebsocketAgentGateway

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.org.token}"}
        resp = await self.client.request(method, path, json=body, headers=headers)
        return resp.status, await resp.json()

    async def dial(self, url: str, **fields: Any) -> str:
        body = {
            "connection_id": self.bridge["slug"],
            "from": "+15550001111",
            "to": url,
            "webhook_url": self.hooks.url,
            **fields,
        }
        status, reply = await self.request("POST", "/v2/calls", body)
        assert status == 200, reply
        return str(reply["data"]["call_control_id"])

    async def act(self, leg: str, action: str, **body: Any) -> None:
        status, reply = await self.request("POST", f"/v2/calls/{leg}/actions/{action}", body)
        assert (status, reply) == (200, {"data": {"result": "ok"}}), reply

    async def is_alive(self, leg: str) -> bool:
        status, reply = await self.request("GET", f"/v2/calls/{leg}")
        assert status == 200, reply
        return bool(reply["data"]["is_alive"])

    async def answered_bot(
        self, bot: AgentBot, index: int = 0, **fields: Any
    ) -> tuple[str, BotSession]:
        leg = await self.dial(bot.url, **fields)
        session = await bot.session(index)
        await session.wait_event("start")
        await self.hooks.wait(leg, "call.answered")
        return leg, session


@pytest.fixture
async def env(aiohttp_client: Any, aiohttp_server: Any, settings: Settings) -> AsyncIterator[Env]:
    app = create_app(settings)
    client = await aiohttp_client(app)
    receiver = WebhookReceiver()
    hooks_app = web.Application()
    hooks_app.router.add_post("/hooks", receiver._handle)
    receiver.url = str((await aiohttp_server(hooks_app, host="127.0.0.1")).make_url("/hooks"))
    org = await make_org(client, "acme", "Acme Inc")
    bridge = await org.create_bridge("Agents")
    kit = app[ADAPTERS].websocket_kit
    assert kit is not None
    gateway = kit()
    assert isinstance(gateway, WebsocketAgentGateway)
    yield Env(client, org, bridge, receiver, gateway)
    # Shut callbridge down first, while the bots and the receiver still listen.
    await client.close()
    assert env_is_clean(gateway)


def env_is_clean(gateway: WebsocketAgentGateway) -> bool:
    """After shutdown no agent leg and no pacer is left behind."""
    return gateway.leg_count == 0 and not gateway.pacing


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_bot_hears_connected_start_then_paced_media_and_hangup_sends_stop(
    env: Env, aiohttp_server: Any
) -> None:
    bot = await AgentBot.start(aiohttp_server, tone_hz=None)
    leg = await env.dial(bot.url + "?token=abc", client_state=b64(b"crm-42"))
    session = await bot.session()
    assert session.path_qs == "/bot?token=abc"
    await session.wait_event("start")
    connected, start = session.messages[:2]
    assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert list(start) == ["event", "sequenceNumber", "start", "streamSid"]
    sid = start["streamSid"]
    assert sid.startswith("MZ") and HEX32.fullmatch(sid[2:])
    assert start["sequenceNumber"] == "1"
    body = start["start"]
    assert body["accountSid"].startswith("AC") and body["callSid"].startswith("CA")
    assert body["streamSid"] == sid
    assert body["tracks"] == ["inbound"]
    assert body["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    hook = await env.hooks.wait(leg, "call.answered")
    assert body["customParameters"] == {
        "call_control_id": leg,
        "call_leg_id": hook.payload["call_leg_id"],
        "call_session_id": hook.payload["call_session_id"],
        "from": "+15550001111",
        "to": bot.url,  # without the query: it may carry the bot's credentials
        "client_state": b64(b"crm-42"),
    }
    assert env.hooks.types(leg)[:2] == ["call.initiated", "call.answered"]

    # Parked, the leg hears the engine's silence: one 20 ms frame per tick, in real time.
    media = (await session.wait_media(26))[:26]
    for i, frame in enumerate(media):
        assert list(frame) == ["event", "sequenceNumber", "streamSid", "media"]
        assert frame["sequenceNumber"] == str(i + 2) and frame["streamSid"] == sid
        assert list(frame["media"]) == ["track", "chunk", "timestamp", "payload"]
        assert frame["media"]["track"] == "inbound" and frame["media"]["chunk"] == str(i + 1)
        assert len(pybase64.b64decode(frame["media"]["payload"])) == 160
    stamps = [int(f["media"]["timestamp"]) for f in media]
    assert stamps == sorted(stamps)
    first = session.messages.index(media[0])
    span = session.arrivals[first + 25] - session.arrivals[first]
    assert span >= 0.4, f"25 frames took {span:.3f} s: faster than real time"
    assert stamps[25] - stamps[0] >= 400

    await env.act(leg, "hangup")
    await session.wait_closed()
    stop = session.messages[-1]
    assert stop == {
        "event": "stop",
        "sequenceNumber": stop["sequenceNumber"],
        "streamSid": sid,
        "stop": {"accountSid": body["accountSid"], "callSid": body["callSid"]},
    }
    sequence = [int(m["sequenceNumber"]) for m in session.messages[1:]]
    assert sequence == list(range(1, len(sequence) + 1))
    assert (session.close_code, session.close_reason) == (1000, "call ended")
    hangup = await env.hooks.wait(leg, "call.hangup")
    assert hangup.payload["hangup_cause"] == "normal_clearing"
    assert not await env.is_alive(leg)
    assert env.gateway.leg(leg) is None


async def test_two_bridged_bots_hear_each_other_and_a_bot_closing_ends_its_leg(
    env: Env, aiohttp_server: Any
) -> None:
    bot_a = await AgentBot.start(aiohttp_server, tone_hz=440)
    bot_b = await AgentBot.start(aiohttp_server, tone_hz=1000)
    leg_a, session_a = await env.answered_bot(bot_a)
    leg_b, session_b = await env.answered_bot(bot_b)
    await env.act(leg_a, "bridge", call_control_id=leg_b)
    await env.hooks.wait(leg_a, "call.bridged")
    await env.hooks.wait(leg_b, "call.bridged")
    # Until the bridge each bot heard the engine's silence; then one second of the other bot,
    # which must start within half a second of the bridge.
    marks = len(session_a.media()), len(session_b.media())
    listened = await asyncio.gather(session_a.listen(marks[0]), session_b.listen(marks[1]))
    for (begin, heard), mark, own, other in [
        (listened[0], marks[0], 440, 1000),
        (listened[1], marks[1], 1000, 440),
    ]:
        assert begin - mark <= 25, f"the peer was heard {begin - mark} frames after the bridge"
        assert heard.size == 8000
        level = tone_level_db(heard, other)
        assert level > -25, (
            f"the peer's {other} Hz tone is missing ({level:.1f} dBFS); frame levels: "
            f"{[round(float(np.abs(f).mean())) for f in heard.reshape(50, 160)]}"
        )
        assert level - tone_level_db(heard, own) >= 20, "a bot hears itself"
        assert level - noise_floor_db(heard, [own, other]) >= 20

    await session_a.close(1000, "goodbye")
    hangup = await env.hooks.wait(leg_a, "call.hangup")
    assert hangup.payload["hangup_cause"] == "normal_clearing"
    assert hangup.payload["hangup_source"] == "callee"
    # B's bridge dissolved and B was not parked: callbridge ends B's stream too.
    await session_b.wait_closed()
    assert session_b.events()[-1] == "stop"
    await env.hooks.wait(leg_b, "call.hangup")
    assert env.gateway.leg(leg_a) is None and env.gateway.leg(leg_b) is None


async def test_a_peers_key_press_reaches_a_bridged_bot_as_a_dtmf_message(
    env: Env, aiohttp_server: Any
) -> None:
    bot_a = await AgentBot.start(aiohttp_server, tone_hz=440)
    bot_b = await AgentBot.start(aiohttp_server, tone_hz=None)
    leg_a, session_a = await env.answered_bot(bot_a)
    leg_b, session_b = await env.answered_bot(bot_b)
    await env.act(leg_a, "bridge", call_control_id=leg_b)
    await env.hooks.wait(leg_b, "call.bridged")
    begin, _ = await session_b.listen(0, frames=1)  # B hears A talking
    runtime = env.client.app[RUNTIME]
    # As a provider leg's stream reports a key (out-of-band), then as the media core hears one.
    await runtime.media_dtmf(leg_a, "5")
    await runtime.event(DtmfReceived(leg_a, "#", DtmfSource.IN_BAND))
    await session_b.wait_event("dtmf", 2)
    first, second = session_b.of("dtmf")
    assert first == {
        "event": "dtmf",
        "streamSid": session_b.stream_sid,
        "sequenceNumber": first["sequenceNumber"],
        "dtmf": {"track": "inbound_track", "digit": "5"},
    }
    assert second["dtmf"] == {"track": "inbound_track", "digit": "#"}
    # In the stream's one sequence, and no tones regenerated into the bot's audio (a relayed
    # digit sounds for 250 ms: 25 frames cover it).
    heard_from = len(session_b.media())
    await session_b.wait_media(heard_from + 25)
    sequence = [int(m["sequenceNumber"]) for m in session_b.messages[1:]]
    assert sequence == list(range(1, len(sequence) + 1))
    heard = session_b.heard(from_frame=begin)
    assert tone_level_db(heard, 440) > -25, "B hears A"
    for hz in (770, 1336, 941, 1477):  # the tones of "5" and "#"
        assert tone_level_db(heard, hz) < -50, f"the bot heard a {hz} Hz DTMF tone"
    # The presser's own bot hears nothing of its key presses; the application hears of them.
    assert (await env.hooks.wait(leg_a, "call.dtmf.received")).payload["digit"] == "5"
    assert session_a.of("dtmf") == []


async def test_a_bot_that_refuses_or_cannot_be_reached_ends_the_leg(
    env: Env, aiohttp_server: Any
) -> None:
    refusing = await AgentBot.start(aiohttp_server, refuse_status=403)
    unreachable = f"ws://127.0.0.1:{free_port()}/bot"
    for url in [refusing.url, unreachable]:
        leg = await env.dial(url)
        hangup = await env.hooks.wait(leg, "call.hangup")
        assert hangup.payload["hangup_cause"] == "unspecified"
        assert "call.answered" not in env.hooks.types(leg)
        assert not await env.is_alive(leg)
    assert refusing.refused == 1
    assert env.gateway.counters.connected == 0


async def test_the_gateway_accepts_only_websocket_urls_and_times_out_a_silent_server(
    env: Env,
) -> None:
    def dial(to: str, timeout_secs: int = 5) -> DialCall:
        return DialCall(
            call_control_id="v3:direct",
            org_id=env.org.org_id,
            connection_id="x",
            from_="+15550001111",
            to=to,
            timeout_secs=timeout_secs,
        )

    for url in ["http://127.0.0.1/bot", "wss://", "ws:///path", "file:///etc/passwd"]:
        with pytest.raises(ProviderError, match="ws:// or wss://"):
            await env.gateway.dial(dial(url))

    # A server that takes the connection and never answers the upgrade.
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        started = time.monotonic()
        with pytest.raises(ProviderError, match="did not answer within 1 s"):
            await env.gateway.dial(dial(f"ws://127.0.0.1:{port}/bot", timeout_secs=1))
        assert time.monotonic() - started < 3
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_garbage_from_a_bot_is_counted_and_ignored(env: Env, aiohttp_server: Any) -> None:
    bot = await AgentBot.start(aiohttp_server, tone_hz=None)
    leg, session = await env.answered_bot(bot)
    sid = session.stream_sid
    garbage: list[str | dict[str, Any]] = [
        "not json at all",
        "[]",
        {"event": "media"},
        {"event": "media", "streamSid": sid, "media": {"payload": "AAE="}, "extra": 1},
        {"event": "media", "streamSid": "MZ" + "0" * 32, "media": {"payload": "AAE="}},
        {"event": "media", "streamSid": sid, "media": {"payload": "%%%not-base64"}},
        {"event": "dtmf", "streamSid": sid, "dtmf": {"digit": "1"}},
        {"event": "mark", "streamSid": sid, "mark": {"name": "x", "color": "red"}},
    ]
    for frame in garbage:
        await session.send(frame)
    await session.send_mark("still-here")
    echo = await session.wait_event("mark")
    assert echo["mark"] == {"name": "still-here"}
    agent = env.gateway.leg(leg)
    assert agent is not None
    assert agent.protocol_errors == len(garbage)
    assert env.gateway.counters.protocol_errors == len(garbage)
    assert await env.is_alive(leg)
    heard = len(session.media())
    await session.wait_media(heard + 5)  # the stream goes on
    assert "call.hangup" not in env.hooks.types(leg)


async def test_binary_or_oversized_frames_close_the_bot_and_no_other_call_notices(
    env: Env, aiohttp_server: Any
) -> None:
    healthy = await AgentBot.start(aiohttp_server, tone_hz=440)
    hostile = await AgentBot.start(aiohttp_server, tone_hz=None)
    good_leg, good = await env.answered_bot(healthy)
    binary_leg, binary = await env.answered_bot(hostile, 0)
    huge_leg, huge = await env.answered_bot(hostile, 1)

    await binary.send(b"\x00" * 160)
    await binary.wait_closed()
    assert (binary.close_code, binary.close_reason) == (1003, "binary frames are not accepted")
    hangup = await env.hooks.wait(binary_leg, "call.hangup")
    assert hangup.payload["hangup_cause"] == "unspecified"

    await huge.send("x" * (600 * 1024))
    await huge.wait_closed()
    assert huge.close_code == 1009  # message too big, from the websockets client
    hangup = await env.hooks.wait(huge_leg, "call.hangup")
    assert hangup.payload["hangup_cause"] == "unspecified"

    seen = len(good.media())
    await good.wait_media(seen + 10)
    assert await env.is_alive(good_leg)
    assert env.gateway.leg(good_leg) is not None
    assert "call.hangup" not in env.hooks.types(good_leg)


async def test_marks_come_back_after_their_audio_has_played_and_clear_flushes(
    env: Env, aiohttp_server: Any
) -> None:
    bot = await AgentBot.start(aiohttp_server, tone_hz=None)
    leg, session = await env.answered_bot(bot)
    second = encode(PCMU_8K, np.concatenate([ToneSource(700).next_frame() for _ in range(50)]))
    assert len(second) == 8000

    # One second sent at once plays in real time: its mark returns about a second later,
    # counted on the media clock (the frames the bot heard meanwhile, one per 20 ms tick), not
    # on the wall clock, which a loaded machine stretches.
    before = len(session.messages)
    await session.send_media(second)
    await session.send_mark("one-second")
    echo = await session.wait_event("mark")
    ticks = sum(
        1
        for message in session.messages[before : session.messages.index(echo)]
        if message.get("event") == "media"
    )
    assert echo == {
        "event": "mark",
        "sequenceNumber": echo["sequenceNumber"],
        "streamSid": session.stream_sid,
        "mark": {"name": "one-second"},
    }
    assert 45 <= ticks <= 60, f"the mark came back after {ticks} ticks"

    # Three seconds queued, then clear: the pending mark returns at once.
    sent = time.monotonic()
    for _ in range(3):
        await session.send_media(second)
    await session.send_mark("cleared")
    await session.send_clear()
    echo = await session.wait_event("mark", 2)
    assert echo["mark"] == {"name": "cleared"}
    took = session.arrivals[session.messages.index(echo)] - sent
    assert took < 1.0, f"clear took {took:.3f} s to return the mark"
    agent = env.gateway.leg(leg)
    assert agent is not None and agent.playout.queued_bytes == 0
    assert agent.protocol_errors == 0
