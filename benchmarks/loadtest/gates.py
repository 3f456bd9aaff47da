"""Who opens and closes a step's measurement window (``generator.LoadTest``).

Alone, a load test opens its own windows and reads the engine over them (``LocalGate``). As one
share of a run spread over generator processes, its windows are opened and closed by the parent
(``worker.PipeGate``), so that every share measures the same seconds and the parent reads the
engine once for all of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from benchmarks.loadtest.measures import EngineProbe, EngineWindow

if TYPE_CHECKING:
    from benchmarks.loadtest.generator import RunResult, StepResult

__all__ = ["LocalGate", "WindowGate"]


class WindowGate(Protocol):
    """Who opens and closes a step's measurement window, and decides whether the run goes on."""

    async def open(self) -> None:
        """Every leg is set up and on schedule: return when the window is to start."""

    async def close(self) -> EngineWindow | None:
        """The window has ended: the engine's side of it, if this gate measured it."""

    async def verdict(self, step: StepResult) -> bool:
        """The step's result: whether to run the next step."""

    async def done(self, result: RunResult) -> None:
        """The run is over: return once this process's simulators may close (not before the
        engine has, so that its last provider calls, the hang-ups, still find them)."""


class LocalGate:
    """A ``LoadTest`` alone: it measures the engine over its own windows."""

    def __init__(self, probe: EngineProbe) -> None:
        self.probe = probe

    async def open(self) -> None:
        await self.probe.begin()

    async def close(self) -> EngineWindow | None:
        return await self.probe.end()

    async def verdict(self, step: StepResult) -> bool:
        return step.passed

    async def done(self, result: RunResult) -> None:
        return None  # this process closed the engine itself, before returning the result
