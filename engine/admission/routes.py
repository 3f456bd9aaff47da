"""The last route the store gave for each number, so that an incoming call can still be refused
cleanly while the database cannot be reached (issue 16, point 5: "new calls refused").

Without the store callbridge cannot route a call, nor even verify the provider's signature on
its webhook (the secret is in the configuration) or reject it through the provider's API (the
credentials are too). The configuration that routed the number last is kept in memory: with it
the webhook is verified and the call rejected busy, the caller's "try again later", instead of
ringing until the provider gives up. The remembered route is used for nothing else: a route
that changed during the outage can only make a call be refused that would have been admitted,
never the other way round. A number never routed since this process started has nothing to
remember; its webhook gets the 503 of any request that needs the database.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.admission.inbound import Refusal
from engine.errors import StoreUnreachable
from engine.machine.model import RejectCause
from engine.store.base import Route, Store

__all__ = ["DATABASE_UNAVAILABLE", "RouteLookup", "RouteMemory"]

#: Why a call routed by a remembered route is refused (busy: the caller may try again).
DATABASE_UNAVAILABLE = Refusal(RejectCause.USER_BUSY, "the database cannot be reached")


@dataclass(frozen=True, slots=True)
class RouteLookup:
    """A number's route (None: on no bridge), and whether the store gave it now (``fresh``) or
    it is the remembered one of a store that cannot be reached (refuse the call busy)."""

    route: Route | None
    fresh: bool = True


class RouteMemory:
    """``lookup``: the store's route for a number, remembered; the remembered one while the
    store cannot be reached (``StoreUnreachable`` when there is none)."""

    def __init__(self) -> None:
        self._last: dict[str, Route] = {}

    async def lookup(self, store: Store, number: str) -> RouteLookup:
        try:
            route = await store.route_for_number(number)
        except StoreUnreachable:
            remembered = self._last.get(number)
            if remembered is None:
                raise
            return RouteLookup(remembered, fresh=False)
        if route is None:
            self._last.pop(number, None)
        else:
            self._last[number] = route
        return RouteLookup(route)
