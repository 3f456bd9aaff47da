"""Rooms and the life of a leg in them: bridge, unbridge, conference, answer, hangup.

Words: in ``bridge`` the commanded leg is A, the leg it names (or the head of the named queue)
is B. A bridge room holds two legs; a conference room any number.

- Bridging A with B detaches both from wherever they were (queue, room, pending bridge), puts
  them in a new two-party room and emits ``call.bridged`` for A, then B. When B still rings
  (dialing, or answer not yet confirmed), A waits in the room (state bridging, ringback if
  asked) and B joins when it answers.
- When a leg leaves a bridge room (hangup, unbridge, bridged elsewhere, enqueued), the room
  dissolves and the leg left behind follows its own policy: park_after_unbridge "self" parks
  it, hold_after_unbridge holds it, otherwise it is hung up (normal_clearing). A ringing B whose
  A went away is not hung up: it keeps ringing and is merely answered when it answers.
- Leaving a conference room affects nobody else; the room ends with its last member. Each
  conference room has its record (``engine.machine.conference_events``), which reports joins,
  leaves and the end.
"""

from __future__ import annotations

from dataclasses import replace

from engine.errors import CallbridgeError, InvalidState, NotFound
from engine.machine import (
    app_streams,
    conference_events,
    conference_media,
    gather,
    media,
    queues,
    supervision,
)
from engine.machine.commands import Bridge, JoinConference, ParameterError
from engine.machine.core import Core, iso
from engine.machine.effects import Effect, HangupCall
from engine.machine.model import (
    INVALID_STATE_CODE,
    CallEnded,
    HangupCause,
    HangupSource,
    Leg,
    LegState,
    MuteDtmf,
    OverlaySource,
    Room,
    RoomKind,
)
from engine.machine.transitions import Trigger, require

RINGING = frozenset({LegState.DIALING, LegState.ANSWERING})

# Which of (A, B) must not hear DTMF, for each mute_dtmf value (relative to A).
_DTMF_MUTES = {
    MuteDtmf.NONE: (False, False),
    MuteDtmf.BOTH: (True, True),
    MuteDtmf.SELF: (True, False),
    MuteDtmf.OPPOSITE: (False, True),
}


# Leaving and ending.
def detach(core: Core, leg: Leg, dequeue_reason: str) -> tuple[Leg, list[str]]:
    """Take `leg` out of its queue, room or pending bridge, keeping its state.

    Returns the updated leg and the legs left behind in a dissolved bridge room; the caller
    hands them to `left_behind` once its own change and webhooks are out.
    """
    orphans: list[str] = []
    leg = queues.remove(core, leg, dequeue_reason)
    if leg.ringback:
        core.emit(media.clear_ringback(leg))
        leg = core.update(leg, ringback=False)
    if leg.pending_room_id is not None:
        # A ringing B goes away: the A waiting for it is left behind.
        room = core.rooms.pop(leg.pending_room_id, None)
        orphans += _empty(core, replace(room, pending=None) if room else None)
        leg = core.update(leg, pending_room_id=None, dtmf_muted=False)
    if leg.room_id is not None and leg.call_control_id in core.rooms[leg.room_id].supervisors:
        room = core.rooms[leg.room_id]
        without = tuple(s for s in room.supervisors if s != leg.call_control_id)
        core.rooms[room.room_id] = replace(room, supervisors=without)
        leg = core.update(leg, room_id=None, **supervision.NOT_SUPERVISING)
    if leg.room_id is not None:
        room = core.rooms.pop(leg.room_id)
        rest = tuple(m for m in room.members if m != leg.call_control_id)
        if room.kind is RoomKind.CONFERENCE:
            if rest:
                core.rooms[room.room_id] = replace(room, members=rest)
            else:
                orphans += _empty(core, replace(room, members=()))  # its supervisors
                if room.bridge_id is not None:
                    # An empty conference is gone; the bridge's next caller starts a new one.
                    core.conferences.pop((room.org_id, room.bridge_id), None)
        else:
            orphans += _empty(core, replace(room, members=rest))
        if room.kind is RoomKind.CONFERENCE:
            conference_media.beep(core, room.room_id, leg, "exit", rest)
            leg = conference_media.leaving(core, room.room_id, leg)
        leg = core.update(
            leg,
            room_id=None,
            dtmf_muted=False,
            muted=False,
            joined_room_at=None,
            conference_beep=None,
            **supervision.NOT_SUPERVISING,
        )
        if room.kind is RoomKind.CONFERENCE:
            conference_events.left(core, room, leg, last=not rest)
    return leg, orphans


