"""How a process leaves: handing its calls over, or draining them.

A process that is told to stop (SIGTERM, ``engine.cli.run_server``) closes its ``Admission``
(``engine.admission.gate``) at once and for good: ``GET /readyz`` answers 503 (``GET /healthz``
stays 200: it is alive, just not taking new work), new inbound calls are rejected busy
(``engine.admission.inbound.admit``) and ``POST /v2/calls`` is answered 503. Its live calls are then
either handed over (the default: everything is in the store already, so the next process on
the same database adopts them, ``CallRuntime.adopt``) or drained (``serve --drain``:
``drain`` below).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from engine.errors import CallbridgeError
from engine.logs import get_logger
from engine.machine.commands import Hangup
from engine.runtime.runtime import CallRuntime
from engine.store.base import Store

log = get_logger("callbridge.lifecycle")
# How often a drain looks again at what is left (live legs, webhooks to deliver).
DRAIN_POLL_S = 0.2
# After hanging up the last legs, how long a drain waits for their webhooks and recordings.
DRAIN_FLUSH_S = 15.0


@dataclass(frozen=True, slots=True)
class DrainReport:
    ended_by_themselves: int
    hung_up: int
    webhooks_left: int


async def drain(
    runtime: CallRuntime,
    store: Store,
    timeout_s: float,
    clock: Callable[[], float],
) -> DrainReport:
    """A planned shutdown: wait up to ``timeout_s`` for the live calls to end, hang up the rest
    (each gets its ``call.hangup``; recordings are stopped and saved), then wait a bounded time
    for the provider hangups, the recordings and the webhooks to be done."""
    started = live_legs(runtime)
    deadline = clock() + timeout_s
    # Legs end on provider events and commands, which have no one signal to wait on; a drain
    # happens once per process, so looking every DRAIN_POLL_S costs nothing.
    while live_legs(runtime) and clock() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(DRAIN_POLL_S)
    rest = live_legs(runtime)
    for leg_id, org_id in rest:
        try:
            await runtime.command(org_id, leg_id, Hangup())
        except CallbridgeError as exc:  # ended meanwhile, or the store refused: logged
            log.warning("drain could not hang up a leg", leg_id=leg_id, error=str(exc))
    with_flush = clock() + DRAIN_FLUSH_S
    try:
        async with asyncio.timeout(DRAIN_FLUSH_S):
            await runtime.settle()
    except TimeoutError:
        log.warning("drain: provider calls or recordings still running at the deadline")
    left = await store.pending_webhook_count()
    while left and clock() < with_flush:  # the outbox delivers on its own loop
        await asyncio.sleep(DRAIN_POLL_S)
        left = await store.pending_webhook_count()
    report = DrainReport(len(started) - len(rest), len(rest), left)
    log.info(
        "drained",
        ended_by_themselves=report.ended_by_themselves,
        hung_up=report.hung_up,
        webhooks_left=report.webhooks_left,
    )
    return report


def live_legs(runtime: CallRuntime) -> list[tuple[str, int]]:
    return [
        (leg.call_control_id, leg.org_id) for leg in runtime.machine.snapshot().legs if leg.is_alive
    ]
