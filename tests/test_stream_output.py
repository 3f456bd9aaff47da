"""The one output writer of every media stream (``adapters/stream_output.py``).

Its policy over a fake transport sink (what a transport supplies: a synchronous write that says
whether it is back-pressured, and an awaitable that returns once it drained), then the aiohttp
sink over a real server and a raw client socket: a burst is on the wire before the loop runs,
and a peer that stops reading gets its frames held, the oldest dropped, the rest flushed in
order once it reads again.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.media_session import socket_output
from adapters.stream_output import MAX_QUEUED_FRAMES, FrameWriter
from adapters.transport import (
    MEDIA_SEND_BUFFER_BYTES,
    MEDIA_WRITE_HIGH_WATER,
    AiohttpMediaSocket,
    text_frame_header,
)
from adapters.twilio.stream import TwilioStreamCodec
from engine.media_plane.stats import LegMediaStats

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]


class Sink:
    """A transport as the writer sees it: what went on the wire, a full buffer on demand, a
    lost connection on demand, and a drain the test releases."""

    def __init__(self) -> None:
        self.wire: list[bytes] = []
        self.full_after: int | None = None  # back-pressured once the wire holds this many
        self.gone = False
        self._writable = asyncio.Event()
        self._written = asyncio.Event()
        self.drains = 0  # awaits of ``drained``

    def write(self, message: bytes) -> bool:
        if self.gone:
            raise ConnectionResetError("peer gone")
        self.wire.append(message)
        self._written.set()
        full = self.full_after is not None and len(self.wire) >= self.full_after
        if full:
            self._writable.clear()
        return full

    async def drained(self) -> None:
        self.drains += 1
        await self._writable.wait()
        if self.gone:
            raise ConnectionResetError("peer gone")

    def drain(self, full_after: int | None = None) -> None:
        """The peer reads: the transport takes data again (until ``full_after`` messages)."""
        self.full_after = full_after
        self._writable.set()

    async def until_wire_holds(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self.wire) < count:
                self._written.clear()
                await self._written.wait()


def media(n: int) -> bytes:
    return b"m%d" % n


def writer_over(sink: Sink) -> tuple[FrameWriter[int], LegMediaStats]:
    stats = LegMediaStats()
    return FrameWriter(sink.write, media, stats, drained=sink.drained), stats


def backed_up(frames: int) -> tuple[Sink, FrameWriter[int], LegMediaStats]:
    """A writer over a transport full after its first frame, sent frames 0 .. ``frames`` - 1."""
    sink = Sink()
    sink.full_after = 1
    writer, stats = writer_over(sink)
    for n in range(frames):
        writer.send_frame(n)
    return sink, writer, stats


async def test_frames_go_on_the_wire_at_once_in_order_and_are_counted() -> None:
    sink = Sink()
    writer, stats = writer_over(sink)
    for n in range(3):
        writer.send_frame(n)
    assert sink.wire == [media(0), media(1), media(2)], "written by the caller, no await"
    assert stats.frames_out == 3 and writer.queued == 0


async def test_back_pressure_holds_a_bounded_queue_dropping_the_oldest() -> None:
    sink, writer, stats = backed_up(1 + MAX_QUEUED_FRAMES + 3)
    assert sink.wire == [media(0)]
    assert writer.queued == MAX_QUEUED_FRAMES and stats.output_dropped == 3
    assert stats.frames_out == 1
    await writer.close()


async def test_a_drained_transport_gets_what_waited_in_order_then_new_frames_at_once() -> None:
    sink, writer, stats = backed_up(1 + MAX_QUEUED_FRAMES + 2)
    sink.drain()
    await sink.until_wire_holds(1 + MAX_QUEUED_FRAMES)
    assert sink.wire == [media(0)] + [media(n) for n in range(3, 3 + MAX_QUEUED_FRAMES)]
    assert stats.frames_out == 1 + MAX_QUEUED_FRAMES and writer.queued == 0
    writer.send_frame(99)
    assert sink.wire[-1] == media(99), "writable again: written at once"
    assert sink.drains == 1, "one drain task for the one back-pressured spell"
    await writer.close()


async def test_a_flush_that_fills_the_transport_again_waits_again_in_the_same_task() -> None:
    sink, writer, stats = backed_up(5)
    sink.drain(full_after=3)  # takes two of the four, then is full again
    await sink.until_wire_holds(3)
    assert writer.queued == 2
    sink.drain()
    await sink.until_wire_holds(5)
    assert sink.wire == [media(n) for n in range(5)] and stats.frames_out == 5
    assert sink.drains == 2
    await writer.close()


async def test_control_goes_ahead_of_waiting_audio_in_its_own_order() -> None:
    sink = Sink()
    writer, stats = writer_over(sink)
    writer.send_control(b"c0")
    assert sink.wire == [b"c0"], "written at once while the transport takes data"
    sink.full_after = 2
    writer.send_frame(1)
    writer.send_frame(2)
    writer.send_control(b"c1")
    writer.send_frame(3)
    writer.send_control(b"c2")
    sink.drain()
    await sink.until_wire_holds(6)
    assert sink.wire == [b"c0", media(1), b"c1", b"c2", media(2), media(3)]
    assert stats.frames_out == 3, "control messages are not media frames"
    await writer.close()


async def test_a_flush_drops_waiting_audio_and_sends_the_clear_ahead_of_what_follows() -> None:
    sink = Sink()
    stats = LegMediaStats()
    writer = FrameWriter(sink.write, media, stats, drained=sink.drained, clear=b"clear")
    writer.send_frame(0)
    writer.flush()  # the transport takes data: the clear goes at once
    assert sink.wire == [media(0), b"clear"]
    sink.full_after = 3
    writer.send_frame(1)  # the wire is full after this one
    writer.send_frame(2)
    writer.send_frame(3)  # 2 and 3 wait: audio of the room the leg is leaving
    writer.flush()
    writer.send_frame(4)  # the new room
    sink.drain()
    await sink.until_wire_holds(5)
    assert sink.wire == [media(0), b"clear", media(1), b"clear", media(4)]
    assert (stats.frames_out, stats.output_dropped) == (3, 0), "stale audio is not a drop"
    await writer.close()


async def test_a_flush_without_a_clear_message_only_drops_waiting_audio() -> None:
    sink, writer, _stats = backed_up(3)  # frame 0 on the wire, 1 and 2 waiting
    writer.flush()
    writer.send_frame(3)
    sink.drain()
    await sink.until_wire_holds(2)
    assert sink.wire == [media(0), media(3)]
    await writer.close()


async def test_a_lost_connection_stops_the_writer_and_nothing_more_counts() -> None:
    sink = Sink()
    writer, stats = writer_over(sink)
    writer.send_frame(0)
    sink.gone = True
    writer.send_frame(1)
    sink.gone = False  # whatever the transport says later, the writer is done
    writer.send_frame(2)
    writer.send_control(b"late")
    assert sink.wire == [media(0)] and stats.frames_out == 1 and stats.output_dropped == 0


async def test_a_connection_lost_while_back_pressured_drops_what_waited() -> None:
    sink, writer, stats = backed_up(4)
    sink.gone = True
    sink.drain()
    async with asyncio.timeout(5):
        await writer.flushed()  # the drain task heard of the loss and ended
    assert sink.wire == [media(0)] and stats.frames_out == 1 and writer.queued == 0
    writer.send_frame(9)
    assert writer.queued == 0


async def test_close_drops_what_waits_and_ends_a_drain_that_never_comes() -> None:
    sink, writer, stats = backed_up(4)
    async with asyncio.timeout(5):
        await writer.close()
    writer.send_frame(5)
    sink.drain()
    assert sink.wire == [media(0)] and writer.queued == 0
    assert stats.frames_out == 1 and stats.output_dropped == 0, "closing drops nothing counted"


async def test_the_last_message_goes_at_once_when_the_transport_takes_it() -> None:
    sink = Sink()
    writer, _ = writer_over(sink)
    writer.send_frame(0)
    writer.end_with(b"stop")
    writer.send_frame(1)
    writer.send_control(b"late")
    await writer.flushed()
    assert sink.wire == [media(0), b"stop"]


async def test_a_back_pressured_last_message_goes_after_control_and_before_audio() -> None:
    sink = Sink()
    sink.full_after = 1
    writer, stats = writer_over(sink)
    writer.send_frame(0)
    writer.send_frame(1)
    writer.send_control(b"mark")
    writer.end_with(b"stop")
    writer.send_frame(2)  # after the end: never sent
    writer.send_control(b"late")
    sink.drain()
    async with asyncio.timeout(5):
        await writer.flushed()
    assert sink.wire == [media(0), b"mark", b"stop"]
    assert stats.frames_out == 1 and stats.output_dropped == 0


async def test_a_last_message_the_transport_never_takes_is_bounded_by_the_caller() -> None:
    sink = Sink()
    sink.full_after = 1
    writer, _ = writer_over(sink)
    writer.send_frame(0)
    writer.end_with(b"stop")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await writer.flushed()
    await writer.close()
    sink.drain()
    assert sink.wire == [media(0)]


def test_a_transport_that_calls_back_pauses_and_resumes_without_a_task() -> None:
    # No event loop here: picows says pause and resume itself (``drained`` is None).
    wire: list[bytes] = []
    stats = LegMediaStats()
    writer: FrameWriter[int] = FrameWriter(wire.append, media, stats)
    writer.pause()
    writer.send_frame(0)
    writer.send_control(b"c")
    assert wire == []
    writer.resume()
    assert wire == [b"c", media(0)] and stats.frames_out == 1


# -- the aiohttp sink, over a real server and a raw client socket ------------------------------


@dataclass
class RawPeer:
    server_socket: AiohttpMediaSocket
    client: socket.socket  # non-blocking, past the handshake


@pytest.fixture
async def raw_peer(aiohttp_server: ServerFactory) -> AsyncIterator[RawPeer]:
    accepted: asyncio.Future[AiohttpMediaSocket] = asyncio.get_running_loop().create_future()

    async def handle(request: web.Request) -> web.WebSocketResponse:
        media_socket = await AiohttpMediaSocket.accept(request)
        accepted.set_result(media_socket)
        while await media_socket.receive() is not None:
            pass
        return media_socket.response

    app = web.Application()
    app.router.add_get("/media", handle)
    server = await aiohttp_server(app)
    loop = asyncio.get_running_loop()
    client = socket.socket()
    client.setblocking(False)
    await loop.sock_connect(client, (server.host, server.port))
    await loop.sock_sendall(
        client,
        b"GET /media HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    response = b""
    async with asyncio.timeout(5):
        while b"\r\n\r\n" not in response:
            response += await loop.sock_recv(client, 1)  # byte by byte: no frame read
        server_socket = await accepted
    assert response.startswith(b"HTTP/1.1 101")
    try:
        yield RawPeer(server_socket, client)
    finally:
        client.close()


def read_now(client: socket.socket, count: int) -> bytes:
    """``count`` bytes from the socket, blocking this thread (the event loop does not run)."""
    client.settimeout(5)
    data = b""
    try:
        while len(data) < count:
            data += client.recv(count - len(data))
    finally:
        client.setblocking(False)
    return data


def twilio_media(payload: bytes) -> bytes:
    return TwilioStreamCodec().media_renderer("MZ1")(payload)


async def test_a_media_socket_buffers_a_couple_of_seconds_not_megabytes(raw_peer: RawPeer) -> None:
    """The kernel would grow the send buffer to megabytes (minutes of audio behind a stuck peer):
    the media socket bounds it, and asyncio's own buffer, so back-pressure comes in seconds."""
    transport = raw_peer.server_socket._transport
    assert transport is not None
    sock = transport.get_extra_info("socket")
    # Linux doubles SO_SNDBUF for its bookkeeping.
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 2 * MEDIA_SEND_BUFFER_BYTES
    assert transport.get_write_buffer_limits()[1] == MEDIA_WRITE_HIGH_WATER


