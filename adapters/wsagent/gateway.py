"""Websocket agent legs: callbridge dials a voice bot and speaks Twilio Media Streams to it.

``POST /v2/calls`` with ``to`` = ``ws://...`` or ``wss://...`` reaches ``WebsocketAgentGateway``
through the provider directory. ``dial`` opens the websocket as a client (within the dial's
``timeout_secs``), sends ``connected`` and ``start`` as Twilio would, reports the leg answered
and its media live (mu-law 8 kHz), and from then on one ``AgentLeg`` per bot runs:

- it is the leg's ``MediaOutput``: the engine's frames go to the bot as ``media`` messages,
  stamped when the engine produces them (one per tick, or per peer frame in passthrough), through
  the one output writer (``adapters/stream_output.py``: written at once, queued only while the
  socket is back-pressured, oldest dropped); echoed marks, a peer's key presses (``dtmf``
  messages: the leg is a ``KeyPressOutput``) and ``stop`` are its control messages, ahead of
  queued audio; every message is rendered as it goes out, so ``sequenceNumber`` follows the wire
  order;
- its **reader** parses the bot's frames strictly (``adapters.wsagent.protocol``): media goes
  into the leg's ``Playout``, marks queue behind it, ``clear`` flushes it. A frame Twilio would
  refuse is counted, logged (the first few per leg, then every hundredth) and ignored; a binary
  frame closes the socket with a reason, and ``websockets`` itself closes on an oversized one;
- the gateway's **pump**, run by the engine's own media tick (``engine/media_plane/tick.py``: one
  clock for every leg) just before each mixer pass, feeds each leg's ``Playout`` into the mix
  one frame per tick, as Twilio plays what it is sent in real time, and echoes each mark once
  the audio before it has gone into the mix.

The bot closing the socket ends the leg (``LegHungUp``, ``normal_clearing`` from the callee on a
clean close, ``unspecified`` when the socket failed or we refused a frame); ``hangup`` sends
``stop`` and closes. A bot that cannot be reached or refuses the handshake makes ``dial`` raise
``ProviderError``, which the runtime turns into a ``call.hangup`` with cause ``unspecified``.
Nothing a bot sends reaches the engine other than as mu-law bytes into its own leg's queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver

from adapters.context import AdapterContext
from adapters.stream_output import FrameWriter
from adapters.transport import WebsocketsClientSocket
from adapters.wsagent.protocol import (
    AgentProtocolError,
    AgentStream,
    BotClear,
    BotMark,
    BotMedia,
    Playout,
    StreamIds,
)
from engine.errors import NotFound, ProviderError
from engine.logs import get_logger
from engine.machine import events as ev
from engine.machine.effects import DialCall
from engine.machine.model import HangupCause, HangupSource, RejectCause
from engine.media_plane.stats import LegMediaStats
from engine.runtime.runtime import CallRuntime
from engine.url_policy import ForbiddenAddress, open_guarded_socket
from media.codecs import PCMU_8K

__all__ = ["AgentCounters", "AgentLeg", "WebsocketAgentGateway"]

log = get_logger("callbridge.wsagent")

# A bot may send audio faster than real time (a TTS utterance at once): like Twilio, queue it
# and play it in order, up to a minute; beyond that its media is discarded.
MAX_QUEUED_AUDIO_BYTES: Final = 60 * 8000
# One frame may carry up to about 48 s of mu-law in base64; a larger one closes the socket.
MAX_BOT_MESSAGE: Final = 512 * 1024
# How long a hangup waits for ``stop`` to leave before closing regardless.
STOP_FLUSH_S: Final = 2.0
LOGGED_ERRORS_PER_LEG: Final = 5
CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_UNSUPPORTED: Final = 1003
CLOSE_INTERNAL: Final = 1011


@dataclass(slots=True)
class AgentCounters:
    """Totals over every agent leg of one gateway, ended legs included."""

    dialled: int = 0
    connected: int = 0
    protocol_errors: int = 0
    refused: int = 0  # dials whose address the URL policy refused


def _background(work: Coroutine[object, object, None]) -> asyncio.Task[None]:
    """A task outside the context of the request that dialled: a leg outlives that request, so
    its later log lines must not carry the request's id."""
    return asyncio.get_running_loop().create_task(work, context=contextvars.Context())