def _empty(core: Core, room: Room | None) -> list[str]:
    """Dissolve a room (already removed from `core.rooms`): its ringing B stops waiting for it,
    its members and supervisors are out of it. Returns them."""
    if room is None:
        return []
    if room.pending is not None and (pending := core.live(room.pending)) is not None:
        core.update(pending, pending_room_id=None, dtmf_muted=False)
    for member in room.members:
        core.update(core.legs[member], room_id=None, dtmf_muted=False)
    for supervisor in room.supervisors:
        core.update(core.legs[supervisor], room_id=None, **supervision.NOT_SUPERVISING)
    return [*room.members, *room.supervisors]


def left_behind(core: Core, orphans: list[str]) -> None:
    """Each leg whose bridge dissolved follows its own unbridge policy."""
    for call_control_id in orphans:
        leg = core.live(call_control_id)
        if leg is None or leg.room_id is not None:
            continue  # ended meanwhile, or already in a room again
        if leg.state not in (LegState.BRIDGED, LegState.BRIDGING):
            continue
        leg, more = detach(core, leg, "bridged")  # clears ringback; it is in no room now
        if leg.park_after_unbridge:
            core.move(leg, Trigger.PARK_AFTER_UNBRIDGE)
        elif leg.hold_after_unbridge:
            core.move(leg, Trigger.HOLD_AFTER_UNBRIDGE)
        else:
            end_leg(
                core,
                leg,
                Trigger.HANGUP_AFTER_UNBRIDGE,
                HangupCause.NORMAL_CLEARING,
                leg.our_side,
                provider=HangupCall(leg.call_control_id),
            )
        left_behind(core, more)


def end_leg(
    core: Core,
    leg: Leg,
    trigger: Trigger,
    cause: HangupCause,
    source: HangupSource,
    *,
    sip_code: str = "unspecified",
    provider: Effect | None = None,
    reason: str | None = None,
    detail: str = "",
) -> None:
    """End a leg: provider call, timers, media, queue and room, then call.hangup, then the
    legs it leaves behind.

    ``reason`` (a slug) and ``detail`` say why callbridge itself ended the leg when the Call
    Control API's closed ``hangup_cause`` set cannot: they go out as the ``callbridge_reason`` and
    ``callbridge_reason_detail`` extension fields of ``call.hangup``.
    """
    if provider is not None:
        core.emit(provider)
    leg = core.cancel_timers(leg)
    leg = media.stop_all(core, leg)
    leg = app_streams.hung_up(core, leg)
    leg = gather.hung_up(core, leg)
    leg, orphans = detach(core, leg, "hangup")
    leg = core.move(
        leg,
        trigger,
        ended_at=core.now,
        hangup_cause=cause,
        hangup_source=source,
        sip_hangup_cause=sip_code,
    )
    core.webhook(
        leg,
        "call.hangup",
        state="hangup",
        start_time=iso(leg.start_time),
        hangup_cause=cause.value,
        hangup_source=source.value,
        sip_hangup_cause=sip_code,
        **_reason_fields(reason, detail),
    )
    left_behind(core, orphans)


def _reason_fields(reason: str | None, detail: str) -> dict[str, object]:
    if reason is None:
        return {}
    # Bounded: the detail may quote a provider's error text.
    return {"callbridge_reason": reason, "callbridge_reason_detail": detail[:300]}


