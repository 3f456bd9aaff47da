"""A small voice bot for tests: the application side of Twilio Media Streams, on 127.0.0.1.

callbridge dials it as a websocket agent leg (``POST /v2/calls`` with ``to`` = ``bot.url``) and
speaks Twilio's side; the bot records every frame it receives and, once ``start`` arrived,
streams a tone back at real-time pacing (one 20 ms mu-law frame per tick, drift-free), as a
voice bot streaming TTS would. Tests script anything else through ``BotSession`` (raw frames,
marks, ``clear``, closing the socket) and wait on what arrives with timeouts, never sleeps.

    bot = await AgentBot.start(aiohttp_server, tone_hz=440)
    ... dial bot.url ...
    session = await bot.session()           # the first connection
    await session.wait_media(50)            # one second of what the caller side said
    samples = session.heard(from_frame=10)  # int16, 8 kHz, for adapters.simulators.audio
    begin, samples = await session.listen(len(session.media()))  # the next second of sound

``refuse_status`` makes the bot answer the upgrade with that HTTP status instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pybase64
from aiohttp import WSMsgType, web

from adapters.simulators.audio import SilenceSource, ToneSource
from adapters.simulators.pacing import run_ticks
from media.codecs import PCMU_8K, decode, encode

WAIT_S = 5.0  # the longest a test waits for something that should happen

__all__ = ["WAIT_S", "AgentBot", "BotSession"]


class BotSession:
    """One websocket connection from callbridge to the bot."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ws = ws
        self.path_qs = request.path_qs
        self.headers = dict(request.headers)
        self.messages: list[dict[str, Any]] = []  # every JSON text frame received, in order
        self.arrivals: list[float] = []  # time.monotonic() of each, same index
        self.binary_frames = 0
        self.close_code: int | None = None  # what callbridge closed with
        self.close_reason: str | None = None
        self.ended = asyncio.Event()
        self._changed = asyncio.Condition()
        self._speaker: asyncio.Task[None] | None = None

    # -- what arrived ---------------------------------------------------------------------
    @property
    def stream_sid(self) -> str:
        start = self.first("start")
        assert start is not None, "no start yet"
        return str(start["streamSid"])

    def events(self) -> list[str]:
        return [str(m.get("event")) for m in self.messages]

    def first(self, event: str) -> dict[str, Any] | None:
        return next((m for m in self.messages if m.get("event") == event), None)

    def of(self, event: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("event") == event]

    def media(self) -> list[dict[str, Any]]:
        return self.of("media")

    def heard(self, from_frame: int = 0, frames: int | None = None) -> np.ndarray[Any, Any]:
        """The audio of media frames ``from_frame`` on (``frames`` of them), as int16."""
        chosen = self.media()[from_frame:]
        if frames is not None:
            chosen = chosen[:frames]
        raw = b"".join(pybase64.b64decode(m["media"]["payload"]) for m in chosen)
        return decode(PCMU_8K, raw)

    def first_sound(self, from_frame: int = 0, threshold: float = 100.0) -> int | None:
        """The index of the first media frame from ``from_frame`` on that is not silence."""
        for index, frame in enumerate(self.media()[from_frame:], start=from_frame):
            samples = decode(PCMU_8K, pybase64.b64decode(frame["media"]["payload"]))
            if samples.size and float(np.abs(samples.astype(np.int32)).mean()) > threshold:
                return index
        return None

    async def listen(self, from_frame: int, frames: int = 50) -> tuple[int, np.ndarray[Any, Any]]:
        """Wait for sound from ``from_frame`` on, then for ``frames`` frames of it; returns
        where the sound began and those frames' audio."""
        await self.wait_for(lambda: self.first_sound(from_frame) is not None)
        begin = self.first_sound(from_frame)
        assert begin is not None
        await self.wait_media(begin + frames)
        return begin, self.heard(from_frame=begin, frames=frames)

    async def wait_for(self, check: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S), self._changed:
            await self._changed.wait_for(check)

    async def wait_event(self, event: str, count: int = 1) -> dict[str, Any]:
        """The ``count``-th frame of ``event``, once it has arrived."""
        await self.wait_for(lambda: len(self.of(event)) >= count)
        return self.of(event)[count - 1]

    async def wait_media(self, count: int) -> list[dict[str, Any]]:
        """Wait until ``count`` media frames arrived in all; returns every media frame."""
        await self.wait_for(lambda: len(self.media()) >= count)
        return self.media()

    async def wait_closed(self) -> None:
        async with asyncio.timeout(WAIT_S):
            await self.ended.wait()

    # -- what the bot says ----------------------------------------------------------------
    async def send(self, frame: str | bytes | dict[str, Any]) -> None:
        """Any frame, as is: a dict goes as JSON text, bytes as a binary frame."""
        if isinstance(frame, dict):
            await self.ws.send_str(orjson.dumps(frame).decode())
        elif isinstance(frame, bytes):
            await self.ws.send_bytes(frame)
        else:
            await self.ws.send_str(frame)

    async def send_media(self, payload: bytes) -> None:
        sid = self.stream_sid
        body = {"payload": pybase64.b64encode_as_string(payload)}
        await self.send({"event": "media", "streamSid": sid, "media": body})

    async def send_mark(self, name: str) -> None:
        await self.send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    async def send_clear(self) -> None:
        await self.send({"event": "clear", "streamSid": self.stream_sid})

    async def close(self, code: int = 1000, reason: str = "bot done") -> None:
        """The bot hangs up."""
        self.stop_speaking()
        await self.ws.close(code=code, message=reason.encode())

    def speak(self, tone_hz: float | None, level_dbfs: float = -12.0) -> None:
        """Stream a tone (silence for None) in real time from now, until stopped or closed."""
        self.stop_speaking()
        source = SilenceSource() if tone_hz is None else ToneSource(tone_hz, level_dbfs)

        async def tick(_k: int) -> None:
            await self.send_media(encode(PCMU_8K, source.next_frame()))

        async def run() -> None:
            with contextlib.suppress(ConnectionResetError):  # callbridge closed the socket
                await run_ticks(tick, origin=time.monotonic())

        self._speaker = asyncio.ensure_future(run())

    def stop_speaking(self) -> None:
        if self._speaker is not None:
            self._speaker.cancel()
            self._speaker = None

    # -- the connection -------------------------------------------------------------------
    async def _received(self, message: dict[str, Any]) -> None:
        async with self._changed:
            self.messages.append(message)
            self.arrivals.append(time.monotonic())
            self._changed.notify_all()

    async def run(self, tone_hz: float | None) -> None:
        ws = self.ws
        try:
            while True:
                msg = await ws.receive()
                if msg.type is WSMsgType.TEXT:
                    message = orjson.loads(msg.data)
                    await self._received(message)
                    if message.get("event") == "start" and tone_hz is not None:
                        self.speak(tone_hz)
                elif msg.type is WSMsgType.BINARY:
                    self.binary_frames += 1
                else:
                    if msg.type is WSMsgType.CLOSE:
                        self.close_code, self.close_reason = msg.data, msg.extra
                    break
        finally:
            self.stop_speaking()
            if self.close_code is None:
                self.close_code = ws.close_code
            async with self._changed:
                self.ended.set()
                self._changed.notify_all()


