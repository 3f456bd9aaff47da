"""What the live state of calls is stored as (``Store.save_live``/``load_live`` and the
recordings in progress): split from engine/store/base.py, which declares the store."""

from __future__ import annotations

from dataclasses import dataclass

from engine.machine.core import Checkpoint
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
