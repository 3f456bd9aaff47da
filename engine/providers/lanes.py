"""Provider calls, one lane per leg: each leg's calls in order, never holding up another leg.

A call in a lane is retried on transient faults (``engine.providers.calls``). One that still fails
is reported to the machine: ``ProviderCallGone`` when the provider says the call is over,
``ProviderFailed`` otherwise, so the leg never dangles. A ``final`` call (hangup, reject) is
retried until the provider confirms it; until then the leg is ``ending``: its gateway is kept and
its channel counted, since the call may still be up, and billed, at the provider.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from engine.admission.live import LiveLegs
from engine.logs import get_logger
from engine.machine import events as ev
from engine.providers.calls import ProviderCalls
from engine.providers.gateway import CallGone, ProviderGateway, dial_is_idempotent

log = get_logger("callbridge.runtime")


class ProviderLanes:
    def __init__(
        self,
        *,
        gateways: Mapping[str, ProviderGateway],
        calls: ProviderCalls,
        live: LiveLegs,
        report: Callable[[ev.Event], Awaitable[None]],
        track: Callable[[asyncio.Task[None]], None],
    ) -> None:
        self._gateways = gateways
        self._calls = calls
        self._live = live
        self._report = report  # an input of the engine's own to the machine
        self._track = track  # the runtime waits for tracked tasks when it settles
        self._lanes: dict[str, asyncio.Task[None]] = {}
        self.ending: set[str] = set()  # legs whose provider hangup/reject is not confirmed yet

    def provider_of(self, leg_id: str) -> str | None:
        """The name of the gateway carrying the leg (its provider), if it has one."""
        gateway = self._gateways.get(leg_id)
        return None if gateway is None else gateway.name

    def run(
        self,
        leg_id: str,
        operation: str,
        call: Callable[[ProviderGateway], Awaitable[None]],
        *,
        final: bool = False,
        is_dial: bool = False,
    ) -> None:
        """Run a provider call after the leg's earlier ones, retrying transient faults; report
        a failure to the machine. A ``final`` call (hangup, reject) is retried until the
        provider confirms or refuses it, and only then is the leg forgotten and its channel
        freed: until then the call may still be up, and billed, at the provider."""
        previous = self._lanes.get(leg_id)

        async def run() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            gateway = self._gateways.get(leg_id)
            if gateway is None:
                log.warning("no gateway for leg", leg_id=leg_id, operation=operation)
                if final:
                    self.ending.discard(leg_id)
                    self._live.release(leg_id)
                return
            try:
                await self._calls.run(
                    operation,
                    leg_id,
                    lambda: call(gateway),
                    provider=gateway.name,
                    # Only a dial may place a second call when repeated
                    # (engine/providers/gateway.py).
                    idempotent=dial_is_idempotent(gateway) if is_dial else True,
                    persistent=final,
                )
            except Exception as exc:
                error = str(exc) or type(exc).__name__
                if final:
                    log.error("provider call failed for good: the call may still be up",
                              leg_id=leg_id, operation=operation, error=error)  # fmt: skip
                elif isinstance(exc, CallGone):
                    # Not a failure of callbridge's request: the call is over at the provider
                    # (ended while callbridge was down, say), so the leg ends as such.
                    log.info("provider says the call is gone", leg_id=leg_id,
                             operation=operation, error=error)  # fmt: skip
                    await self._report(ev.ProviderCallGone(leg_id, error))
                else:
                    log.warning("provider call failed", leg_id=leg_id, operation=operation,
                                error=error)  # fmt: skip
                    await self._report(ev.ProviderFailed(leg_id, operation, error))
            finally:
                if final:
                    self.ending.discard(leg_id)
                    gateway.forget(leg_id)
                    self._live.release(leg_id)
                if self._lanes.get(leg_id) is task:
                    del self._lanes[leg_id]

        if final:
            self.ending.add(leg_id)
        task = asyncio.ensure_future(run())
        self._lanes[leg_id] = task
        self._track(task)