def safe_url(url: str) -> str:
    """The URL without credentials or query, for logs and errors (either may carry a token)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    return f"{parts.scheme}://{host}{port}{parts.path}"


class AgentLeg:
    """One dialled bot: its socket, stream state, playout, output and reader."""

    def __init__(
        self,
        leg_id: str,
        socket: WebsocketsClientSocket,
        stream: AgentStream,
        runtime: CallRuntime,
        on_end: Callable[[AgentLeg], None],
        counters: AgentCounters,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.leg_id = leg_id
        self.socket = socket
        self.stream = stream
        self.playout = Playout(max_bytes=MAX_QUEUED_AUDIO_BYTES)
        self.protocol_errors = 0
        self.discarded_bytes = 0
        self.stats = LegMediaStats()  # the leg's own once it is live (``bind_stats``)
        self.live = False  # media_started done: the pacer may feed the mix
        self._runtime = runtime
        self._on_end = on_end
        self._counters = counters
        self._clock = clock
        self._origin = clock()
        # Media is (payload, milliseconds since the start), stamped when the engine sends it.
        self._output: FrameWriter[tuple[bytes, int]] = FrameWriter(
            socket.write_now, self._render_media, self.stats, drained=socket.drained
        )
        self._ending = False  # we are closing the stream: the bot did not hang up
        self._reader: asyncio.Task[None] | None = None

    # -- setup --------------------------------------------------------------------------
    async def open(self, custom_parameters: dict[str, str]) -> None:
        """Send ``connected`` and ``start``; from now on ``timestamp`` counts from here."""
        await self.socket.send_text(self.stream.connected())
        await self.socket.send_text(self.stream.start(custom_parameters))
        self._origin = self._clock()

    def bind_stats(self, stats: LegMediaStats) -> None:
        """Count into the leg's media statistics (engine/media_plane/stats.py) from now on."""
        self.stats = self._output.stats = stats
        output = self._output
        stats.stream_started(lambda: output.queued)

    def run(self) -> None:
        self._reader = _background(self._read())

    # -- engine -> bot (MediaOutput) ----------------------------------------------------
    def send_frame(self, payload: bytes) -> None:
        self._output.send_frame((payload, int((self._clock() - self._origin) * 1000)))

    def _render_media(self, frame: tuple[bytes, int]) -> bytes:
        return self.stream.media(*frame).encode()

    def send_key_press(self, digit: str) -> None:
        """A peer pressed ``digit``: the bot gets a ``dtmf`` message (``KeyPressOutput``)."""
        self._output.send_control(self.stream.dtmf(digit).encode())

    def _echo_mark(self, name: str) -> None:
        self._output.send_control(self.stream.mark(name).encode())

    # -- pacer -> engine ----------------------------------------------------------------
    def pump(self) -> None:
        """One tick: the next frame of the bot's audio into the mix, and the marks now due."""
        if not self.live:
            return
        frame, marks = self.playout.take()
        if frame:
            self.stats.frames_in += 1
            self._runtime.media_frame(self.leg_id, frame)
        for name in marks:
            self._echo_mark(name)

    # -- bot -> engine ------------------------------------------------------------------
    async def _read(self) -> None:
        cause = HangupCause.NORMAL_CLEARING
        try:
            while (raw := await self.socket.receive()) is not None:
                if isinstance(raw, bytes):
                    self._error(AgentProtocolError("binary frame", code="31950"))
                    await self.socket.close(CLOSE_UNSUPPORTED, "binary frames are not accepted")
                    cause = HangupCause.UNSPECIFIED
                    break
                try:
                    self._handle(self.stream.parse(raw))
                except AgentProtocolError as exc:
                    self._error(exc)
            else:
                cause = self._cause_of_close()
        except Exception:
            log.exception("websocket agent reader failed", leg_id=self.leg_id)
            cause = HangupCause.UNSPECIFIED
            with contextlib.suppress(Exception):
                await self.socket.close(CLOSE_INTERNAL, "internal error")
        finally:
            await self._finish(cause)

    def _handle(self, message: BotMedia | BotMark | BotClear) -> None:
        playout = self.playout
        if isinstance(message, BotMedia):
            if not playout.queue_audio(message.payload):
                self.discarded_bytes += len(message.payload)
                self._error(AgentProtocolError("media discarded: over a minute queued", "31931"))
        elif isinstance(message, BotMark):
            for name in playout.queue_mark(message.name):
                self._echo_mark(name)
        else:
            for name in playout.clear():
                self._echo_mark(name)

    def _error(self, exc: AgentProtocolError) -> None:
        self.protocol_errors += 1
        self._counters.protocol_errors += 1
        count = self.protocol_errors
        if count <= LOGGED_ERRORS_PER_LEG or count % 100 == 0:
            log.warning(
                "websocket agent protocol error",
                leg_id=self.leg_id,
                code=exc.code,
                reason=exc.reason,
                count=count,
            )

    def _cause_of_close(self) -> HangupCause:
        """A deliberate close by the bot is a normal hangup; a failed socket (1006 abnormal
        closure, 1009 frame too big, 1011 ...) is not."""
        code = self.socket.close_code
        deliberate = code in (CLOSE_NORMAL, CLOSE_GOING_AWAY, 1005) or (
            code is not None and 3000 <= code <= 4999
        )
        if self._ending or deliberate:
            return HangupCause.NORMAL_CLEARING
        log.warning(
            "websocket agent closed abnormally",
            leg_id=self.leg_id,
            close_code=code,
            close_reason=self.socket.close_reason,
        )
        return HangupCause.UNSPECIFIED

    async def _finish(self, cause: HangupCause) -> None:
        """The stream is over: the engine stops mixing the leg and, unless we ended it, hears
        that the bot hung up."""
        self.live = False
        self._output.lost()
        self._on_end(self)
        try:
            await self._runtime.media_stopped(self.leg_id)
            if not self._ending:
                log.info("websocket agent hung up", leg_id=self.leg_id, cause=cause.value)
                await self._runtime.event(ev.LegHungUp(self.leg_id, cause, HangupSource.CALLEE))
        finally:
            await self._output.close()

    # -- callbridge ends the stream -----------------------------------------------------
    async def end(self, code: int = CLOSE_NORMAL, reason: str = "call ended") -> None:
        """Send ``stop``, close the socket, and wait for the reader to wind the leg down."""
        if self._ending:
            if self._reader is not None:
                await asyncio.gather(self._reader, return_exceptions=True)
            return
        self._ending = True
        self.live = False
        self._output.end_with(self.stream.stop().encode())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_FLUSH_S):
                await self._output.flushed()
        await self._output.close()
        await self.socket.close(code, reason)
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


