"""A leg handed from one node to another, so that legs a bridge or a conference joins share a
node (issue 16, point 3: rooms live on one node).

The node letting a leg go takes it out of its machine without an input: nothing about the leg
changes, so nothing is stored or published; its stored rows are what the node taking it loads
(engine/runtime/adoption.py). A leg moves only on its own: whatever is tied to the node it is
on and cannot follow (an answer still to come, a room with others, a queue, a supervision, a
recording or its file, a playback or ringback playing from that node's media plane, an
application's stream, a conference it created that is still live) makes it stay, and
``why_it_stays`` says which, for the API's error. What a moving leg may take along: a bridge
room it is alone in, and the ended conferences it created (found through their creator's node).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from engine.machine.core import Checkpoint, Core
from engine.machine.model import Leg, Room, RoomKind, SupervisorRole


@dataclass(frozen=True, slots=True)
class LetGo:
    """What left the machine with a leg: the leg, the room it was alone in, the conferences it
    created; and the timers the runtime must stop for them."""

    leg: Leg
    room_id: str | None
    conference_ids: tuple[str, ...]


def why_it_stays(core: Core, leg: Leg) -> str | None:
    """Why ``leg`` cannot move to another node now (None: it can)."""
    if not leg.is_alive:
        return "the call has ended"
    reasons = (
        (leg.answered_at is None, "it has not been answered"),
        (_in_conference(core, leg), "it is in a conference, whose room stays on its node"),
        (_shares_room(core, leg), "it shares a room with other calls (unbridge it first)"),
        (leg.pending_room_id is not None, "a bridge is waiting for it to answer"),
        (leg.queue_name is not None, "it is waiting in a queue"),
        (_supervising(leg), "it supervises or is supervised"),
        (bool(leg.recording_id or leg.recordings_unsaved), "it is being recorded"),
        (bool(leg.playbacks or leg.playback_queue or leg.ringback), "audio is playing to it"),
        (bool(leg.app_streams), "its audio is streamed to an application"),
        (_live_conference(core, leg), "it created a conference that is still live"),
    )
    return next((why for stays, why in reasons if stays), None)


def let_go(core: Core, leg: Leg) -> LetGo:
    """Take ``leg`` (one ``why_it_stays`` lets move) and what it takes along out of ``core``."""
    room_id = leg.room_id
    if room_id is not None:
        del core.rooms[room_id]
    created = tuple(
        r.conference_id for r in core.records.values() if r.creator == leg.call_control_id
    )
    for conference_id in created:
        del core.records[conference_id]
    del core.legs[leg.call_control_id]
    return LetGo(leg, room_id, created)


def take(core: Core, stored: Checkpoint) -> None:
    """Add ``stored`` (another node's leg and what it took along, or all an expired node's
    calls) to ``core``. No leg, room or conference record of it may be here already: each is
    on one node at a time. A queue or a bridge's default conference this node keeps under the
    same key stays this node's (they are kept per node: docs/ARCHITECTURE.md's limits)."""
    for mine, theirs in (
        (core.legs, stored.legs),
        (core.rooms, stored.rooms),
        (core.records, stored.records),
    ):
        if not mine.keys().isdisjoint(theirs):
            raise RuntimeError(f"already held here: {sorted(mine.keys() & theirs.keys())}")
    core.legs.update(stored.legs)
    core.rooms.update(stored.rooms)
    core.records.update(stored.records)
    for key, queue in stored.queues.items():
        core.queues.setdefault(key, queue)
    for bridge, room_id in stored.conferences.items():
        core.conferences.setdefault(bridge, room_id)


def lose(core: Core, leg_ids: Collection[str]) -> list[Leg]:
    """Legs another node took over while this node was cut off (fenced): out of ``core`` with
    their rooms, queues, bridge conferences and conference records, as that node took them.
    Returns the legs, for the runtime to stop their timers and media."""
    gone, rooms = with_their_rooms(leg_ids, core.rooms.values())
    gone &= core.legs.keys()
    for record in list(core.records.values()):
        if record.creator in gone or record.room_id in rooms:
            del core.records[record.conference_id]
    for key, queue in list(core.queues.items()):
        if not gone.isdisjoint(queue.members):
            del core.queues[key]
    for bridge, room_id in list(core.conferences.items()):
        if room_id in rooms:
            del core.conferences[bridge]
    for room_id in rooms:
        del core.rooms[room_id]
    return [core.legs.pop(leg_id) for leg_id in sorted(gone)]


def with_their_rooms(leg_ids: Collection[str], rooms: Iterable[Room]) -> tuple[set[str], set[str]]:
    """``leg_ids`` and every leg that shares a room with one of them (a room's legs go
    together, to one node), and those rooms' ids."""
    legs, taken, rooms = set(leg_ids), set[str](), list(rooms)
    grew = True
    while grew:
        grew = False
        for room in rooms:
            if room.room_id not in taken and not legs.isdisjoint(in_room(room)):
                taken.add(room.room_id)
                legs.update(in_room(room))
                grew = True
    return legs, taken


def in_room(room: Room) -> tuple[str, ...]:
    """Every leg a room mixes or waits for: members, supervisors and a ringing pending leg."""
    pending = (room.pending,) if room.pending is not None else ()
    return (*room.members, *room.supervisors, *pending)


def _in_conference(core: Core, leg: Leg) -> bool:
    room = core.rooms.get(leg.room_id) if leg.room_id is not None else None
    return room is not None and (
        room.kind is not RoomKind.BRIDGE or room.room_id in core.conferences.values()
    )


def _shares_room(core: Core, leg: Leg) -> bool:
    room = core.rooms.get(leg.room_id) if leg.room_id is not None else None
    if room is None:
        return False
    alone = room.members == (leg.call_control_id,) and not room.supervisors
    return not alone or room.pending is not None


def _supervising(leg: Leg) -> bool:
    return (
        leg.supervise is not None
        or leg.supervisor_role is not SupervisorRole.NONE
        or bool(leg.whisper_to)
    )


def _live_conference(core: Core, leg: Leg) -> bool:
    return any(
        r.creator == leg.call_control_id and r.ended_at is None for r in core.records.values()
    )
