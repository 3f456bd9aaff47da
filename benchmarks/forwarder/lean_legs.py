"""The generator's side of every leg: a websocket per leg, one pacer for all, a reader per leg.

The Telnyx simulator's stream client (a ``PacedSender`` task, an encoder, a decoder and a
playout per leg) costs more than one core can spend on 150 legs, so this client does only what
a provider's side must: open the socket with the leg's URL and headers, send the leg's opening
frames (``connected``, ``start``), then one ``media`` frame per leg every 20 ms, and count what
comes back. One pacer task sends for every leg; legs are spread over four phases of the 20 ms
period (a real provider's legs start at unrelated moments, so their frames do not arrive in one
burst). An overdue phase is sent at once, back to back, as the simulator's pacer does: a
generator that falls behind sends late rather than less, and ``lateness`` shows it. The reader
keeps each leg's count of media frames received and the latest few, which ``measure`` checks
hold the leg's peer's audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

import aiohttp

from benchmarks.forwarder.frames import FRAME_MS, MEDIA_PREFIX, MediaTemplate

__all__ = ["LeanLeg", "LeanLegs", "LegLink"]

PHASES: Final = 4
PHASE_S: Final = FRAME_MS / 1000 / PHASES
#: A leg is carried once this many media frames came back on it.
READY_FRAMES: Final = 10
#: The latest media frames a leg keeps (a server may conceal one lost frame with another sound).
RECENT_FRAMES: Final = 8
_MAX_MESSAGE: Final = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class LegLink:
    """How one leg reaches the server under test: where, with which handshake headers, and
    the frames it sends before media."""

    index: int
    url: str
    headers: Mapping[str, str]
    opening: tuple[str, ...]
    template: MediaTemplate
    #: Awaited before the leg's first media frame (None: media follows ``start`` at once).
    bound: Callable[[], Awaitable[None]] | None = None


@dataclass(slots=True, eq=False)
class LeanLeg:
    index: int
    ws: aiohttp.ClientWebSocketResponse
    template: MediaTemplate
    sent: int = 0
    received: int = 0
    #: The latest ``RECENT_FRAMES`` media frames received, in a ring (slot: count % size).
    recent: list[str | None] = field(default_factory=lambda: [None] * RECENT_FRAMES)


@dataclass(slots=True)
class _Readiness:
    carried: int = 0  # legs that received READY_FRAMES
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class LeanLegs:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self.legs: dict[int, LeanLeg] = {}
        self._phases: list[list[LeanLeg]] = [[] for _ in range(PHASES)]
        #: How late each phase's sends started (s); ``measure`` clears it at a window's start.
        self.lateness: list[float] = []
        self._readiness = _Readiness()
        self._readers: set[asyncio.Task[None]] = set()
        self._pacer: asyncio.Task[None] | None = None

    async def open(self, link: LegLink) -> None:
        """Connect ``link``'s leg, send its opening frames, start reading it and, once
        ``link.bound`` returns, pacing its media."""
        ws = await self._session.ws_connect(
            link.url, headers=dict(link.headers), autoping=True, compress=0,
            max_msg_size=_MAX_MESSAGE,
        )  # fmt: skip
        for frame in link.opening:
            await ws.send_str(frame)
        leg = LeanLeg(link.index, ws, link.template)
        self.legs[link.index] = leg
        reader = asyncio.ensure_future(self._read(leg))
        self._readers.add(reader)
        reader.add_done_callback(self._readers.discard)
        if link.bound is not None:
            await link.bound()
        self._phases[link.index % PHASES].append(leg)
        if self._pacer is None:
            self._pacer = asyncio.ensure_future(self._pace())

    async def wait_carried(self, timeout_s: float) -> bool:
        """True once every open leg has received ``READY_FRAMES`` media frames."""
        readiness = self._readiness
        try:
            async with asyncio.timeout(timeout_s):
                while readiness.carried < len(self.legs):
                    readiness.changed.clear()
                    await readiness.changed.wait()
        except TimeoutError:
            return False
        return True

    def totals(self) -> tuple[int, int]:
        """Media frames sent and received so far, over every leg."""
        legs = self.legs.values()
        return sum(leg.sent for leg in legs), sum(leg.received for leg in legs)

    async def close(self) -> None:
        if self._pacer is not None:
            self._pacer.cancel()
            await asyncio.gather(self._pacer, return_exceptions=True)
        await asyncio.gather(*(leg.ws.close() for leg in self.legs.values()),
                             return_exceptions=True)  # fmt: skip
        for reader in list(self._readers):
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)

    async def _pace(self) -> None:
        origin = time.monotonic()
        k = 0
        while True:
            due = origin + k * PHASE_S
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # the generator's clock: real time is the point
            self.lateness.append(time.monotonic() - due)
            for leg in self._phases[k % PHASES]:
                if leg.ws.closed:
                    continue
                with contextlib.suppress(ConnectionError):
                    await leg.ws.send_str(leg.template.render(leg.sent))
                    leg.sent += 1
            k += 1

    async def _read(self, leg: LeanLeg) -> None:
        readiness = self._readiness
        async for message in leg.ws:
            data = message.data
            if message.type is aiohttp.WSMsgType.TEXT and data.startswith(MEDIA_PREFIX):
                leg.recent[leg.received % RECENT_FRAMES] = data
                leg.received += 1
                if leg.received == READY_FRAMES:
                    readiness.carried += 1
                    readiness.changed.set()
