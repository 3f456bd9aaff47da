"""Inputs apply wholly or not at all, and the machine's invariants hold under any interleaving
(issue 11, point 2).

A hypothesis property test drives random sequences of provider events and commands for two
organizations through a ``CallMachine``, carrying its mixer effects out on a real
``media.mixer.Mixer`` the way ``engine.media_plane.plane`` does, its timer effects on a table of
pending timers, and media streams the way ``adapters.media_session`` binds them (one per live
leg). After every step it checks the invariants; a step may carry a planted fault (the machine's
core raising half-way through the input, after some of its changes), after which the machine
must be exactly as before the step and hold none of the step's effects.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import CallbridgeError, NotFound
from engine.machine import commands as cmd
from engine.machine import effects as fx
from engine.machine import events as ev
from engine.machine.core import Core, mixer_room
from engine.machine.machine import CallMachine, Snapshot
from engine.machine.model import (
    DtmfSource,
    HangupCause,
    HangupSource,
    Leg,
    LegState,
    NewLegIds,
    TimerKey,
)
from media.codecs import PCMU_8K
from media.mixer import Mixer

ORGS = (1, 2)
LEGS_PER_ORG = 3  # few, so steps often meet the same legs
BRIDGES = (1, 2)  # the same bridge ids in both organizations: their conferences must differ
QUEUES = ("q1", "q2")
HOOK = "https://app.example.com/hooks"
T0 = 1_700_000_000.0


class PlantedFault(Exception):
    """Not a CallbridgeError: what a bug half-way through a handler looks like."""


class FaultyCore(Core):
    """The machine's core, able to raise on the n-th leg change of an input, after making it:
    the input has then changed some of the state and emitted some effects."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_after: int | None = None

    def put(self, leg: Leg) -> Leg:
        stored = super().put(leg)
        if self.fail_after is not None:
            self.fail_after -= 1
            if self.fail_after == 0:
                self.fail_after = None
                raise PlantedFault("planted fault half-way through an input")
        return stored


def faulty_machine() -> tuple[CallMachine, FaultyCore]:
    machine = CallMachine()
    core = FaultyCore()
    machine._core = core  # a fresh machine: nothing is lost by swapping its empty core
    return machine, core


def leg_id(org: int, n: int) -> str:
    return f"o{org}-{n}"


def org_of(leg: str) -> int:
    return int(leg[1])