async def test_an_aiohttp_burst_is_on_the_wire_before_the_loop_runs(raw_peer: RawPeer) -> None:
    stats = LegMediaStats()
    output = socket_output(raw_peer.server_socket, TwilioStreamCodec(), "MZ1", stats)
    burst = [bytes([n]) * 160 for n in range(5)]
    for payload in burst:
        output.send_frame(payload)
    # No await since the first send_frame: a writer task could not have run.
    frames = [text_frame_header(len(m)) + m for m in map(twilio_media, burst)]
    expected = b"".join(frames)
    assert read_now(raw_peer.client, len(expected)) == expected
    assert stats.frames_out == 5 and output.queued == 0
    await output.close()


async def test_an_aiohttp_peer_that_stops_reading_gets_the_newest_second_in_order(
    raw_peer: RawPeer,
) -> None:
    stats = LegMediaStats()
    # Large messages fill the kernel's buffers and then the transport's in a few hundred frames.
    big = b"x" * 60_000
    output: FrameWriter[int] = FrameWriter(
        raw_peer.server_socket.write_now,
        lambda n: b"%06d" % n + big,
        stats,
        drained=raw_peer.server_socket.drained,
    )
    sent = 0
    while output.queued == 0:
        output.send_frame(sent)
        sent += 1
        assert sent < 10_000, "the transport never said it was back-pressured"
    written = stats.frames_out
    for _ in range(MAX_QUEUED_FRAMES + 2):
        output.send_frame(sent)
        sent += 1
    assert stats.output_dropped == 3 and output.queued == MAX_QUEUED_FRAMES
    # The peer reads everything: what was written, then the newest MAX_QUEUED_FRAMES, in order.
    expected = list(range(written)) + list(range(sent - MAX_QUEUED_FRAMES, sent))
    loop = asyncio.get_running_loop()
    header = len(text_frame_header(len(big) + 6))
    received = bytearray()
    size = header + 6 + len(big)
    async with asyncio.timeout(10):
        while len(received) < size * len(expected):
            received += await loop.sock_recv(raw_peer.client, 1 << 20)
    numbers = [int(received[i + header : i + header + 6]) for i in range(0, len(received), size)]
    assert numbers == expected
    assert stats.frames_out == len(expected) and output.queued == 0
    await output.close()
