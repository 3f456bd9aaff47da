"""Admission of an inbound call: the provider-neutral rules of routing through bridges.

An inbound call to a number on an ACTIVE bridge is admitted; a number on no bridge, a bridge
that is DRAFT or INACTIVE, or a number already carrying ``channels_count`` live legs is refused
(busy), and so is a call that would take its organization over its ``max_legs``
(engine/admission/limits.py), or one that cannot be counted (the live-leg registry unreachable).
An admitted leg is counted by the same step that checked the limits (``LiveLegs.claim``), so no
other call, on this node or another, can take its slot; the adapters call this before creating
the leg, map a refusal to their provider's way of rejecting, and release the leg
(``CallRuntime.unbind``) if it cannot be started after all.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.admission.gate import Admission
from engine.admission.limits import limits_for
from engine.admission.live import Claim, Limit, LiveLegs, LiveLegsUnavailable, Place
from engine.config import Settings
from engine.machine.model import RejectCause
from engine.store.base import Route, Store


@dataclass(frozen=True, slots=True)
class Refusal:
    cause: RejectCause
    reason: str


@dataclass(frozen=True, slots=True)
class TakenElsewhere:
    """The provider call is another leg's already: a duplicate of its first webhook, taken by
    another node at the same instant (Telnyx delivers duplicates, developers.telnyx.com/docs/
    voice/programmable-voice/receiving-webhooks). Neither admitted nor to be rejected: the call
    is that node's."""


async def admit(
    store: Store,
    live: LiveLegs,
    number: str,
    settings: Settings,
    admission: Admission,
    leg_id: str,
    call: str | None = None,
) -> Route | Refusal | TakenElsewhere:
    """The number's route with ``leg_id`` counted on it, or why not. ``call``: the provider's
    call (``provider_call``), kept with the claim so that its later webhooks reaching another
    node find this one (engine/cluster/)."""
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
    channels = route.number.channels_count
    org_id = route.bridge.org_id
    max_legs = (await limits_for(store, settings, org_id)).max_legs
    try:
        place = Place(route.bridge.id, route.number.number)
        over = await live.claim(leg_id, Claim(org_id, max_legs, place, channels, call))
    except LiveLegsUnavailable as exc:
        admission.refused("live_legs_unavailable")
        return Refusal(RejectCause.USER_BUSY, exc.detail)
    if over is Limit.CALL:
        return TakenElsewhere()
    if over is Limit.NUMBER:
        return Refusal(RejectCause.USER_BUSY, f"{number} already carries {channels} live leg(s)")
    if over is Limit.ORGANIZATION:
        return Refusal(
            RejectCause.USER_BUSY,
            f"organization {org_id} already has {max_legs} live leg(s), its limit",
        )
    return route
