"""What the console shows, as JSON-ready dicts: one organization's legs, rooms, bridges,
webhooks and audit entries. Pure reads of the runtime and of store records; nothing here
changes anything, and every function takes the organization so nothing of another leaks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from engine.machine.model import Leg, Room
from engine.store.audit_log import AuditRecord
from engine.store.base import BridgeRecord, OutboxRecord

if TYPE_CHECKING:
    from engine.runtime.runtime import CallRuntime

__all__ = ["audit_view", "bridges_view", "live_view", "webhooks_view"]


def live_view(runtime: CallRuntime, org_id: int, now: float) -> dict[str, Any]:
    """The organization's live legs (ended ones are left out) and its rooms."""
    snapshot = runtime.machine.snapshot()
    legs = [
        _leg(runtime, leg, now) for leg in snapshot.legs if leg.org_id == org_id and leg.is_alive
    ]
    rooms = [_room(runtime, room) for room in snapshot.rooms if room.org_id == org_id]
    legs.sort(key=lambda leg: (leg["started_at"], leg["call_control_id"]))
    rooms.sort(key=lambda room: room["room_id"])
    return {"legs": legs, "rooms": rooms}


def _leg(runtime: CallRuntime, leg: Leg, now: float) -> dict[str, Any]:
    return {
        "call_control_id": leg.call_control_id,
        "provider": runtime.lanes.provider_of(leg.call_control_id),
        "direction": leg.direction.value,
        "from": leg.from_,
        "to": leg.to,
        "state": leg.state.value,
        "started_at": leg.start_time,
        "duration_s": max(0, int(now - leg.start_time)),
        "room_id": leg.room_id,
        "queue": leg.queue_name,
        "recording": leg.recording_id is not None,
        "muted": leg.muted,  # a conference participant muted (the Conferences API's mute)
        "on_hold": leg.on_hold,  # a conference participant on hold (its hold action)
        "media": runtime.plane.stats.view(leg.call_control_id),
    }


def _room(runtime: CallRuntime, room: Room) -> dict[str, Any]:
    return {
        "room_id": room.room_id,
        "kind": room.kind.value,
        "members": list(room.members),
        "supervisors": list(room.supervisors),  # mixed in, not members (engine.machine.supervision)
        "pending": room.pending,
        "bridge_id": room.bridge_id,
        # The mixer's choice: a two-party room whose frames pass through untouched, or mixed.
        "forwarded": runtime.plane.mixer.is_passthrough(room.room_id),
    }


def bridges_view(bridges: list[BridgeRecord]) -> list[dict[str, Any]]:
    return [
        {
            "id": bridge.id,
            "slug": bridge.slug,
            "name": bridge.name,
            "status": bridge.status,
            "numbers": [
                {"number": n.number, "channels_count": n.channels_count, "active": n.active}
                for n in bridge.numbers
            ],
        }
        for bridge in bridges
    ]


def webhooks_view(records: list[OutboxRecord]) -> list[dict[str, Any]]:
    return [
        {
            "id": record.public_id,
            "event_type": record.event_type,
            "call_control_id": record.leg_id,
            "status": record.status,
            "attempts": record.attempt,
            "created": record.created,
            "finished_at": record.finished_at,
            "last_error": record.last_error,
        }
        for record in records
    ]


def audit_view(entries: list[AuditRecord]) -> list[dict[str, Any]]:
    return [
        {
            "id": entry.id,
            "token_id": entry.token_id,
            "action": entry.action,
            "call_control_id": entry.call_control_id,
            "body": orjson.loads(entry.body),
            "outcome": entry.outcome,
            "at": entry.at,
        }
        for entry in entries
    ]
