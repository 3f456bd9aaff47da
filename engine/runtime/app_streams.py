"""Application streams at work: the websocket of each ``streaming_start`` (``StartAppStream``).

For each stream a task opens the application's websocket as a client (aiohttp, through the URL
policy's guarded connector unless private URLs are allowed: a ``stream_url`` whose name resolves
to a private address is refused at connect time, as webhooks are), with the
``x-telnyx-streaming-auth-token`` header when the command gave ``stream_auth_token``
(PROTOCOLS.md 3.1). It sends ``connected`` and ``start`` (engine.media_plane.app_stream_wire),
hands the media plane a ``LiveStream`` (engine.media_plane.app_streams: each tick's frames of the
leg's track(s); playouts of what comes back), and reports ``AppStreamChanged(started)``. From
then on:

- one writer sends the stream's messages in the order they were made (a bounded queue filled by
  the media tick without waiting; a full queue drops media and counts it: an application that
  does not read cannot hold the tick up);
- one reader parses what the application sends: media, marks and clear go to the stream's
  playouts, a message it cannot take gets an ``error`` frame back and is otherwise ignored.

``StopAppStream`` (streaming_stop, the leg's hangup) takes the stream off the media plane, sends
``stop`` after what was queued and closes the websocket (1000). The application closing its
websocket reports ``stopped``; a connection that cannot be made (refused, unreachable, a bad
handshake, the URL policy, ``CONNECT_TIMEOUT_S``) or that breaks reports ``failed``
(``failure_reason`` ``connection_failed`` or ``connection_lost``). Either way the call goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

import aiohttp

from engine.logs import get_logger
from engine.machine import events as ev
from engine.machine.effects import StartAppStream, StopAppStream, StreamDtmf
from engine.media_plane.app_stream_wire import (
    AUTH_TOKEN_HEADER,
    StreamWire,
    WireError,
    parse_app_message,
)
from engine.media_plane.app_streams import LiveStream
from engine.media_plane.plane import MediaPlane
from engine.url_policy import http_connector
from media.codecs import PCMA_8K, PCMU_8K, AudioFormat, Encoding

__all__ = ["AppStreamRunner"]

log = get_logger("callbridge.app_streams")
CONNECT_TIMEOUT_S: Final = 10.0
#: Messages waiting for the websocket: 5 s of both tracks.
MAX_QUEUED_MESSAGES: Final = 500
#: The largest message an application may send: 30 s of G.711 in base64, in JSON.
MAX_APP_MESSAGE: Final = 512 * 1024
_FORMATS: Final = {"PCMU": PCMU_8K, "PCMA": PCMA_8K}

Report = Callable[[ev.Event], Awaitable[None]]


@dataclass(eq=False)
class _Stream:
    start: StartAppStream
    queue: asyncio.Queue[str | None] = field(default_factory=lambda: asyncio.Queue(0))
    live: LiveStream | None = None
    stopping: bool = False
    dropped: int = 0  # messages dropped for a full queue
    task: asyncio.Task[None] | None = None

    def enqueue(self, message: bytes) -> None:
        """A media message: dropped (and counted) while the queue is full."""
        if self.queue.qsize() >= MAX_QUEUED_MESSAGES:
            self.dropped += 1
            return
        self.queue.put_nowait(message.decode())

    def enqueue_control(self, message: bytes) -> None:
        """A mark or an error: kept while media would be dropped, up to twice as many (an
        application that floods them and does not read cannot grow the queue for ever)."""
        if self.queue.qsize() >= 2 * MAX_QUEUED_MESSAGES:
            self.dropped += 1
            return
        self.queue.put_nowait(message.decode())


class AppStreamRunner:
    def __init__(self, plane: MediaPlane, report: Report, allow_private_urls: bool = False) -> None:
        self._plane = plane
        self._report = report
        self._allow_private = allow_private_urls
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._session: aiohttp.ClientSession | None = None

    def apply(self, effect: StartAppStream | StopAppStream | StreamDtmf) -> None:
        key = (effect.call_control_id, effect.stream_id)
        if isinstance(effect, StreamDtmf):
            told = self._streams.get(key)
            if told is not None and told.live is not None:  # one still connecting missed it
                told.enqueue_control(told.live.wire.dtmf(effect.digit))
            return
        if isinstance(effect, StartAppStream):
            stream = self._streams[key] = _Stream(effect)
            stream.task = asyncio.get_running_loop().create_task(self._run(stream))
            return
        stopped = self._streams.pop(key, None)
        if stopped is not None:
            self._stop(stopped)

    def _stop(self, stream: _Stream) -> None:
        stream.stopping = True
        if stream.live is None:  # still connecting: nobody has heard of the stream
            if stream.task is not None:
                stream.task.cancel()
            return
        self._plane.remove_app_stream(stream.live.leg_id, stream.live.stream_id)
        stream.queue.put_nowait(stream.live.wire.stop().decode())  # always: it ends the stream
        stream.queue.put_nowait(None)  # the writer closes the websocket after it

    async def close(self) -> None:
        """The engine is stopping: every websocket closes (1001), nothing is reported."""
        streams, self._streams = list(self._streams.values()), {}
        for stream in streams:
            stream.stopping = True
            if stream.task is not None:
                stream.task.cancel()
        await asyncio.gather(*(s.task for s in streams if s.task), return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _ended(self, stream: _Stream, status: str, reason: str = "") -> None:
        start = stream.start
        if self._streams.get((start.call_control_id, start.stream_id)) is not stream:
            return  # stopped meanwhile: the machine knows
        del self._streams[(start.call_control_id, start.stream_id)]
        if stream.live is not None:
            self._plane.remove_app_stream(start.call_control_id, start.stream_id)
        await self._report(
            ev.AppStreamChanged(start.call_control_id, start.stream_id, status, reason)
        )

    def _format(self, start: StartAppStream) -> AudioFormat:
        """The streamed codec: asked for, or ``default``: the leg's own G.711 law, else PCMU."""
        if start.spec.codec in _FORMATS:
            return _FORMATS[start.spec.codec]
        own = self._plane.input_format(start.call_control_id)
        return PCMA_8K if own is not None and own.encoding is Encoding.PCMA else PCMU_8K

    async def _run(self, stream: _Stream) -> None:
        start = stream.start
        spec = start.spec
        headers = {AUTH_TOKEN_HEADER: spec.auth_token} if spec.auth_token else {}
        if self._session is None:
            connector = http_connector(allow_private=self._allow_private)
            self._session = aiohttp.ClientSession(connector=connector)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                ws = await self._session.ws_connect(
                    spec.url, headers=headers, max_msg_size=MAX_APP_MESSAGE, autoping=True
                )
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            # Not the message: it may quote the URL, whose query can hold a credential.
            why = {"error": type(exc).__name__, "status": getattr(exc, "status", None)}
            log.info("application stream not connected", leg_id=start.call_control_id,
                     stream_id=start.stream_id, **why)  # fmt: skip
            await self._ended(stream, "failed", "connection_failed")
            return
        try:
            await self._serve(stream, ws)
        finally:
            await ws.close(code=1001 if not stream.stopping else 1000)

    async def _serve(self, stream: _Stream, ws: aiohttp.ClientWebSocketResponse) -> None:
        start = stream.start
        wire = StreamWire(
            start.stream_id,
            self._format(start),
            start.call_control_id,
            auth_token=start.spec.auth_token,
        )
        try:
            await ws.send_str(wire.connected().decode())
            await ws.send_str(wire.start(start.start, dict(start.spec.custom_parameters)).decode())
        except (aiohttp.ClientError, ConnectionError):
            await self._ended(stream, "failed", "connection_failed")
            return
        played = _FORMATS[start.spec.bidirectional_codec] if start.spec.bidirectional else None
        stream.live = LiveStream(
            start.call_control_id,
            wire,
            start.spec.track,
            stream.enqueue,
            control=stream.enqueue_control,
            rate=self._plane.mixer.sample_rate,
            listeners=start.listeners,
            played_rate=played.sample_rate if played is not None else 8000,
        )
        self._plane.add_app_stream(stream.live)
        await self._report(ev.AppStreamChanged(start.call_control_id, start.stream_id, "started"))
        writer = asyncio.get_running_loop().create_task(self._write(stream, ws))
        try:
            broken = await self._read(stream, ws, played)
        finally:
            if not writer.done():
                stream.queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer, CONNECT_TIMEOUT_S)
        if not stream.stopping:
            await self._ended(stream, "failed" if broken else "stopped", "connection_lost")
        if stream.dropped:
            log.info("application stream dropped media", leg_id=start.call_control_id,
                     stream_id=start.stream_id, dropped=stream.dropped)  # fmt: skip

    async def _read(
        self, stream: _Stream, ws: aiohttp.ClientWebSocketResponse, played: AudioFormat | None
    ) -> bool:
        """Until the websocket closes; whether it broke (rather than closed)."""
        live = stream.live
        assert live is not None
        async for message in ws:
            if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                try:
                    live.receive(parse_app_message(message.data, played))
                except WireError as error:
                    stream.enqueue_control(live.wire.error(error))
            elif message.type is aiohttp.WSMsgType.ERROR:
                return True
        return ws.exception() is not None

    @staticmethod
    async def _write(stream: _Stream, ws: aiohttp.ClientWebSocketResponse) -> None:
        while (message := await stream.queue.get()) is not None:
            try:
                await ws.send_str(message)
            except (aiohttp.ClientError, ConnectionError):
                return
        await ws.close(code=1000)
