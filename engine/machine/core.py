"""The machine's state and the primitives every handler uses.

``Core`` holds every leg, room and queue of one engine, plus the effects of the input being
handled. Handlers (``engine.machine.legs``, ``engine.machine.queues``, ``engine.machine.media``)
follow one discipline: check everything first (raising before any change), then apply through
the primitives here, which cannot fail. That is what makes a refused command change nothing.
Should a handler fail anyway (a bug), ``checkpoint``/``restore`` take the machine back to where it
was before the input, effects included: ``CallMachine`` frames every input with them.

Two effects are never emitted by hand but derived from the change of a leg in ``Core.put``, so
they cannot drift from the state: mixer membership (``JoinRoom``/``LeaveRoom``: a leg is mixed
exactly while it is a room member with live media), ``SetDtmfMute`` and ``SetAudience`` (who may
hear the leg: ``engine.machine.hearing``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

from engine.machine.effects import (
    HOLD_TAG,
    CancelTimer,
    ClearOverlay,
    Effect,
    EmitWebhook,
    JoinRoom,
    LeaveRoom,
    SetAudience,
    SetDtmfMute,
    SetOverlay,
    StartTimer,
)
from engine.machine.hearing import Audience, audience, deaf
from engine.machine.model import (
    Conference,
    Leg,
    LegState,
    OverlaySource,
    Queue,
    Room,
    RoomKind,
    TargetLegs,
    TimerKey,
    TimerKind,
)
from engine.machine.transitions import TRANSITIONS, Trigger

_ROOM_PREFIX: Final = {RoomKind.BRIDGE: "room", RoomKind.CONFERENCE: "conf"}


class Checkpoint(NamedTuple):
    """The machine's state at one moment: shallow copies of its dicts. Their values are frozen
    dataclasses, replaced and never mutated, so copying the dicts copies the state exactly."""

    legs: dict[str, Leg]
    rooms: dict[str, Room]
    queues: dict[tuple[int, str], Queue]
    conferences: dict[tuple[int, int], str]
    records: dict[str, Conference]  # conference_id -> the Conferences API's record


def iso(t: float) -> str:
    """ISO-8601 with microseconds and Z, as Call Control v2 writes times. A conversion of a
    time passed in, not a clock read."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def mixer_room(leg: Leg | None) -> str | None:
    """The mixer room a leg must be in: its room, once its media is live, until it ends."""
    if leg is None or not leg.media_started or leg.state is LegState.HANGUP:
        return None
    return leg.room_id


def mixer_audience(leg: Leg | None) -> tuple[Audience, bool]:
    """Who the mixer lets hear the leg now (None: everyone) and whether it is deaf, for a leg in
    the mixer; (None, False) for one that is not."""
    if leg is None or mixer_room(leg) is None:
        return None, False
    return audience(leg), deaf(leg)


def counting_ids() -> Callable[[], str]:
    """Room keys for a machine that is given none: unique within it, for tests. The composition
    root gives the runtime's random ones, unique across restarts and nodes."""
    numbers = itertools.count(1)
    return lambda: f"{next(numbers):032x}"


