"""What the live state of calls is stored as (``Store.save_live``/``load_live`` and the
recordings in progress): split from engine/store/base.py, which declares the store."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from engine.machine.core import Checkpoint
from engine.machine.handover import in_room, with_their_rooms
from engine.machine.model import Conference, Leg, Queue, RecordingOptions, Room, TimerKey

__all__ = ["LiveRecording", "LiveSnapshot"]


@dataclass(frozen=True, slots=True)
class LiveSnapshot:
    """Everything stored about live calls, as the machine and its timers need it back."""

    legs: tuple[Leg, ...] = ()
    rooms: tuple[Room, ...] = ()
    queues: tuple[Queue, ...] = ()
    conferences: tuple[tuple[tuple[int, int], str], ...] = ()
    timers: tuple[tuple[TimerKey, float], ...] = ()  # (key, deadline in epoch seconds)
    records: tuple[Conference, ...] = ()  # the Conferences API's, live and ended

    def checkpoint(self) -> Checkpoint:
        """The machine's state as it was stored, for ``CallMachine.adopt``."""
        return Checkpoint(
            {leg.call_control_id: leg for leg in self.legs},
            {room.room_id: room for room in self.rooms},
            {(queue.org_id, queue.name): queue for queue in self.queues},
            dict(self.conferences),
            {record.conference_id: record for record in self.records},
        )

    def without(self, legs: Collection[str]) -> tuple[LiveSnapshot, frozenset[str]]:
        """This snapshot less ``legs`` (another live node's) and what goes with them: the rooms
        and queues they are in, those rooms' conferences, the conference records they created,
        and the timers of all these; with the ids of all that was left out (legs, rooms,
        conferences). A room lives on one node (docs/ARCHITECTURE.md), so what is kept is
        whole."""
        if not legs:
            return self, frozenset()
        # A room's legs go together (one not yet counted as the owner's, too).
        out, rooms_out = with_their_rooms(legs, self.rooms)
        records_out = {
            record.conference_id
            for record in self.records
            if record.room_id in rooms_out or record.creator in out
        }
        left = frozenset(out | rooms_out | records_out)
        kept = LiveSnapshot(
            legs=tuple(leg for leg in self.legs if leg.call_control_id not in out),
            rooms=tuple(room for room in self.rooms if room.room_id not in rooms_out),
            queues=tuple(queue for queue in self.queues if out.isdisjoint(queue.members)),
            conferences=tuple(item for item in self.conferences if item[1] not in rooms_out),
            timers=tuple(timer for timer in self.timers if timer[0].call_control_id not in left),
            records=tuple(record for record in self.records if record.conference_id not in left),
        )
        return kept, left

    def only(self, legs: Collection[str]) -> LiveSnapshot:
        """The calls of ``legs`` (a node's that expired, taken over) and what goes with them:
        the rooms they are in (a room's legs are all on one node), those rooms' conferences,
        the queues they wait in, the conference records they created or whose room goes, and
        the timers of all these."""
        wanted = set(legs)
        rooms = tuple(room for room in self.rooms if not wanted.isdisjoint(in_room(room)))
        room_ids = {room.room_id for room in rooms}
        records = tuple(r for r in self.records if r.creator in wanted or r.room_id in room_ids)
        ids = wanted | room_ids | {record.conference_id for record in records}
        return LiveSnapshot(
            legs=tuple(leg for leg in self.legs if leg.call_control_id in wanted),
            rooms=rooms,
            queues=tuple(queue for queue in self.queues if not wanted.isdisjoint(queue.members)),
            conferences=tuple(item for item in self.conferences if item[1] in room_ids),
            timers=tuple(timer for timer in self.timers if timer[0].call_control_id in ids),
            records=records,
        )

    def of_leg(self, leg_id: str) -> LiveSnapshot:
        """One leg another node let go (engine/machine/handover.py) and what it took along:
        the room it was alone in, the conferences it created, and their timers. Empty if the
        leg is not stored."""
        legs = tuple(leg for leg in self.legs if leg.call_control_id == leg_id)
        rooms = tuple(room for room in self.rooms if legs and room.room_id == legs[0].room_id)
        records = tuple(record for record in self.records if legs and record.creator == leg_id)
        ids = {leg_id, *(room.room_id for room in rooms), *(r.conference_id for r in records)}
        timers = tuple(timer for timer in self.timers if timer[0].call_control_id in ids)
        return LiveSnapshot(legs=legs, rooms=rooms, timers=timers, records=records)

    def mentions(self, owner_id: str) -> bool:
        """Whether ``owner_id`` (a leg's or a conference's id) is in this snapshot."""
        return any(leg.call_control_id == owner_id for leg in self.legs) or any(
            record.conference_id == owner_id for record in self.records
        )


@dataclass(frozen=True, slots=True)
class LiveRecording:
    """A recording in progress, as a new process needs it to continue the same file: kept
    while it runs, forgotten when it is taken to be saved or fails."""

    recording_id: str  # the machine's (``Leg.recording_id``)
    call_control_id: str
    org_id: int
    path: str  # relative to the recordings directory, e.g. "org-1/take.wav"
    options: RecordingOptions  # format, channels, track, max length, trim
    started_at: float  # epoch seconds: call.recording.saved's recording_started_at
