"""Calls taken over from the store: after a restart (all that no live node holds), and one
leg at a time from another node that let it go (issue 16, point 3: a leg moves to the node of
the room it joins).

Both are the same step: the leg's stored rows into the machine, its timers armed for what is
left of them, its gateway found again from ``Leg.carrier``, its live-leg claim held here (so
its commands and provider webhooks come here), and then ``LegAdopted``: an answered leg asks
its provider for a new media stream, now to this node's media URL. The provider is asked too
whether the call is still there, since a hangup may have gone to a node that no longer held
the leg. Letting a leg go (``let_go``) is the other side: the leg leaves this node's machine,
media plane, timers, gateways and claim without an input (nothing about the call changes, so
nothing is stored or published); its stream stays open until its provider moves it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from engine.admission.live import LiveLegs, Place
from engine.cluster.owners import LegOwners
from engine.errors import InvalidState, NotFound
from engine.logs import get_logger
from engine.machine import events as ev
from engine.machine.machine import CallMachine
from engine.machine.model import Leg, TimerKey
from engine.media_plane.plane import MediaPlane
from engine.providers.gateway import GatewayResolver, ProviderGateway
from engine.providers.reconcile import Reconciler
from engine.runtime.recording_lifecycle import RecordingLifecycle
from engine.store.base import Store
from engine.store.live_records import LiveSnapshot

log = get_logger("callbridge.runtime")


class LegStays(InvalidState):
    """422 (Telnyx's invalid call state): a leg that cannot move to another node now; the
    detail says why (engine/machine/handover.py)."""


@dataclass(frozen=True, slots=True)
class Parts:
    """What adoption works with: the runtime's, handed in by it (engine/runtime/runtime.py)."""

    machine: CallMachine
    plane: MediaPlane
    store: Store
    live: LiveLegs
    resolver: GatewayResolver
    gateways: dict[str, ProviderGateway]
    start_timer: Callable[[TimerKey, float], None]
    cancel_timer: Callable[[TimerKey], None]
    recording_files: RecordingLifecycle
    reconciler: Reconciler
    lock: asyncio.Lock
    clock: Callable[[], float]
    own_event: Callable[[ev.Event], Awaitable[None]]
    spawn: Callable[[Awaitable[None]], None]


class Adoption:
    def __init__(self, parts: Parts) -> None:
        self._p = parts
        self._adopted: list[str] = []  # adopted at start, not yet resumed

    async def adopt(self, owners: LegOwners) -> list[str]:
        """Take over the calls an earlier process on this store left (a crash, a deploy), but
        for the calls of legs another live node owns: its legs, rooms, queues, conferences,
        timers and recordings in progress. Every adopted answered leg asks its provider for a
        new media stream, and every adopted leg's provider is asked whether the call is still
        there; both wait for ``resume``, called once the app listens (a provider told to stream
        now would find nobody there). A leg no adapter can reach is ended with
        ``call.hangup``. Returns the live legs adopted."""
        p = self._p
        stored = await p.store.load_live()
        others = await owners.held_elsewhere([leg.call_control_id for leg in stored.legs])
        snapshot, left = stored.without(others)
        await p.store.own_live([leg.call_control_id for leg in snapshot.legs])
        async with p.lock:
            p.machine.adopt(snapshot.checkpoint())
        await p.recording_files.resume(snapshot, shared=bool(left))
        self._arm(snapshot)
        adopted = [leg.call_control_id for leg in snapshot.legs if await self._reachable(leg)]
        if stored.legs:
            log.info("live state adopted", legs=len(snapshot.legs), live=len(adopted),
                     timers=len(snapshot.timers), left_to_others=len(others))  # fmt: skip
        self._adopted = adopted
        return adopted

    async def resume(self) -> None:
        """The app listens: the adopted legs' new media streams and the providers' word on
        each call. Once; nothing to do without ``adopt``."""
        adopted, self._adopted = self._adopted, []
        await self._announce(adopted)

    async def adopt_leg(self, leg_id: str, org_id: int) -> None:
        """Take over one of ``org_id``'s legs another node let go (``let_go`` there), from the
        store; this node serves already, so its new stream is asked for at once. Returns once
        its claim names this node. ``NotFound`` if the store has no such leg alive."""
        p = self._p
        snapshot = (await p.store.load_live()).of_leg(leg_id)
        if not snapshot.legs or not snapshot.legs[0].is_alive or snapshot.legs[0].org_id != org_id:
            raise NotFound(f"no live call with call_control_id '{leg_id}' to take over")
        await p.store.own_live([leg_id])  # the node that let it go has nothing more to store
        async with p.lock:
            p.machine.take(snapshot.checkpoint())
        self._arm(snapshot)
        if await self._reachable(snapshot.legs[0]):
            await p.live.flush()  # its commands and webhooks come here from now on
            await self._announce([leg_id])
        log.info("leg taken over from another node", leg_id=leg_id, timers=len(snapshot.timers))

    async def take_over(self, leg_ids: list[str]) -> set[str]:
        """The calls of a node whose liveness expired (a kill -9, a machine lost), whose legs'
        claims this node took (engine/admission/live_redis.py): owned here in the store first
        (so the expired node, should it come back, can store nothing more about them), then
        adopted as after a restart, their new media streams asked for at once. Returns the
        live legs adopted."""
        p = self._p
        await p.store.own_live(leg_ids)
        snapshot = (await p.store.load_live()).only(leg_ids)
        async with p.lock:
            p.machine.take(snapshot.checkpoint())
        await p.recording_files.resume(snapshot, shared=True)
        self._arm(snapshot)
        adopted = [leg.call_control_id for leg in snapshot.legs if await self._reachable(leg)]
        await self._announce(adopted)
        log.info("calls of an expired node taken over", legs=len(leg_ids), live=len(adopted),
                 rooms=len(snapshot.rooms), timers=len(snapshot.timers))  # fmt: skip
        return set(adopted)

    async def lose(self, leg_ids: Sequence[str]) -> None:
        """Legs another node took over while this one was cut off (its Redis liveness lapsed,
        or the store refused an input on them: ``LegsFenced``): out of this node's machine,
        media plane, timers and gateways, with their rooms, whatever their state; nothing is
        published (the node holding them now speaks for them)."""
        p = self._p
        async with p.lock:
            lost = p.machine.lose(leg_ids)
            for leg in lost:
                self._drop_locally(leg)
        if lost:
            log.warning("calls lost to another node while this node was cut off: let go",
                        legs=[leg.call_control_id for leg in lost])  # fmt: skip

    def _drop_locally(self, leg: Leg) -> None:
        p = self._p
        leg_id = leg.call_control_id
        for key in leg.timers:
            p.cancel_timer(key)
        p.plane.leave(leg_id)
        p.plane.detach(leg_id)
        p.plane.stats.forget(leg_id)
        gateway = p.gateways.pop(leg_id, None)
        if gateway is not None:
            gateway.forget(leg_id)
        p.live.forget(leg_id)

    async def let_go(self, leg_id: str, org_id: int) -> None:
        """``org_id``'s leg goes on at another node, which takes it from the store
        (``adopt_leg``). ``LegStays`` (nothing changed) if it cannot move now; ``NotFound`` if
        this node does not hold it."""
        p = self._p
        async with p.lock:
            p.machine.leg(leg_id, org_id)
            why = p.machine.why_it_stays(leg_id)
            if why is not None:
                raise LegStays(f"call '{leg_id}' cannot move to another node now: {why}")
            gone = p.machine.let_go(leg_id)
            self._drop_locally(gone.leg)
        log.info("leg let go to another node", leg_id=leg_id, room_id=gone.room_id,
                 conferences=len(gone.conference_ids))  # fmt: skip

    def _arm(self, snapshot: LiveSnapshot) -> None:
        now = self._p.clock()
        for key, deadline in snapshot.timers:
            self._p.start_timer(key, max(0.0, deadline - now))

    async def _reachable(self, leg: Leg) -> bool:
        """A live leg's gateway found again and its claim held here; a leg whose provider
        call cannot be reached is ended (``ProviderCallGone``)."""
        p = self._p
        if not leg.is_alive:
            return False
        found = await p.resolver.adopt(leg)
        if found is None:
            reason = "no provider call to reach after a restart"
            await p.own_event(ev.ProviderCallGone(leg.call_control_id, reason))
            return False
        p.gateways[leg.call_control_id] = found.gateway
        place = None
        if found.bridge_id is not None and found.number is not None:
            place = Place(found.bridge_id, found.number)
        # Claimed anew here, with its provider call: its webhooks reaching another node come here.
        p.live.hold(leg.call_control_id, org_id=leg.org_id, place=place, call=found.call)
        return True

    async def _announce(self, leg_ids: list[str]) -> None:
        """Each adopted leg's ``LegAdopted`` (its new media stream asked for), then its
        provider asked, in the background, whether the call is still there."""
        for leg_id in leg_ids:
            await self._p.own_event(ev.LegAdopted(leg_id))
        if leg_ids:
            self._p.spawn(self._ask_providers(leg_ids))

    async def _ask_providers(self, leg_ids: list[str]) -> None:
        ended = await self._p.reconciler.check_now(leg_ids)
        if ended:
            log.info("adopted legs their providers had ended", legs=ended)