# Bridge.
def _engaged(leg: Leg) -> bool:
    """In a room, waiting in one, or awaited by one: bridged, as prevent_double_bridge sees it."""
    return leg.room_id is not None or leg.pending_room_id is not None


def _together(core: Core, a: Leg, b: Leg) -> bool:
    room = core.rooms.get(a.room_id) if a.room_id else None
    return (
        room is not None
        and room.kind is RoomKind.BRIDGE
        and a.room_id in (b.room_id, b.pending_room_id)
    )


def check_bridge(core: Core, a: Leg, command: Bridge) -> tuple[Leg, Trigger]:
    """B and A's trigger, or the refusal. Nothing changes here."""
    field = "queue" if command.queue is not None else "call_control_id"
    if command.queue is not None:
        b_id = queues.head(core, a.org_id, command.queue)
    else:
        b_id = command.call_control_id or ""
    b = core.legs.get(b_id)
    if b is None or b.org_id != a.org_id:
        raise NotFound(f"no call with call_control_id '{b_id}'", field=field)
    if b.call_control_id == a.call_control_id:
        raise ParameterError("a call cannot be bridged with itself", field=field)
    if not b.is_alive:
        raise CallEnded("Call has already ended", field=field)
    trigger = Trigger.BRIDGE_TO_RINGING if b.state in RINGING else Trigger.BRIDGE
    require(a.state, trigger)
    require(b.state, Trigger.BRIDGE_TARGET, field=field)
    if _together(core, a, b):
        raise InvalidState(
            "the calls are already bridged together", field=field, code=INVALID_STATE_CODE
        )
    if command.prevent_double_bridge and _engaged(b):
        raise InvalidState(
            "the call to bridge with is already bridged (prevent_double_bridge)",
            field=field,
            code=INVALID_STATE_CODE,
        )
    return b, trigger


def bridge(core: Core, a: Leg, b: Leg, trigger: Trigger, command: Bridge) -> None:
    """Carry out a checked bridge."""
    a, orphans = detach(core, a, "bridged")
    b, more = detach(core, core.legs[b.call_control_id], "bridged")
    ringing = trigger is Trigger.BRIDGE_TO_RINGING
    room_id = core.new_room_id(RoomKind.BRIDGE)
    core.rooms[room_id] = Room(
        room_id,
        a.org_id,
        RoomKind.BRIDGE,
        (a.call_control_id,) if ringing else (a.call_control_id, b.call_control_id),
        b.call_control_id if ringing else None,
    )
    mute_a, mute_b = _DTMF_MUTES[command.mute_dtmf]
    a = core.move(
        a,
        trigger,
        room_id=room_id,
        dtmf_muted=mute_a,
        park_after_unbridge=command.park_after_unbridge,
        hold_after_unbridge=command.hold_after_unbridge,
        bridge_record=command.record,
    )
    if ringing:
        core.move(b, Trigger.BRIDGE_TARGET, pending_room_id=room_id, dtmf_muted=mute_b)
        if command.play_ringtone:
            source = OverlaySource("ringback", command.ringtone)
            core.emit(media.set_ringback(a, source))
            a = core.update(a, ringback=True)
    else:
        b = core.move(b, Trigger.BRIDGE_TARGET, room_id=room_id, dtmf_muted=mute_b)
        _announce(core, a, b)
    left_behind(core, orphans + more)


def _announce(core: Core, a: Leg, b: Leg) -> None:
    """The bridge is complete: call.bridged for A then B, and A's record-from-answer."""
    core.webhook(a, "call.bridged")
    core.webhook(b, "call.bridged")
    if a.bridge_record is not None:
        options = a.bridge_record
        a = core.update(a, bridge_record=None)
        if a.recording_id is None:
            media.start_recording(core, a, options)


