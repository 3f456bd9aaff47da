"""The runtime's timers: the machine names them (``TimerKey``) and says how long; this fires them.

``Timers`` is what the runtime needs; ``LoopTimers`` runs them on the event loop (tests use a
manual fake). Each key is armed at most once: starting it again replaces it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from engine.machine.model import TimerKey


class Timers(Protocol):
    """What the runtime needs of timers: ``LoopTimers`` in production, a manual fake in tests."""

    def start(self, key: TimerKey, delay_s: float, fire: Callable[[TimerKey], None]) -> None: ...

    def cancel(self, key: TimerKey) -> None: ...

    def cancel_all(self) -> None: ...


class LoopTimers:
    """Timers on the running event loop; each fires once unless cancelled first."""

    def __init__(self) -> None:
        self._handles: dict[TimerKey, asyncio.TimerHandle] = {}

    def start(self, key: TimerKey, delay_s: float, fire: Callable[[TimerKey], None]) -> None:
        self.cancel(key)
        loop = asyncio.get_running_loop()
        self._handles[key] = loop.call_later(delay_s, self._fired, key, fire)

    def _fired(self, key: TimerKey, fire: Callable[[TimerKey], None]) -> None:
        self._handles.pop(key, None)
        fire(key)

    def cancel(self, key: TimerKey) -> None:
        handle = self._handles.pop(key, None)
        if handle is not None:
            handle.cancel()

    def pending(self) -> list[TimerKey]:
        return list(self._handles)

    def cancel_all(self) -> None:
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()
