"""The provider's side of one media websocket: the simulator dials the server, like Twilio and
Telnyx do, and the provider subclasses supply the wire format.

``MediaStream.run`` sends ``connected`` and ``start``, then the call's audio through a
``PacedSender``, and reads what the server sends: media is queued on the call's ``Playout``
(played in real time by the call), marks queued behind it, ``clear`` flushes. A frame the
provider would refuse is recorded on the call as a protocol error and handed to ``refused``
(Telnyx answers with an error frame, Twilio says nothing), and ignored. ``run`` returns why the
stream ended: the server closed it, the scheduled disconnect dropped it, or ``stop`` was called.
"""

from __future__ import annotations

import abc
import asyncio
import enum
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from adapters.simulators.audio import Samples
from adapters.simulators.common import SimulatedCall
from adapters.simulators.pacing import PacedSender

__all__ = [
    "InClear",
    "InMark",
    "InMedia",
    "Inbound",
    "MediaStream",
    "Refused",
    "StreamEnd",
    "StreamOpenError",
]

# Largest frame the server may send: Telnyx allows 30 s of 16 kHz L16 in one (~1.3 MB base64).
MAX_FRAME_BYTES = 4 * 1024 * 1024


class StreamEnd(enum.Enum):
    SERVER_CLOSED = "server_closed"
    DROPPED = "dropped"
    STOPPED = "stopped"


