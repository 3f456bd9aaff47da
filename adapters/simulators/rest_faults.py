"""Faults a simulated provider's REST API can be told to have, per operation.

    sim.faults.fail("answer", times=3)              # the next 3 answers get 503
    sim.faults.fail("hangup", for_s=2.0)            # every hangup for 2 s gets 503
    sim.faults.fail("dial", status=429, times=1, retry_after_s=0.2)
    sim.faults.hang("answer", times=1)              # the next answer gets no reply at all

A failed or hung request is refused before the provider acts on it (the call is untouched), as
a provider's overloaded front end does; it is still kept in the simulator's ``requests`` with
the status it got (a hung one with none). Each simulator names its operations (Telnyx: ``dial``,
``status`` and each action; Twilio: ``dial``, ``status``, ``hangup``, ``update``) and writes the
refusal in its provider's error shape. A hung request is held until the client gives up and
then answered 504, or released at once when the simulator closes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Fault", "RestFaults"]

HOLD_MAX_S = 60.0  # a hung request is answered 504 after this long at the latest


@dataclass(slots=True)
class Fault:
    operation: str
    hang: bool  # no reply at all, rather than ``status``
    status: int = 503
    retry_after_s: float | None = None
    times: int | None = None  # requests still to fault; None: until ``until``
    until: float | None = None  # monotonic deadline


class RestFaults:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._faults: list[Fault] = []
        self._released = asyncio.Event()
        self.injected: list[Fault] = []  # every fault applied, in order (one per request)

    def fail(
        self,
        operation: str,
        *,
        status: int = 503,
        times: int | None = None,
        for_s: float | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        """Answer ``status`` (5xx or 429) to ``operation``'s next ``times`` requests, or to all
        of them for ``for_s`` seconds."""
        if not (status >= 500 or status == 429):
            raise ValueError("a REST fault is a 5xx or 429 status")
        self._add(Fault(operation, False, status, retry_after_s), times, for_s)

    def hang(self, operation: str, *, times: int | None = None, for_s: float | None = None) -> None:
        """Answer nothing to ``operation``'s next ``times`` requests (or for ``for_s``)."""
        self._add(Fault(operation, True), times, for_s)

    def _add(self, fault: Fault, times: int | None, for_s: float | None) -> None:
        if (times is None) == (for_s is None):
            raise ValueError("give either times or for_s")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        fault.times = times
        fault.until = None if for_s is None else self._clock() + for_s
        self._faults.append(fault)

    def clear(self) -> None:
        self._faults.clear()

    def take(self, operation: str) -> Fault | None:
        """The fault for this request of ``operation``, if any (it counts as used)."""
        now = self._clock()
        self._faults = [f for f in self._faults if f.until is None or f.until > now]
        for fault in self._faults:
            if fault.operation != operation:
                continue
            if fault.times is not None:
                fault.times -= 1
                if fault.times == 0:
                    self._faults.remove(fault)
            self.injected.append(fault)
            return fault
        return None

    def count(self, operation: str) -> int:
        """How many requests of ``operation`` were faulted so far."""
        return sum(1 for fault in self.injected if fault.operation == operation)

    async def hold(self) -> None:
        """Hold a hung request until the simulator closes (or ``HOLD_MAX_S``)."""
        try:
            async with asyncio.timeout(HOLD_MAX_S):
                await self._released.wait()
        except TimeoutError:
            pass

    def release(self) -> None:
        """Let every held request go (the simulator is closing)."""
        self._released.set()