class Core:
    def __init__(
        self,
        *,
        media_wait_s: float = 5.0,
        new_key: Callable[[], str] | None = None,
        settle: Callable[[Core], None] | None = None,
    ) -> None:
        self.media_wait_s = media_wait_s  # see machine_streams
        self.setup_timeout_s: float | None = None  # see machine_setup; None: no setup timeout
        self._new_key = new_key if new_key is not None else counting_ids()
        self.legs: dict[str, Leg] = {}
        self.rooms: dict[str, Room] = {}
        self.queues: dict[tuple[int, str], Queue] = {}
        # (organization, bridge) -> its default conference room, while the room has members.
        self.conferences: dict[tuple[int, int], str] = {}
        # Conferences of the Conferences API, live and ended (engine.machine.conferences).
        self.records: dict[str, Conference] = {}
        self.now = 0.0
        self.out: list[Effect] = []
        # Legs that changed rooms in the input under way, and the rooms they left or joined:
        # what ``settle`` (the machine's: playbacks following their leg,
        # engine.machine.playback_rooms) looks at once the input's handler is done.
        self.moved_legs: set[str] = set()
        self.moved_rooms: set[str] = set()
        self._settle = settle

    # Input framing.
    def begin(self, now: float) -> None:
        self.now = now
        self.out = []
        self.moved_legs, self.moved_rooms = set(), set()

    def finish(self) -> list[Effect]:
        if self._settle is not None and self.moved_legs:
            self._settle(self)
        self.moved_legs, self.moved_rooms = set(), set()
        out, self.out = self.out, []
        return out

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(
            dict(self.legs),
            dict(self.rooms),
            dict(self.queues),
            dict(self.conferences),
            dict(self.records),
        )

    def restore(self, saved: Checkpoint) -> None:
        """Back to ``saved``, dropping the effects of the input under way: an input that
        failed half-way must leave neither state nor effects behind."""
        self.legs, self.rooms, self.queues, self.conferences, self.records = (
            dict(saved.legs),
            dict(saved.rooms),
            dict(saved.queues),
            dict(saved.conferences),
            dict(saved.records),
        )
        self.out = []
        self.moved_legs, self.moved_rooms = set(), set()

    def emit(self, *effects: Effect) -> None:
        self.out.extend(effects)

    # Legs.
    def live(self, call_control_id: str) -> Leg | None:
        leg = self.legs.get(call_control_id)
        return leg if leg is not None and leg.is_alive else None

    def put(self, leg: Leg) -> Leg:
        """Store `leg` and emit the effects derived from what changed."""
        old = self.legs.get(leg.call_control_id)
        self.legs[leg.call_control_id] = leg
        was_in = old.room_id if old is not None else None
        if was_in != leg.room_id:
            self.moved_legs.add(leg.call_control_id)
            self.moved_rooms.update(r for r in (was_in, leg.room_id) if r is not None)
        before, after = mixer_room(old), mixer_room(leg)
        if before != after:
            if before is not None:
                self.emit(LeaveRoom(leg.call_control_id, before))
            if after is not None:
                self.emit(JoinRoom(leg.call_control_id, after))
        if (old.dtmf_muted if old else False) != leg.dtmf_muted:
            self.emit(SetDtmfMute(leg.call_control_id, leg.dtmf_muted))
        if mixer_audience(old) != (now := mixer_audience(leg)):
            self.emit(SetAudience(leg.call_control_id, *now))
        return leg

    def update(self, leg: Leg, **changes: Any) -> Leg:
        return self.put(replace(leg, **changes))

    def move(self, leg: Leg, trigger: Trigger, **changes: Any) -> Leg:
        """Apply a transition the handler has already checked. A missing pair is a bug in the
        handler, not a user error, so it raises KeyError."""
        target = TRANSITIONS[(leg.state, trigger)]
        held = (leg.state is LegState.HELD, target is LegState.HELD)
        # One owner for hold audio: a leg hears its tone on hold exactly while it is held (a
        # later bridge, conference join, queue or hangup takes it off hold).
        if held == (False, True):
            self.emit(SetOverlay(leg.call_control_id, HOLD_TAG, OverlaySource("hold", ""), None))
        elif held == (True, False):
            self.emit(ClearOverlay(leg.call_control_id, HOLD_TAG))
        return self.put(replace(leg, state=target, **changes))

    def with_client_state(self, leg: Leg, client_state: str | None) -> Leg:
        """A command's client_state applies to every webhook of the leg from now on."""
        if client_state is None or client_state == leg.client_state:
            return leg
        return self.update(leg, client_state=client_state)

    # Rooms.
    def new_room_id(self, kind: RoomKind) -> str:
        """A room id nobody has: the machine is the one place that names rooms, one namespace
        with the kind as prefix, so a bridge room can never take a conference's name."""
        room_id = f"{_ROOM_PREFIX[kind]}:{self._new_key()}"
        if room_id in self.rooms:
            raise RuntimeError(f"room id {room_id} minted twice: the key source repeats itself")
        return room_id

    def new_uuid(self) -> str:
        """A new id shaped as a UUID (an application stream's), from the same unique keys."""
        key = self._new_key()
        return f"{key[:8]}-{key[8:12]}-{key[12:16]}-{key[16:20]}-{key[20:32]}"

    def conference_of(self, org_id: int, bridge_id: int) -> str:
        """The id of a bridge's default conference: the live one, or a new one."""
        room_id = self.conferences.get((org_id, bridge_id))
        return room_id if room_id is not None else self.new_room_id(RoomKind.CONFERENCE)

    def peers(self, leg: Leg) -> list[Leg]:
        room = self.rooms.get(leg.room_id) if leg.room_id else None
        if room is None:
            return []
        ids = [m for m in room.members if m != leg.call_control_id]
        return [self.legs[m] for m in ids]

    def listeners(self, leg: Leg, target: TargetLegs) -> tuple[str, ...]:
        """The legs Call Control's ``target_legs`` names for audio from ``leg``: itself
        (``self``), its room's other members (``opposite``) or both."""
        if target is TargetLegs.SELF:
            return (leg.call_control_id,)
        peers = tuple(p.call_control_id for p in self.peers(leg))
        return peers if target is TargetLegs.OPPOSITE else (leg.call_control_id, *peers)

    # Timers.
    def start_timer(self, leg: Leg, kind: TimerKind, delay_s: float, tag: str = "") -> Leg:
        key = TimerKey(leg.call_control_id, kind, tag)
        self.emit(StartTimer(key, delay_s))
        return self.update(leg, timers=leg.timers | {key})

    def cancel_timers(self, leg: Leg, *kinds: TimerKind) -> Leg:
        """Cancel the leg's timers of `kinds` (all of them when none is named)."""
        doomed = {k for k in leg.timers if not kinds or k.kind in kinds}
        for key in sorted(doomed, key=lambda k: (k.kind.value, k.tag)):
            self.emit(CancelTimer(key))
        return self.update(leg, timers=leg.timers - doomed) if doomed else leg

    # Webhooks.
    def webhook(self, leg: Leg, event_type: str, **extra: object) -> None:
        """Emit a Call Control v2 event for `leg`, unless nobody listens (default routing)."""
        if leg.webhook_url is None:
            return
        payload = leg_fields(leg, leg.client_state)
        payload["from"], payload["to"] = leg.from_, leg.to
        payload["direction"] = leg.direction.value
        payload.update(extra)
        self.send(leg.call_control_id, leg.org_id, leg.webhook_url, event_type, payload)

    def send(
        self,
        leg_id: str,
        org_id: int,
        url: str,
        event_type: str,
        payload: dict[str, object],
        order_key: str | None = None,
    ) -> None:
        self.emit(
            EmitWebhook(
                call_control_id=leg_id,
                org_id=org_id,
                webhook_url=url,
                event_type=event_type,
                payload=payload,
                occurred_at=self.now,
                order_key=order_key,
            )
        )


def leg_fields(leg: Leg, client_state: str | None) -> dict[str, object]:
    """The ids every event about a leg carries, call.* and conference.* alike."""
    return {
        "call_control_id": leg.call_control_id,
        "call_leg_id": leg.call_leg_id,
        "call_session_id": leg.call_session_id,
        "connection_id": leg.connection_id,
        "client_state": client_state,
    }
