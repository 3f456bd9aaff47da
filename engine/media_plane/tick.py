"""The one 20 ms clock every leg's media runs on (issue 13: one clock driving every leg).

Each tick first runs the *pumps*, the sources that play in real time into the mix (a websocket
agent's queued audio: ``adapters/wsagent/gateway.py``), then the runtime's tick (the mixer pass,
frames out, recordings). One clock means a pumped frame always lands in the tick that follows
it; a second clock would beat against this one and now and then put two frames in one tick and
none in the next. The tick's duration and lateness go to its observers (the metrics and the
admission's ``TickLoad``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from engine.logs import get_logger
from media.clock import TickClock, TickObserver, run_ticks

__all__ = ["MediaTick", "Pump"]

log = get_logger("callbridge.runtime")

#: A source played in real time: called once per tick, before the mixer pass; never blocking.
Pump = Callable[[], None]


class _Observers:
    """Every observer told about every tick (``media.clock.TickObserver``)."""

    __slots__ = ("_all",)

    def __init__(self, observers: Sequence[TickObserver]) -> None:
        self._all = tuple(observers)

    def observe_tick(self, duration_s: float, lateness_s: float) -> None:
        for observer in self._all:
            observer.observe_tick(duration_s, lateness_s)

    def ticks_skipped(self, count: int) -> None:
        for observer in self._all:
            observer.ticks_skipped(count)


class MediaTick:
    def __init__(
        self, clock: TickClock | None = None, observers: Sequence[TickObserver] = ()
    ) -> None:
        self.clock = clock if clock is not None else TickClock()
        self._observers = _Observers(observers)
        self._pumps: list[Pump] = []
        self._on_tick: Callable[[int], None] | None = None

    def drive(self, on_tick: Callable[[int], None]) -> None:
        """What each tick does after the pumps (the runtime's mixer pass)."""
        self._on_tick = on_tick

    def pace(self, pump: Pump) -> Callable[[], None]:
        """Run ``pump`` once per tick, before the mix, until the returned call stops it."""
        self._pumps.append(pump)

        def stop() -> None:
            if pump in self._pumps:
                self._pumps.remove(pump)

        return stop

    async def run(self, stop: asyncio.Event) -> None:
        await run_ticks(self.clock, self._tick, stop, observe=self._observers)

    def _tick(self, n: int) -> None:
        for pump in tuple(self._pumps):
            try:
                pump()
            except Exception:
                # One source's trouble must not stop the tick, nor the other sources' audio.
                log.exception("media pump failed", pump=repr(pump))
        if self._on_tick is not None:
            self._on_tick(n)
