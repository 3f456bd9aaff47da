"""Supervision: a leg dialled to supervise another joins its room in a role; the role changes live.

Words: the *supervisor* is the leg dialled with ``supervise_call_control_id``; the *supervised*
leg is the one it names. Rules:

- The dial is refused (422 naming ``supervise_call_control_id``) unless the supervised leg is a
  live leg of the organization in a room (a bridge or a conference): Telnyx's supervision is of
  "a bridged call" (its switch_supervisor_role reference), and a leg in no room has no call to
  hear.
- When the supervisor answers, it joins the supervised leg's room as one of the room's
  ``supervisors``: mixed with the room, not a member of it, so a bridge stays a two-party
  bridge (a supervisor's hangup dissolves nothing) and a conference lists no extra participant.
  Telnyx documents no webhook for this beyond the dial's own (``call.initiated``,
  ``call.answered``): none is sent. Should the supervised leg have ended or be in no room by
  then, the supervisor stays answered, supervising nothing (as a failed ``bridge_on_answer``).
- Who hears the supervisor follows its role (``engine.machine.hearing``); ``whisper`` reaches
  the supervised leg only. ``switch_supervisor_role`` changes the role from the next tick.
- When the room dissolves (a bridge's party leaves) or ends (a conference's last participant
  leaves), the supervisor is left behind like a bridge's peer: its own unbridge policy, by
  default hung up. Leaving a room ends a leg's supervision and any conference role.
"""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType
from typing import TypedDict

from engine.errors import InvalidState, NotFound
from engine.machine.core import Core
from engine.machine.model import (
    INVALID_STATE_CODE,
    CallEnded,
    Leg,
    SupervisorRole,
)
from engine.machine.supervision_commands import Supervision
from engine.machine.transitions import Trigger, next_state

FIELD = "supervise_call_control_id"


def check_dial(core: Core, org_id: int, supervision: Supervision) -> None:
    """Refuse a dial whose supervised leg is unknown, ended or in no room."""
    target = core.legs.get(supervision.call_control_id)
    if target is None or target.org_id != org_id:
        raise NotFound(f"no call with call_control_id '{supervision.call_control_id}'", field=FIELD)
    if not target.is_alive:
        raise CallEnded("Call has already ended", field=FIELD)
    if target.room_id is None:
        raise InvalidState(
            "the call to supervise is in no bridge or conference: there is nothing to hear",
            field=FIELD,
            code=INVALID_STATE_CODE,
        )


class DialFields(TypedDict, total=False):
    supervise: str
    supervisor_role: SupervisorRole
    whisper_to: tuple[str, ...]


def dial_fields(supervision: Supervision | None) -> DialFields:
    """The new leg's supervision fields (whisper reaches the supervised leg only)."""
    if supervision is None:
        return {}
    target = supervision.call_control_id
    return {"supervise": target, "supervisor_role": supervision.role, "whisper_to": (target,)}


def join_on_answer(core: Core, leg: Leg) -> None:
    """The supervisor answered: into the supervised leg's room, in its role."""
    target = core.live(leg.supervise or "")
    room = core.rooms.get(target.room_id) if target and target.room_id else None
    if room is None or next_state(leg.state, Trigger.BRIDGE) is None:
        core.update(leg, **NOT_SUPERVISING)
        return
    core.rooms[room.room_id] = replace(room, supervisors=(*room.supervisors, leg.call_control_id))
    core.move(leg, Trigger.BRIDGE, room_id=room.room_id)


def check_switch(leg: Leg) -> None:
    if leg.supervise is None:
        raise InvalidState(
            "the call is not a supervisor (dialled with supervise_call_control_id)",
            code=INVALID_STATE_CODE,
        )


def set_role(core: Core, leg: Leg, role: SupervisorRole, whisper_to: tuple[str, ...]) -> Leg:
    return core.update(leg, supervisor_role=role, whisper_to=whisper_to)


#: A leg out of its room supervises nothing and has no conference role.
NOT_SUPERVISING = MappingProxyType(
    {"supervise": None, "supervisor_role": SupervisorRole.NONE, "whisper_to": ()}
)