@dataclass
class World:
    """The machine and what the runtime would hold beside it: mixer, timers, streams."""

    machine: CallMachine
    core: FaultyCore
    mixer: Mixer = field(default_factory=lambda: Mixer(capacity=16))
    timers: set[TimerKey] = field(default_factory=set)
    streams: set[str] = field(default_factory=set)  # legs with a media stream bound
    now: float = T0
    faults: int = 0

    # Carrying effects out, as engine.runtime.runtime and engine.media_plane.plane do.
    def carry_out(self, effects: list[fx.Effect]) -> None:
        for effect in effects:
            match effect:
                case fx.JoinRoom(leg, room) if leg in self.streams:
                    self.mixer.join(leg, room)
                case fx.LeaveRoom(leg, _room) if leg in self.streams:
                    self.mixer.leave(leg)
                case fx.StartTimer(key, _delay):
                    self.timers.add(key)
                case fx.CancelTimer(key):
                    self.timers.discard(key)

    def leg(self, leg: str) -> Leg | None:
        try:
            return self.machine.leg(leg)
        except NotFound:
            return None

    # Inputs.
    def event(self, event: ev.Event, fault_at: int | None) -> None:
        self._input(lambda: self.machine.handle_event(event, self.now), fault_at)

    def command(self, leg: str, org: int, command: cmd.Command, fault_at: int | None) -> None:
        self._input(lambda: self.machine.handle_command(leg, org, command, self.now), fault_at)

    def dial(self, leg: str, org: int, command: cmd.Dial, fault_at: int | None) -> None:
        ids = NewLegIds(leg, f"leg-{leg}", f"session-{leg}")
        self._input(
            lambda: (
                self.machine.dial(ids, org, command, self.now, default_webhook_url=HOOK).effects
            ),
            fault_at,
        )

    def _input(self, apply: Any, fault_at: int | None) -> None:
        before = self.machine.snapshot()
        self.core.fail_after = fault_at
        try:
            effects = apply()
        except PlantedFault:
            self.faults += 1
            assert self.machine.snapshot() == before, "a failed input left changes behind"
            assert self.core.finish() == [], "a failed input left effects behind"
            return
        except CallbridgeError:
            assert self.machine.snapshot() == before, "a refused command changed the machine"
            return
        finally:
            self.core.fail_after = None
        self.carry_out(effects)

    # Stream binding, as adapters.media_session does it around the runtime.
    def media_started(self, leg: str, fault_at: int | None) -> None:
        known = self.leg(leg)
        if leg in self.streams or known is None or not known.is_alive:
            return  # refused before the runtime hears of it: one stream per live leg
        self.mixer.add_leg(leg, PCMU_8K)
        self.streams.add(leg)
        self.stream_news(ev.MediaStarted(leg, "PCMU/8000"), fault_at)

    def media_stopped(self, leg: str, fault_at: int | None) -> None:
        if leg not in self.streams:
            return
        self.mixer.remove_leg(leg)
        self.streams.discard(leg)
        self.stream_news(ev.MediaStopped(leg), fault_at)

    def stream_news(self, event: ev.MediaStarted | ev.MediaStopped, fault_at: int | None) -> None:
        """The plane has acted on the stream already, so the runtime gives a failed event to the
        machine again later (CallRuntime._until_taken); here, at once."""
        faults = self.faults
        self.event(event, fault_at)
        if self.faults > faults:
            self.event(event, None)


# ---- steps ------------------------------------------------------------------------------------
Step = tuple[Any, ...]
legs_st = st.tuples(st.sampled_from(ORGS), st.integers(0, LEGS_PER_ORG - 1))
# About one step in eight carries a fault, on its 1st to 4th leg change.
fault_st = st.one_of(*[st.none()] * 7, st.integers(1, 4))
pairs_st = st.tuples(legs_st, legs_st)

steps_st: st.SearchStrategy[Step] = st.one_of(
    # Whole arrivals, weighted up: single events and commands alone rarely get legs this far.
    *[st.tuples(st.just("up"), legs_st, st.sampled_from((None, *BRIDGES)))] * 3,
    *[st.tuples(st.just("bridge"), legs_st, legs_st)] * 2,
    st.tuples(st.just("incoming"), legs_st, st.sampled_from((None, *BRIDGES))),
    st.tuples(st.just("dial"), legs_st, st.one_of(st.none(), legs_st), st.booleans()),
    st.tuples(st.just("answer"), legs_st),
    st.tuples(st.just("answered"), legs_st),
    st.tuples(st.just("media_start"), legs_st),
    st.tuples(st.just("media_stop"), legs_st),
    st.tuples(st.just("unbridge"), legs_st),
    st.tuples(st.just("hangup"), legs_st),
    st.tuples(st.just("hung_up"), legs_st),
    st.tuples(st.just("provider_failed"), legs_st),
    *[st.tuples(st.just("enqueue"), legs_st, st.sampled_from(QUEUES), st.booleans())] * 2,
    *[st.tuples(st.just("dequeue"), legs_st, st.sampled_from(QUEUES))] * 2,
    st.tuples(st.just("leave_queue"), legs_st),
    st.tuples(st.just("join_room_of"), legs_st, legs_st),
    st.tuples(st.just("dtmf"), legs_st),
    st.tuples(st.just("fire_timer"), st.integers(0, 1000)),
    st.tuples(st.just("tick"), st.floats(0.1, 120.0)),
)


