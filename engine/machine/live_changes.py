"""What one input changed in the machine's live state: the rows the store must write with it.

The machine's state is dicts of frozen dataclasses that are replaced, never mutated
(``engine.machine.core.Checkpoint``), so what an input changed is found by identity: a value
that is not the very object it was before the input is new or changed. Timers are the one part
of the live state the machine keeps without deadlines (``Leg.timers`` names them); the deadline
of each comes from the ``StartTimer`` effect that armed it, and a timer gone from its leg's set
(fired, cancelled, or its leg forgotten) is deleted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from engine.machine.core import Checkpoint
from engine.machine.effects import Effect, StartTimer
from engine.machine.model import Conference, Leg, Queue, Room, TimerKey

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class LiveChanges:
    """Rows to write (upsert) and keys to delete, per kind of live state."""

    legs: tuple[Leg, ...] = ()
    legs_gone: tuple[str, ...] = ()
    rooms: tuple[Room, ...] = ()
    rooms_gone: tuple[str, ...] = ()
    queues: tuple[Queue, ...] = ()
    queues_gone: tuple[tuple[int, str], ...] = ()
    conferences: tuple[tuple[tuple[int, int], str], ...] = ()
    conferences_gone: tuple[tuple[int, int], ...] = ()
    timers: tuple[tuple[TimerKey, float], ...] = ()  # (key, deadline in epoch seconds)
    timers_gone: tuple[TimerKey, ...] = ()
    records: tuple[Conference, ...] = ()
    records_gone: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not any(getattr(self, name) for name in self.__slots__)


def changes_between(
    before: Checkpoint, after: Checkpoint, effects: Iterable[Effect], now: float
) -> LiveChanges:
    legs, legs_gone = _diff(before.legs, after.legs)
    rooms, rooms_gone = _diff(before.rooms, after.rooms)
    queues, queues_gone = _diff(before.queues, after.queues)
    conferences, conferences_gone = _diff(before.conferences, after.conferences)
    records, records_gone = _diff(before.records, after.records)
    armed = _armed(after.legs, effects, now)
    return LiveChanges(
        legs=tuple(leg for _, leg in legs),
        legs_gone=legs_gone,
        rooms=tuple(room for _, room in rooms),
        rooms_gone=rooms_gone,
        queues=tuple(queue for _, queue in queues),
        queues_gone=queues_gone,
        conferences=conferences,
        conferences_gone=conferences_gone,
        timers=tuple(armed.items()),
        timers_gone=_timers_gone(before.legs, after.legs, armed),
        records=tuple(record for _, record in records),
        records_gone=records_gone,
    )


def _diff(
    before: Mapping[K, V], after: Mapping[K, V]
) -> tuple[tuple[tuple[K, V], ...], tuple[K, ...]]:
    changed = tuple((key, value) for key, value in after.items() if before.get(key) is not value)
    gone = tuple(key for key in before if key not in after)
    return changed, gone


def _armed(
    after: Mapping[str, Leg], effects: Iterable[Effect], now: float
) -> dict[TimerKey, float]:
    """The timers started by the input and still armed after it, with their deadlines: one
    started and cancelled again within the input (the MEDIA_WAIT of a leg whose stream's start
    answers it) is not stored, or a restart would arm it anew."""
    armed: dict[TimerKey, float] = {}
    for effect in effects:
        if isinstance(effect, StartTimer):
            leg = after.get(effect.key.call_control_id)
            if leg is not None and effect.key in leg.timers:
                armed[effect.key] = now + effect.delay_s
    return armed


def _timers_gone(
    before: Mapping[str, Leg], after: Mapping[str, Leg], armed: Mapping[TimerKey, float]
) -> tuple[TimerKey, ...]:
    gone: list[TimerKey] = []
    for leg_id, old in before.items():
        new = after.get(leg_id)
        if new is old:
            continue
        kept = new.timers if new is not None else frozenset()
        gone.extend(key for key in old.timers if key not in kept and key not in armed)
    return tuple(gone)