class WebsocketAgentGateway:
    """The ``ProviderGateway`` of every websocket agent leg of one app."""

    name = "wsagent"

    def __init__(self, context: AdapterContext, resolver: AbstractResolver | None = None) -> None:
        self._context = context
        # Who resolves bot host names for the URL policy: the system's resolver unless given.
        self._resolver = resolver
        self._legs: dict[str, AgentLeg] = {}
        # The runtime's media tick runs the agents' pump while any agent leg is live.
        self._unpace: Callable[[], None] | None = None
        self._closed = False
        self.counters = AgentCounters()

    def leg(self, call_control_id: str) -> AgentLeg | None:
        """The live agent leg, for tests and diagnostics."""
        return self._legs.get(call_control_id)

    @property
    def leg_count(self) -> int:
        return len(self._legs)

    @property
    def pacing(self) -> bool:
        """Whether the agents' pump is on the media tick."""
        return self._unpace is not None

    async def answer(self, call_control_id: str) -> None:
        log.info("answer is not meaningful for a websocket agent leg", leg_id=call_control_id)

    async def reject(self, call_control_id: str, cause: RejectCause) -> None:
        log.info(
            "reject is not meaningful for a websocket agent leg",
            leg_id=call_control_id,
            cause=cause.value,
        )

    async def restart_media(self, call_control_id: str) -> None:
        # The agent's socket IS the leg: callbridge dialled it, and a peer that went away has
        # hung up. Refusing here lets the runtime end the leg with call.hangup at once.
        raise ProviderError("a websocket agent leg whose socket closed cannot be reopened")

    async def hangup(self, call_control_id: str) -> None:
        agent = self._legs.get(call_control_id)
        if agent is not None:
            await agent.end()

    def forget(self, call_control_id: str) -> None:
        agent = self._legs.get(call_control_id)
        if agent is not None:
            # Only if a final call did not end it (hangup does): wind it down in the background.
            task = _background(agent.end())
            task.add_done_callback(lambda t: t.exception())

    async def _connect(
        self, url: str, host: str, port: int | None, timeout_s: float
    ) -> WebsocketsClientSocket:
        """The bot's websocket; unless private URLs are allowed, over a TCP connection that
        ``engine.url_policy`` opened to an address it checked (no lookup after the check)."""
        async with asyncio.timeout(timeout_s):
            sock = None
            if not self._context.settings.allow_private_urls:
                default_port = 443 if url.startswith("wss:") else 80
                sock = await open_guarded_socket(host, port or default_port, self._resolver)
            return await WebsocketsClientSocket.connect(
                url, open_timeout=timeout_s, max_message=MAX_BOT_MESSAGE, sock=sock
            )

    async def dial(self, dial: DialCall) -> None:
        url, leg_id = dial.to, dial.call_control_id
        self.counters.dialled += 1
        where = safe_url(url)
        try:
            parts = urlsplit(url)
            scheme, host, port = parts.scheme, parts.hostname, parts.port
        except ValueError:  # also a port that is not a number or out of range
            scheme, host, port = "", None, None
        if scheme not in ("ws", "wss") or not host:
            raise ProviderError(f"a websocket agent needs a ws:// or wss:// URL, not {where}")
        try:
            socket = await self._connect(url, host, port, float(dial.timeout_secs))
        except ForbiddenAddress as exc:
            self.counters.refused += 1
            log.warning("websocket agent refused by the URL policy", leg_id=leg_id, url=where)
            raise ProviderError(f"websocket agent at {where} refused: {exc}") from None
        except TimeoutError:
            raise ProviderError(
                f"websocket agent at {where} did not answer within {dial.timeout_secs} s"
            ) from None
        except Exception as exc:  # refused, unreachable, bad handshake, bad URL
            # The message may quote the URL, whose query or user part can hold a credential.
            reason = str(exc).replace(url, where)[:200] or type(exc).__name__
            raise ProviderError(f"websocket agent at {where} failed: {reason}") from None
        if self._closed:
            await socket.close(CLOSE_GOING_AWAY, "callbridge is shutting down")
            raise ProviderError("callbridge is shutting down")
        runtime = self._context.require_runtime()
        try:
            record = runtime.machine.leg(leg_id)
        except NotFound:
            record = None
        if record is None or not record.is_alive:
            # Hung up (or timed out) while we were connecting: the bot never hears of it.
            await socket.close(CLOSE_NORMAL, "call ended")
            return
        ids = StreamIds.for_leg(leg_id, record.org_id, uuid.uuid4().hex)
        agent = AgentLeg(leg_id, socket, AgentStream(ids), runtime, self._ended, self.counters)
        parameters = {
            "call_control_id": leg_id,
            "call_leg_id": record.call_leg_id,
            "call_session_id": record.call_session_id,
            "from": record.from_,
            "to": safe_url(record.to),
        }
        if record.client_state is not None:
            parameters["client_state"] = record.client_state
        try:
            await agent.open(parameters)
        except ConnectionResetError:
            await socket.close(CLOSE_NORMAL, "call ended")
            raise ProviderError(f"websocket agent at {where} closed before the start") from None
        self._legs[leg_id] = agent
        self.counters.connected += 1
        log.info("websocket agent connected", leg_id=leg_id, url=where, stream_sid=ids.stream_sid)
        await runtime.event(ev.LegAnswered(leg_id))
        agent.bind_stats(runtime.plane.stats.of(leg_id))
        await runtime.media_started(leg_id, PCMU_8K, agent, stream_url=where)
        agent.live = True
        agent.run()
        if self._unpace is None:
            self._unpace = runtime.tick.pace(self._pump)

    # -- internals ----------------------------------------------------------------------
    def _ended(self, agent: AgentLeg) -> None:
        if self._legs.get(agent.leg_id) is agent:
            del self._legs[agent.leg_id]
        if not self._legs:
            self._stop_pacing()

    def _stop_pacing(self) -> None:
        if self._unpace is not None:
            self._unpace()
            self._unpace = None

    def _pump(self) -> None:
        """One media tick: each agent's next frame into the mix (before the mixer pass)."""
        for agent in list(self._legs.values()):
            try:
                agent.pump()
            except Exception:
                # One leg's trouble must not stop the others' audio.
                log.exception("websocket agent pump failed", leg_id=agent.leg_id)

    async def close(self) -> None:
        """App shutdown: end every agent stream (stop, close), then the pump; later dials fail."""
        self._closed = True
        agents = list(self._legs.values())
        await asyncio.gather(
            *(a.end(CLOSE_GOING_AWAY, "callbridge is shutting down") for a in agents),
            return_exceptions=True,
        )
        self._stop_pacing()
