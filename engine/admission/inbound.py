"""Admission of an inbound call: the provider-neutral rules of routing through bridges.

An inbound call to a number on an ACTIVE bridge is admitted; a number on no bridge, a bridge
that is DRAFT or INACTIVE, or a number already carrying ``channels_count`` live legs is refused
(busy), and so is a call that would take its organization over its ``max_legs``
(engine/admission/limits.py). The adapters call this before creating a leg, map the refusal to their
provider's way of rejecting, and count an admitted leg with ``LiveLegIndex.leg_started`` and
``org_leg_started`` before letting another call through admission.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.admission.gate import Admission
from engine.admission.limits import limits_for
from engine.admission.live import LiveLegIndex
from engine.config import Settings
from engine.machine.model import RejectCause
from engine.store.base import Route, Store


@dataclass(frozen=True, slots=True)
class Refusal:
    cause: RejectCause
    reason: str


async def admit(
    store: Store, live: LiveLegIndex, number: str, settings: Settings, admission: Admission
) -> Route | Refusal:
    if admission.refusal() is not None:
        # Busy rather than unknown: the caller may try again and reach the next process (or
        # this one, once its media tick keeps time again).
        return Refusal(RejectCause.USER_BUSY, f"callbridge is {admission.reason}")
    route = await store.route_for_number(number)
    if route is None:
        return Refusal(RejectCause.NOT_FOUND, f"{number} is not connected to any bridge")
    if route.bridge.status != "ACTIVE":
        return Refusal(
            RejectCause.USER_BUSY, f"bridge {route.bridge.slug} is {route.bridge.status}"
        )
    if not route.number.active or not route.provider_config.active:
        return Refusal(RejectCause.USER_BUSY, f"{number} is not active")
    limit = route.number.channels_count
    if live.count_for_number(number) >= limit:
        return Refusal(RejectCause.USER_BUSY, f"{number} already carries {limit} live leg(s)")
    org_id = route.bridge.org_id
    max_legs = (await limits_for(store, settings, org_id)).max_legs
    if live.count_for_org(org_id) >= max_legs:
        return Refusal(
            RejectCause.USER_BUSY,
            f"organization {org_id} already has {max_legs} live leg(s), its limit",
        )
    return route