class StreamOpenError(Exception):
    """The websocket handshake failed; ``status`` is the HTTP status if one came back."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class Refused(Exception):
    def __init__(self, code: str, title: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.title = title
        self.detail = detail


@dataclass(frozen=True, slots=True)
class InMedia:
    samples: Samples


@dataclass(frozen=True, slots=True)
class InMark:
    name: str


@dataclass(frozen=True, slots=True)
class InClear:
    pass


Inbound = InMedia | InMark | InClear


class MediaStream(abc.ABC):
    """One media websocket of one call, from the provider to the server."""

    #: The frame counter key: ``sequenceNumber`` (Twilio) or ``sequence_number`` (Telnyx).
    seq_key: ClassVar[str]
    #: The User-Agent of the provider's websocket client.
    user_agent: ClassVar[str]

    def __init__(
        self, call: SimulatedCall, url: str, headers: Mapping[str, str], stream_id: str
    ) -> None:
        self.call = call
        self.url = url
        self.headers = dict(headers)
        self.stream_id = stream_id
        self.origin: float | None = None
        self.end: StreamEnd | None = None
        self.sender: PacedSender | None = None
        self._ws: ClientConnection | None = None
        self._seq = 0
        # The latest media frame's ``media`` object: junk copies its counters.
        self._last_media: dict[str, Any] = {"track": "inbound", "chunk": "0", "timestamp": "0"}
        self._send_lock = asyncio.Lock()
        self._stopping = False
        self._running = False
        self._closed = asyncio.Event()
        # Cleared while the provider's side stops reading (``stall_reading``): the websocket
        # library's queue fills, then the kernel's buffers, and the server's writes back up.
        self._reading = asyncio.Event()
        self._reading.set()
        self._rcvbuf: int | None = None  # the receive buffer's size before a stall

    # --- wire format, per provider --------------------------------------------------------------

    @abc.abstractmethod
    def connected_message(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def start_message(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def media_message(self, n: int, samples: Samples) -> dict[str, Any]: ...

    @abc.abstractmethod
    def mark_message(self, name: str) -> dict[str, Any]: ...

    @abc.abstractmethod
    def dtmf_message(self, digit: str) -> dict[str, Any]: ...

    @abc.abstractmethod
    def stop_message(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def id_fields(self) -> dict[str, str]:
        """The keys naming this stream on every frame after ``connected``."""

    @abc.abstractmethod
    def parse_inbound(self, data: str | bytes) -> Inbound:
        """The server's frame, or ``Refused`` with the provider's error code."""

    @abc.abstractmethod
    async def refused(self, error: Refused) -> None:
        """What the provider does besides recording and ignoring a refused frame."""

    def queue_audio(self, samples: Samples) -> None:
        """Queue received audio on the call's playout (subclasses refuse an over-full queue)."""
        self.call.playout.queue_audio(samples)

    # --- lifecycle -----------------------------------------------------------------------------

    def next_seq(self) -> str:
        self._seq += 1
        return str(self._seq)

    async def open(self, timeout_s: float = 10.0) -> None:
        try:
            self._ws = await connect(
                self.url,
                additional_headers=self.headers,
                open_timeout=timeout_s,
                max_size=MAX_FRAME_BYTES,
                compression=None,
                user_agent_header=self.user_agent,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise StreamOpenError(f"handshake answered HTTP {status}", status) from None
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise StreamOpenError(f"cannot open websocket: {exc}") from None

    async def run(self) -> StreamEnd:
        """Stream until the socket closes; ``open`` must have succeeded."""
        ws = self._ws
        assert ws is not None, "open() first"
        self._running = True
        try:
            if not self._stopping:
                await self._stream(ws)
        finally:
            if self.end is None:
                self.end = StreamEnd.STOPPED if self._stopping else StreamEnd.SERVER_CLOSED
            self._closed.set()
            self.call.stream_ended(self)
        return self.end

    async def _stream(self, ws: ClientConnection) -> None:
        call = self.call
        await self.send(self.connected_message(), stamp=False)
        self.origin = time.monotonic()
        await self.send(self.start_message())
        call.stream_started(self, self.origin)
        self.sender = PacedSender(
            call.voice, self.media_message, self._send_media, call.impairments, origin=self.origin
        )
        sender = asyncio.ensure_future(self.sender.run())
        reader = asyncio.ensure_future(self._read())
        try:
            await asyncio.wait({sender, reader}, return_when=asyncio.FIRST_COMPLETED)
            if sender.done() and not sender.cancelled() and sender.result():
                self.end = StreamEnd.DROPPED
                # An abrupt drop: no close frame, as when the network goes away.
                ws.transport.abort()
            await reader
        finally:
            sender.cancel()
            reader.cancel()
            await asyncio.gather(sender, reader, return_exceptions=True)

    async def stop(self) -> None:
        """End the stream from the provider's side: ``stop``, then a normal close."""
        if self._ws is None or self._stopping:
            return
        self._stopping = True
        self._reading.set()  # the close handshake is read like any frame
        await self.send(self.stop_message())
        await self._ws.close()
        if self._running:
            await self._closed.wait()

    def drop(self) -> None:
        """The network goes away: the socket is cut, no ``stop``, no close frame."""
        if self._ws is not None and not self._stopping:
            self.end = StreamEnd.DROPPED
            self._ws.transport.abort()

    async def abort(self) -> None:
        """Close without a ``stop`` frame (the simulator is shutting down)."""
        self._reading.set()  # a stuck side still takes its own socket down
        if self._ws is not None:
            self._stopping = True
            await self._ws.close()

    # --- sending -------------------------------------------------------------------------------

    async def send(self, message: dict[str, Any], *, stamp: bool = True) -> None:
        """Send one frame; the counter is stamped now unless the frame already has one."""
        ws = self._ws
        if ws is None:
            return
        async with self._send_lock:
            if stamp and self.seq_key not in message:
                message[self.seq_key] = self.next_seq()
            try:
                await ws.send(orjson.dumps(message).decode())
            except ConnectionClosed:
                # The reader sees the close and ends the stream; nothing to do here.
                return

    async def _send_media(self, message: dict[str, Any]) -> None:
        self._last_media = message["media"]
        await self.send(message)
        self.call.media_frames_sent += 1

    async def send_marks(self, names: list[str]) -> None:
        for name in names:
            await self.send(self.mark_message(name))

    async def send_dtmf(self, digit: str) -> None:
        await self.send(self.dtmf_message(digit))

    async def send_junk(self, kind: str) -> None:
        """One frame of junk of ``kind`` (see ``common.JUNK_KINDS``): what a buggy or newer
        provider could put on the socket. Frames that carry a counter get the next one."""
        ids = self.id_fields()
        if kind == "bad_json":
            await self.send_raw(orjson.dumps({"event": "media", **ids}).decode()[:-1] + ', "me')
        elif kind == "binary":
            await self.send_raw(b"\x00\x01 not a text frame")
        elif kind == "bad_base64":
            # A copy of the last media frame whose payload cannot be decoded.
            media = {**self._last_media, "payload": "%%not*base64%%"}
            await self.send({"event": "media", **ids, "media": media})
        elif kind == "unknown_event":
            await self.send({"event": "x-future-event", **ids, "x-future-event": {"n": 1}})
        elif kind == "mark_without_name":
            await self.send({"event": "mark", **ids, "mark": {}})
        elif kind == "error_extra_fields":
            error = {"code": "100002", "title": "unknown_error", "detail": "simulated",
                     "x_extra": {"nested": True}}  # fmt: skip
            await self.send({"event": "error", **ids, "error": error, "x_extra": "field"})
        else:
            raise ValueError(f"unknown junk kind {kind!r}")

    async def send_raw(self, data: str | bytes) -> None:
        """Send ``data`` as it is (a text frame for str, binary for bytes)."""
        ws = self._ws
        if ws is None:
            return
        async with self._send_lock:
            try:
                await ws.send(data)
            except ConnectionClosed:
                return

    # --- receiving -----------------------------------------------------------------------------

    def stall_reading(self, stalled: bool = True) -> None:
        """Stop (or go back to) reading the socket: a provider side that is stuck. Its receive
        buffer is made small first, so the back-up reaches the server within seconds rather
        than once the kernel's autotuned window (megabytes) has filled."""
        sock = self._ws.transport.get_extra_info("socket") if self._ws is not None else None
        if stalled:
            if sock is not None:
                if self._rcvbuf is None:
                    self._rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            self._reading.clear()
        else:
            # The buffer goes back to its size: left at 4 KiB, below one loopback segment (64
            # KiB), the receiver never opens a window the sender will fill (silly-window
            # avoidance on both ends) and the connection stays stuck after the stall.
            if sock is not None and self._rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._rcvbuf // 2)
                self._rcvbuf = None
            self._reading.set()

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for data in self._ws:
                await self._reading.wait()
                await self._handle(data)
        except ConnectionClosed:
            pass

    async def _handle(self, data: str | bytes) -> None:
        call = self.call
        try:
            message = self.parse_inbound(data)
        except Refused as error:
            call.add_protocol_error(error.code, error.detail, data)
            await self.refused(error)
            return
        if isinstance(message, InMedia):
            call.media_frames_received += 1
            self.queue_audio(message.samples)
        elif isinstance(message, InMark):
            self._record(data)
            returned = call.playout.queue_mark(message.name)
            for name in returned:
                call.marks_returned.append((name, call.playout_tick))
            await self.send_marks(returned)
        else:
            self._record(data)
            flushed = call.playout.clear()
            for name in flushed:
                call.marks_returned.append((name, call.playout_tick))
            await self.send_marks(flushed)
        call.notify()

    def _record(self, data: str | bytes) -> None:
        # Only frames that parsed reach here, so they are JSON objects.
        self.call.received_messages.append(orjson.loads(data))
