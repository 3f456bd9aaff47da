"""New identifiers: random, so ids never repeat across restarts or nodes."""

from __future__ import annotations

import uuid

from engine.machine.model import NewLegIds

__all__ = ["new_leg_ids", "new_room_key"]


def new_room_key() -> str:
    """The unique part of a room id."""
    return uuid.uuid4().hex


def new_leg_ids() -> NewLegIds:
    """A new leg's ids, shaped as Telnyx's (``v3:`` call control ids, UUIDs for the rest)."""
    return NewLegIds(
        call_control_id="v3:" + uuid.uuid4().hex,
        call_leg_id=str(uuid.uuid4()),
        call_session_id=str(uuid.uuid4()),
    )