def run_step(world: World, step: Step, fault_at: int | None) -> None:
    kind, args = step[0], step[1:]
    if kind == "tick":
        world.now += args[0]
    elif kind == "fire_timer":
        if world.timers:
            pending = sorted(world.timers, key=repr)
            key = pending[args[0] % len(pending)]
            world.timers.discard(key)  # a fired timer is gone from the runtime's table
            faults = world.faults
            world.event(ev.TimerFired(key), fault_at)
            if world.faults > faults:
                world.timers.add(key)  # the runtime arms a failed firing again
    elif kind in _LEG_STEPS:
        (org, n), rest = args[0], args[1:]
        _LEG_STEPS[kind](world, leg_id(org, n), org, fault_at, *rest)
    else:
        raise AssertionError(f"unknown step {kind}")


def _incoming(world: World, leg: str, org: int, fault_at: int | None, bridge: int | None) -> None:
    world.event(
        ev.LegInitiated(
            call_control_id=leg,
            call_leg_id=f"leg-{leg}",
            call_session_id=f"session-{leg}",
            org_id=org,
            connection_id="conn-1",
            from_="+15550001111",
            to="+15550002222",
            webhook_url=HOOK if bridge is None else None,
            default_conference=bridge,
        ),
        fault_at,
    )


def _up(world: World, leg: str, org: int, fault_at: int | None, bridge: int | None) -> None:
    """A leg arrives, is answered (by the application, or by default routing into its bridge's
    conference) and its media goes live; the fault, if any, is planted in the last input."""
    _incoming(world, leg, org, None, bridge)
    if bridge is None:
        world.command(leg, org, cmd.Answer(), None)
    world.event(ev.LegAnswered(leg), None)
    world.media_started(leg, fault_at)


def _dial(
    world: World,
    leg: str,
    org: int,
    fault_at: int | None,
    link: tuple[int, int] | None,
    bridge_on_answer: bool,
) -> None:
    body: dict[str, object] = {"connection_id": "conn-1", "from": "+15550001", "to": "+15550002"}
    if link is not None:
        body |= {"link_to": leg_id(*link), "bridge_intent": True}
        body |= {"bridge_on_answer": bridge_on_answer}
    world.dial(leg, org, cmd.parse_dial(body), fault_at)


def _simple_command(command: cmd.Command) -> Any:
    def step(world: World, leg: str, org: int, fault_at: int | None) -> None:
        world.command(leg, org, command, fault_at)

    return step


def _event_of(make: Any) -> Any:
    def step(world: World, leg: str, org: int, fault_at: int | None) -> None:
        world.event(make(leg), fault_at)

    return step


def _bridge(world: World, leg: str, org: int, fault_at: int | None, other: tuple[int, int]) -> None:
    # With the first leg's organization: a leg of the other one is NotFound, changing nothing.
    world.command(leg, org, cmd.Bridge(call_control_id=leg_id(*other)), fault_at)


def _enqueue(
    world: World, leg: str, org: int, fault_at: int | None, queue: str, timed: bool
) -> None:
    wait = 30 if timed else None
    world.command(leg, org, cmd.Enqueue(queue_name=queue, max_wait_time_secs=wait), fault_at)


def _dequeue(world: World, leg: str, org: int, fault_at: int | None, queue: str) -> None:
    world.command(leg, org, cmd.Bridge(queue=queue), fault_at)


def _join_room_of(
    world: World, leg: str, org: int, fault_at: int | None, other: tuple[int, int]
) -> None:
    target = world.leg(leg_id(*other))
    room = target.room_id if target is not None else None
    world.command(leg, org, cmd.JoinConference(room_id=room or "conf:none"), fault_at)