def peer_answered(core: Core, b: Leg) -> None:
    """B, awaited by a bridge, has answered: it joins the room and the bridge completes."""
    room = core.rooms.get(b.pending_room_id) if b.pending_room_id else None
    if room is None:
        return
    a = core.legs[room.members[0]]
    core.rooms[room.room_id] = replace(
        room, members=(*room.members, b.call_control_id), pending=None
    )
    b = core.move(b, Trigger.BRIDGE_TARGET, room_id=room.room_id, pending_room_id=None)
    if a.ringback:
        core.emit(media.clear_ringback(a))
    a = core.move(a, Trigger.PEER_ANSWERED, ringback=False)
    _announce(core, a, b)


def bridge_on_answer(core: Core, leg: Leg) -> None:
    """Dial's bridge_on_answer: bridge the answered leg (as A) with its link_to (as B), as if
    it had sent the bridge command itself. If that is impossible now (link_to ended, or busy
    and prevent_double_bridge), the leg simply stays answered; the application decides."""
    command = Bridge(
        call_control_id=leg.link_to,
        park_after_unbridge=leg.park_after_unbridge,
        hold_after_unbridge=leg.hold_after_unbridge,
        prevent_double_bridge=leg.prevent_double_bridge,
    )
    try:
        linked, trigger = check_bridge(core, leg, command)
    except CallbridgeError:
        return
    bridge(core, leg, linked, trigger, command)


# Unbridge and conference.
def unbridge(core: Core, leg: Leg) -> None:
    """callbridge's extension: out of the room, parked; the rest follow their own policy."""
    leg, orphans = detach(core, leg, "bridged")
    core.move(leg, Trigger.UNBRIDGE)
    left_behind(core, orphans)


def check_join_conference(core: Core, leg: Leg, command: JoinConference) -> None:
    require(leg.state, Trigger.JOIN_CONFERENCE)
    room = core.rooms.get(command.room_id)
    if room is not None and (room.kind is not RoomKind.CONFERENCE or room.org_id != leg.org_id):
        raise NotFound(f"no conference room '{command.room_id}'", field="room_id")


def join_conference(core: Core, leg: Leg, room_id: str, *, bridge_id: int | None = None) -> None:
    """Put a checked leg in a conference room, making the room (a bridge's default conference
    when ``bridge_id`` is given) if it has no members yet."""
    if leg.room_id == room_id:
        return  # already there
    leg, orphans = detach(core, leg, "bridged")
    room = core.rooms.get(room_id) or Room(
        room_id, leg.org_id, RoomKind.CONFERENCE, bridge_id=bridge_id
    )
    if room.org_id != leg.org_id:
        # check_join_conference refuses this; a room can never hold two organizations' legs.
        raise RuntimeError(f"leg of org {leg.org_id} joining room {room_id} of org {room.org_id}")
    if bridge_id is not None:
        core.conferences[(leg.org_id, bridge_id)] = room_id
    record = conference_events.record_of(core, room_id)
    if record is None or record.ended_at is not None:
        conference_events.opened(core, conference_events.default_record(core, room, leg), leg)
    core.rooms[room_id] = replace(room, members=(*room.members, leg.call_control_id))
    leg = core.move(leg, Trigger.JOIN_CONFERENCE, room_id=room_id, joined_room_at=core.now)
    conference_events.joined(core, room_id, leg)
    conference_media.beep(core, room_id, leg, "enter", core.rooms[room_id].members)
    left_behind(core, orphans)


def after_answer(core: Core, leg: Leg) -> None:
    """What an answered leg does next: join the bridge awaiting it, bridge with its link_to,
    or join its default conference."""
    if leg.pending_room_id is not None:
        peer_answered(core, leg)
    elif leg.bridge_on_answer and leg.link_to is not None:
        bridge_on_answer(core, leg)
    elif leg.supervise is not None:
        supervision.join_on_answer(core, leg)
    elif leg.join_conference_of is not None:
        bridge_id = leg.join_conference_of
        command = JoinConference(room_id=core.conference_of(leg.org_id, bridge_id))
        try:
            check_join_conference(core, leg, command)
        except CallbridgeError:
            return  # the leg cannot join now (e.g. its state): it stays answered
        join_conference(core, leg, command.room_id, bridge_id=bridge_id)
