"""The media port (``CALLBRIDGE_MEDIA_PORT``): provider media served by picows, apart from the API.

A whole bridged call over it is in tests/test_e2e_cross_provider.py (``media-port``); here the
server's own rules, with a real websocket client: which paths it serves, refusals closed with
their codes and reasons as on the API port, fragmented messages put together, shutdown closing
every stream (1001), and the output's back-pressure.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestServer, unused_port
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from adapters.picows_media import direct_output
from adapters.stream_output import MAX_QUEUED_FRAMES
from adapters.telnyx.stream import TelnyxStreamCodec
from engine.app import create_app
from engine.config import Settings
from engine.media_plane.stats import LegMediaStats

START_WITHOUT_TOKEN = orjson.dumps(
    {
        "event": "start",
        "stream_id": "s1",
        "start": {
            "call_control_id": "v3:nobody",
            "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
        },
    }
).decode()


@dataclass
class MediaPort:
    server: TestServer
    url: str  # ws://127.0.0.1:<media port>


@pytest.fixture
async def media_port(settings: Settings) -> AsyncIterator[MediaPort]:
    port = unused_port()
    server = TestServer(create_app(replace(settings, media_port=port)), host="127.0.0.1")
    await server.start_server()
    try:
        yield MediaPort(server, f"ws://127.0.0.1:{port}")
    finally:
        await server.close()


async def closed_with(ws: ClientConnection) -> tuple[int | None, str | None]:
    """Read until the server closes the socket; its close code and reason."""
    async with asyncio.timeout(5):
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.recv()
    return ws.close_code, ws.close_reason


async def test_only_the_provider_media_paths_are_served(media_port: MediaPort) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(media_port.url + "/v2/calls"):
            pass
    assert refused.value.response.status_code == 404


async def test_refusals_close_with_their_codes_and_reasons(media_port: MediaPort) -> None:
    async with connect(media_port.url + "/media/telnyx") as ws:
        await ws.send("{not json")  # dropped, not fatal
        await ws.send(START_WITHOUT_TOKEN)
        assert await closed_with(ws) == (1008, "missing media token")
    async with connect(media_port.url + "/media/twilio") as ws:
        await ws.send('{"event": "start", "start": {}}')
        assert await closed_with(ws) == (1007, "start frame lacks the 'streamSid' string")


async def test_a_fragmented_message_is_put_together(media_port: MediaPort) -> None:
    half = len(START_WITHOUT_TOKEN) // 2
    async with connect(media_port.url + "/media/telnyx") as ws:
        # Three fragments of one text message: only the whole is a start (to be refused for
        # its missing token); a fragment on its own would be dropped as bad JSON.
        await ws.send(iter([START_WITHOUT_TOKEN[:half], START_WITHOUT_TOKEN[half:-1], "}"]))
        assert await closed_with(ws) == (1008, "missing media token")


async def test_shutdown_closes_every_media_stream_going_away(settings: Settings) -> None:
    port = unused_port()
    server = TestServer(create_app(replace(settings, media_port=port)), host="127.0.0.1")
    await server.start_server()
    async with connect(f"ws://127.0.0.1:{port}/media/telnyx") as ws:
        await server.close()
        assert await closed_with(ws) == (1001, "callbridge is restarting")


class Transport:
    """A picows transport as the output uses it: sends recorded."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, kind: Any, message: bytes) -> None:
        self.sent.append(orjson.loads(message)["media"]["payload"])


def test_the_output_writes_at_once_and_holds_only_while_back_pressured() -> None:
    transport = Transport()
    stats = LegMediaStats()
    output = direct_output(transport, TelnyxStreamCodec(), "s1", stats)  # type: ignore[arg-type]
    output.send_frame(b"\x01")
    assert len(transport.sent) == 1, "written by the caller, no task in between"
    output.pause()
    for n in range(MAX_QUEUED_FRAMES + 3):
        output.send_frame(bytes([n]))
    assert len(transport.sent) == 1 and stats.output_dropped == 3, "oldest dropped past a second"
    assert output.queued == MAX_QUEUED_FRAMES
    output.resume()
    assert len(transport.sent) == 1 + MAX_QUEUED_FRAMES
    assert transport.sent[1] == "Aw==", "what waited goes first, oldest kept first"  # b"\x03"
    output.lost()  # what the listener does when picows says the socket is gone
    output.send_frame(b"\x09")
    assert stats.frames_out == 1 + MAX_QUEUED_FRAMES