_LEG_STEPS: dict[str, Any] = {
    "up": _up,
    "incoming": _incoming,
    "dial": _dial,
    "answer": _simple_command(cmd.Answer()),
    "answered": _event_of(ev.LegAnswered),
    "media_start": lambda w, leg, _org, fault: w.media_started(leg, fault),
    "media_stop": lambda w, leg, _org, fault: w.media_stopped(leg, fault),
    "bridge": _bridge,
    "unbridge": _simple_command(cmd.Unbridge()),
    "hangup": _simple_command(cmd.Hangup()),
    "hung_up": _event_of(
        lambda leg: ev.LegHungUp(leg, HangupCause.NORMAL_CLEARING, HangupSource.CALLER)
    ),
    "provider_failed": _event_of(lambda leg: ev.ProviderFailed(leg, "answer", "refused")),
    "enqueue": _enqueue,
    "dequeue": _dequeue,
    "leave_queue": _simple_command(cmd.LeaveQueue()),
    "join_room_of": _join_room_of,
    "dtmf": _event_of(lambda leg: ev.DtmfReceived(leg, "5", DtmfSource.OUT_OF_BAND)),
}


# ---- invariants -------------------------------------------------------------------------------
def check_invariants(world: World) -> None:
    snap = world.machine.snapshot()
    legs = {leg.call_control_id: leg for leg in snap.legs}
    _check_rooms(snap, legs)
    _check_queues(snap, legs)
    _check_mixer(world, snap, legs)
    for leg in legs.values():
        if leg.is_alive:
            # Every timer the machine counts on is one the runtime would fire.
            assert leg.timers <= world.timers, (leg.call_control_id, leg.timers, world.timers)


def _check_rooms(snap: Snapshot, legs: dict[str, Leg]) -> None:
    seen: dict[str, str] = {}
    for room in snap.rooms:
        assert room.members or room.pending, f"empty room {room.room_id} kept"
        for member in room.members:
            assert member not in seen, f"{member} in {seen[member]} and {room.room_id}"
            seen[member] = room.room_id
            leg = legs[member]
            assert leg.is_alive, f"{member} ended but still in {room.room_id}"
            assert leg.org_id == room.org_id, f"{member} of org {leg.org_id} in {room}"
            assert leg.room_id == room.room_id, (member, leg.room_id, room.room_id)
    rooms = {room.room_id for room in snap.rooms}
    for leg in legs.values():
        if leg.room_id is not None:
            assert leg.room_id in rooms and seen.get(leg.call_control_id) == leg.room_id, leg
        if leg.state in (LegState.BRIDGED, LegState.BRIDGING):
            assert leg.room_id is not None, f"{leg.call_control_id} {leg.state} without a room"
    for (org, bridge), room_id in snap.conferences:
        (room,) = [r for r in snap.rooms if r.room_id == room_id]
        assert (room.org_id, room.bridge_id) == (org, bridge), room


def _check_queues(snap: Snapshot, legs: dict[str, Leg]) -> None:
    queued: set[str] = set()
    for queue in snap.queues:
        assert queue.members, f"empty queue {queue.name} kept"
        for member in queue.members:
            assert member not in queued, f"{member} in two queues"
            queued.add(member)
            leg = legs[member]
            assert leg.is_alive and leg.org_id == queue.org_id, (leg, queue)
            assert leg.state is LegState.QUEUED and leg.queue_name == queue.name, leg
    for leg in legs.values():
        if leg.state is LegState.QUEUED:
            assert leg.call_control_id in queued, f"{leg.call_control_id} queued in no queue"


def _check_mixer(world: World, snap: Snapshot, legs: dict[str, Leg]) -> None:
    """The mixer's rooms are exactly the machine's rooms restricted to legs with live media."""
    wanted: dict[str, set[str]] = {}
    for room in snap.rooms:
        live = {m for m in room.members if mixer_room(legs[m]) == room.room_id}
        if live:
            wanted[room.room_id] = live
    held: dict[str, set[str]] = {}
    for stream in world.streams:
        room_id = world.mixer.room_of(stream)
        if room_id is not None:
            held.setdefault(room_id, set()).add(stream)
    assert held == wanted
    for room_id, members in held.items():
        assert set(world.mixer.members(room_id)) == members
    for leg in legs.values():
        if mixer_room(leg) is not None:
            assert leg.call_control_id in world.streams, f"{leg.call_control_id} mixed unbound"


