"""One generator process of a load test spread over several (``fleet.py``): a ``LoadTest`` that
runs its share of the plan against the parent's engine, its windows opened by the parent.

The parent talks to it over two one-way pipes, in pickled tuples. Child to parent:
``("progress", snapshot)`` every half second, ``("ready",)`` when its legs of a step are set up
and on schedule, ``("closed",)`` when the step's window has ended, ``("step", StepResult)``,
``("result", events, app_errors)`` once its calls are hung up, ``("error", text)`` if it could
not run. Parent to child: ``("open",)`` (start the window now), ``("continue", bool)`` (run
the next step, or stop) and ``("exit",)`` once the engine is closed (the child's simulators
answer the engine's last provider calls until then). Each side reads its pipe on a thread of
its own, so a large message (a step's latency samples) never blocks an event loop.
"""

from __future__ import annotations

import asyncio
import threading
import traceback
from multiprocessing.connection import Connection
from typing import Any

from benchmarks.loadtest.engine_host import event_loop_runner, pin_to_core
from benchmarks.loadtest.generator import LoadConfig, LoadTest, RunResult, StepResult
from benchmarks.loadtest.measures import EngineWindow

__all__ = ["Inbox", "PipeGate", "child_main"]

Message = tuple[Any, ...]


class Inbox:
    """A pipe's messages as an asyncio queue, read on a thread; ``("eof",)`` when it closes.
    Progress snapshots are not queued: ``progress`` holds the latest, whatever is awaited."""

    def __init__(self, conn: Connection, loop: asyncio.AbstractEventLoop) -> None:
        self.queue: asyncio.Queue[Message] = asyncio.Queue()
        self.progress: dict[str, Any] = {}
        self._conn = conn
        self._loop = loop
        self._thread = threading.Thread(target=self._read, name="loadtest-inbox", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                message: Message = self._conn.recv()
            except (EOFError, OSError):
                message = ("eof",)
            if message[0] == "progress":
                self.progress = message[1]  # one reference swapped: safe across threads
                continue
            try:
                self._loop.call_soon_threadsafe(self.queue.put_nowait, message)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                return
            if message[0] == "eof":
                return

    async def expect(self, kind: str) -> Message:
        message = await self.queue.get()
        if message[0] != kind:
            raise RuntimeError(f"the load test's parent sent {message[0]!r}, not {kind!r}")
        return message


class PipeGate:
    """The ``WindowGate`` of a share: the parent opens and closes the window and judges."""

    def __init__(self, outbox: Connection, inbox: Inbox) -> None:
        self._outbox = outbox
        self._inbox = inbox

    def send(self, *message: Any) -> None:
        self._outbox.send(message)

    async def open(self) -> None:
        self.send("ready")
        await self._inbox.expect("open")

    async def close(self) -> EngineWindow | None:
        self.send("closed")
        return None  # the parent reads the engine over the window

    async def verdict(self, step: StepResult) -> bool:
        self.send("step", step)
        return bool((await self._inbox.expect("continue"))[1])

    async def done(self, result: RunResult) -> None:
        self.send("result", result.events, result.app_errors)
        await self._inbox.expect("exit")


async def _run_share(
    config: LoadConfig, share: tuple[int, int], outbox: Connection, inbox: Connection
) -> None:
    gate = PipeGate(outbox, Inbox(inbox, asyncio.get_running_loop()))
    test = LoadTest(
        config, lambda snapshot: gate.send("progress", snapshot), share=share, gate=gate
    )
    await test.run()


def child_main(
    config: LoadConfig,
    share: tuple[int, int],
    core: int | None,
    use_uvloop: bool,
    outbox: Connection,
    inbox: Connection,
) -> None:
    """The child process: pinned to ``core``, it runs its share and reports to the parent."""
    from engine.logs import configure_logging

    pin_to_core(core)
    configure_logging("console", "error")
    try:
        event_loop_runner(use_uvloop)(_run_share(config, share, outbox, inbox))
    except BaseException:
        outbox.send(("error", traceback.format_exc()))
        raise
    finally:
        outbox.close()