class AgentBot:
    """The bot's server; every connection becomes a ``BotSession``."""

    def __init__(self, tone_hz: float | None, refuse_status: int | None) -> None:
        self.tone_hz = tone_hz
        self.refuse_status = refuse_status
        self.sessions: list[BotSession] = []
        self.refused = 0
        self.url = ""
        self._changed = asyncio.Condition()

    @classmethod
    async def start(
        cls,
        aiohttp_server: Any,
        *,
        tone_hz: float | None = 440.0,
        refuse_status: int | None = None,
        path: str = "/bot",
    ) -> AgentBot:
        """Serve on 127.0.0.1 through pytest-aiohttp's ``aiohttp_server`` (closed with it)."""
        bot = cls(tone_hz, refuse_status)
        app = web.Application()
        app.router.add_get(path, bot._handle)
        app.on_shutdown.append(bot._shutdown)
        server = await aiohttp_server(app, host="127.0.0.1")
        bot.url = f"ws://127.0.0.1:{server.port}{path}"
        return bot

    async def session(self, index: int = 0) -> BotSession:
        """The ``index``-th connection, once callbridge has made it."""
        async with asyncio.timeout(WAIT_S), self._changed:
            await self._changed.wait_for(lambda: len(self.sessions) > index)
        return self.sessions[index]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.refuse_status is not None:
            self.refused += 1
            return web.Response(status=self.refuse_status, text="no bots today")
        ws = web.WebSocketResponse(max_msg_size=8 * 1024 * 1024)
        await ws.prepare(request)
        session = BotSession(ws, request)
        async with self._changed:
            self.sessions.append(session)
            self._changed.notify_all()
        await session.run(self.tone_hz)
        return ws

    async def _shutdown(self, _app: web.Application) -> None:
        for session in self.sessions:
            if not session.ws.closed:
                await session.close(1001, "bot server shutting down")