# ---- the tests --------------------------------------------------------------------------------
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(st.tuples(steps_st, fault_st), min_size=1, max_size=60))
def test_any_interleaving_keeps_the_invariants_and_failed_inputs_change_nothing(
    steps: list[tuple[Step, int | None]],
) -> None:
    machine, core = faulty_machine()
    world = World(machine, core)
    for step, fault_at in steps:
        run_step(world, step, fault_at)
        check_invariants(world)


def bridged_world() -> tuple[World, str, str]:
    machine, core = faulty_machine()
    world = World(machine, core)
    a, b = leg_id(1, 0), leg_id(1, 1)
    for leg in (a, b):
        _incoming(world, leg, 1, None, None)
        world.command(leg, 1, cmd.Answer(), None)
        world.event(ev.LegAnswered(leg), None)
        world.media_started(leg, None)
    return world, a, b


def test_a_fault_half_way_through_a_bridge_rolls_the_whole_bridge_back() -> None:
    world, a, b = bridged_world()
    before = world.machine.snapshot()
    world.core.fail_after = 2  # the first leg has moved into the room, the second not
    with pytest.raises(PlantedFault):
        world.machine.handle_command(a, 1, cmd.Bridge(call_control_id=b), world.now)
    assert world.machine.snapshot() == before
    assert world.machine.handle_event(ev.LegAnswered("nobody"), world.now) == []
    # The same command, without the fault, applies wholly.
    world.command(a, 1, cmd.Bridge(call_control_id=b), None)
    assert world.machine.leg(a).room_id == world.machine.leg(b).room_id is not None
    check_invariants(world)


def test_a_fault_in_a_hangup_leaves_the_peer_bridged_and_the_retry_ends_the_leg() -> None:
    world, a, b = bridged_world()
    world.command(a, 1, cmd.Bridge(call_control_id=b), None)
    hung_up = ev.LegHungUp(a, HangupCause.NORMAL_CLEARING, HangupSource.CALLER)
    for fault_at in (1, 2, 3):
        world.event(hung_up, fault_at)
        assert world.machine.leg(a).state is world.machine.leg(b).state is LegState.BRIDGED
        check_invariants(world)
    assert world.faults == 3
    world.event(hung_up, None)  # the provider's retry
    assert world.machine.leg(a).state is LegState.HANGUP
    assert world.machine.leg(b).state is not LegState.BRIDGED
    check_invariants(world)


def test_a_failed_dial_leaves_no_leg_and_its_command_id_free() -> None:
    machine, core = faulty_machine()
    world = World(machine, core)
    dial = cmd.parse_dial(
        {"connection_id": "c", "from": "+15550001", "to": "+15550002", "command_id": "x"}
    )
    world.dial("d", 1, dial, 1)
    assert world.leg("d") is None
    world.dial("d", 1, dial, None)
    assert world.leg("d") is not None and world.timers


def test_the_checkpoint_is_cheap() -> None:
    """The cost of framing an input, against a machine holding 2000 legs in 1000 rooms: the
    report's benchmark number. Generous bound, so the test checks the order of magnitude."""
    world = World(*faulty_machine())
    for n in range(2000):
        leg = f"x{n}"
        _incoming(world, leg, 1, None, None)
        world.command(leg, 1, cmd.Answer(), None)
        world.event(ev.LegAnswered(leg), None)
        if n % 2:
            world.command(leg, 1, cmd.Bridge(call_control_id=f"x{n - 1}"), None)
    stale = ev.LegAnswered("nobody")  # does nothing: what is left is the framing's cost
    rounds = 2000
    started = time.perf_counter()
    for _ in range(rounds):
        world.machine.handle_event(stale, world.now)
    per_input_us = (time.perf_counter() - started) / rounds * 1e6
    print(f"input framing with 2000 legs, 1000 rooms: {per_input_us:.1f} us")
    assert per_input_us < 1000
