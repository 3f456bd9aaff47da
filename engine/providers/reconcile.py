"""Reconciliation: ask the providers about legs that have gone quiet or stuck, and end the ones
the provider no longer has.

A provider's hangup webhook can be lost (Telnyx gives up after its retries; a webhook that
failed while callbridge was busy), and then a leg would stay live in callbridge, its channel
counted, until its 4 h time limit. So every ``interval_s`` the runtime asks the provider
(``ReportsStatus.status``, retried as any idempotent provider call) about each live leg that is

- still setting up (``initiated``/``answering``) or answered without live media, and has had no
  event for ``interval_s``; or
- any other live leg that has had no event for ``silence_s``.

The provider disagrees when it says the call is gone, or that an answered leg is not up; the
leg is then ended through the machine (``ProviderCallGone``: ``call.hangup``). A leg that heard
news while its question was out is judged again on the next pass, never on a stale answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from engine.errors import CallbridgeError
from engine.logs import get_logger
from engine.machine import events as ev
from engine.machine.model import Leg, LegState
from engine.providers.calls import ProviderCalls
from engine.providers.gateway import CallPresence, ProviderGateway, ReportsStatus

log = get_logger("callbridge.reconcile")
SETTING_UP = frozenset({LegState.INITIATED, LegState.ANSWERING})


@dataclass(frozen=True, slots=True)
class ReconcileSettings:
    interval_s: float = 60.0  # a pass this often; a stuck leg is asked about after one quiet pass
    silence_s: float = 600.0  # any live leg quiet this long is asked about
    concurrency: int = 4  # questions out at once, so a pass never floods a provider


def needs_check(leg: Leg, last_heard: float, now: float, settings: ReconcileSettings) -> bool:
    """Whether to ask the provider about ``leg``, last heard of at ``last_heard``."""
    if not leg.is_alive:
        return False
    quiet = now - last_heard
    stuck = leg.state in SETTING_UP or (leg.answered_at is not None and not leg.media_started)
    return quiet >= (settings.interval_s if stuck else settings.silence_s)


def disagrees(leg: Leg, presence: CallPresence) -> bool:
    """Whether the provider's word ends the leg. "Not up" ends only an answered leg: Telnyx
    says it of calls still ringing too (engine/providers/gateway.py)."""
    if presence is CallPresence.GONE:
        return True
    return presence is CallPresence.NOT_UP and leg.answered_at is not None


class Reconciler:
    def __init__(
        self,
        settings: ReconcileSettings,
        *,
        legs: Callable[[], Iterable[Leg]],
        gateway_of: Callable[[str], ProviderGateway | None],
        calls: ProviderCalls,
        report: Callable[[ev.Event], Awaitable[None]],
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self._legs = legs
        self._gateway_of = gateway_of
        self._calls = calls
        self._report = report
        self._clock = clock
        self._heard: dict[str, float] = {}

    def heard(self, leg_id: str) -> None:
        """An input about the leg arrived: it is not quiet."""
        self._heard[leg_id] = self._clock()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with asyncio.timeout(self.settings.interval_s):
                    await stop.wait()
                return
            except TimeoutError:
                pass
            try:
                await self.check_once()
            except Exception:
                log.exception("reconciliation pass failed")

    async def check_once(self) -> list[str]:
        """One pass; the legs it ended."""
        now = self._clock()
        live = [leg for leg in self._legs() if leg.is_alive]
        known = {leg.call_control_id for leg in live}
        for leg_id in [k for k in self._heard if k not in known]:
            del self._heard[leg_id]
        due = [
            leg
            for leg in live
            if needs_check(leg, self._heard.get(leg.call_control_id, leg.start_time), now,
                           self.settings)
        ]  # fmt: skip
        limit = asyncio.Semaphore(self.settings.concurrency)
        ended = await asyncio.gather(*(self._check(leg, limit) for leg in due))
        return [leg_id for leg_id in ended if leg_id is not None]

    async def check_now(self, leg_ids: Iterable[str]) -> list[str]:
        """Ask about these legs at once, quiet or not: legs adopted after a restart, whose
        provider may have ended them while nobody listened (Telnyx's webhooks for the gap may
        never come). The legs it ended."""
        wanted = set(leg_ids)
        due = [leg for leg in self._legs() if leg.is_alive and leg.call_control_id in wanted]
        limit = asyncio.Semaphore(self.settings.concurrency)
        ended = await asyncio.gather(*(self._check(leg, limit) for leg in due))
        return [leg_id for leg_id in ended if leg_id is not None]

    async def _check(self, leg: Leg, limit: asyncio.Semaphore) -> str | None:
        leg_id = leg.call_control_id
        gateway = self._gateway_of(leg_id)
        if not isinstance(gateway, ReportsStatus):
            return None  # nobody to ask (a websocket agent leg: its socket is its status)
        asked_at = self._clock()
        async with limit:
            try:
                presence = await self._calls.run(
                    "status", leg_id, lambda: gateway.status(leg_id), provider=gateway.name
                )
            except (CallbridgeError, TimeoutError) as exc:
                log.warning("reconciliation: provider status unknown", leg_id=leg_id,
                            error=str(exc))  # fmt: skip
                return None
        if self._heard.get(leg_id, leg.start_time) > asked_at:
            return None  # news arrived meanwhile: judge it on the next pass
        if not disagrees(leg, presence):
            return None
        detail = f"the provider reports the call {presence.value} (leg was {leg.state.value})"
        log.warning("reconciliation: ending a leg the provider no longer has", leg_id=leg_id,
                    presence=presence.value, state=leg.state.value)  # fmt: skip
        await self._report(ev.ProviderCallGone(leg_id, detail))
        return leg_id
