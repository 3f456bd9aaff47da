"""Supervision's commands parsed from Call Control v2 bodies (422 naming the field otherwise).

The SDK's names (``.venv/.../telnyx``): dial's ``supervise_call_control_id`` and
``supervisor_role`` (``barge``, ``whisper``, ``monitor``: ``types/call_dial_params.py``),
``switch_supervisor_role``'s ``role`` (the same three, required:
``types/calls/action_switch_supervisor_role_params.py``), and the conference ``update`` action
(``call_control_id``, ``supervisor_role`` ``barge``/``monitor``/``none``/``whisper``, both
required, ``whisper_call_control_ids``: ``types/conferences/action_update_params.py``), whose
``region`` callbridge refuses (it has one). Telnyx documents no default for dial's
``supervisor_role``, so callbridge requires it with ``supervise_call_control_id`` rather than
guess one; ``whisper_call_control_ids`` is taken only with the ``whisper`` role, where it means
something.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.machine.command_body import Body, CommandBase, ParameterError
from engine.machine.model import SupervisorRole

CALL_ROLES = ("barge", "whisper", "monitor")
CONFERENCE_ROLES = ("barge", "monitor", "none", "whisper")


@dataclass(frozen=True, slots=True, kw_only=True)
class SwitchSupervisorRole(CommandBase):
    role: SupervisorRole


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateSupervisor(CommandBase):
    """The conference ``update`` action: a participant's role and who it whispers to."""

    call_control_id: str
    role: SupervisorRole
    whisper_to: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Supervision:
    """Dial's supervision: the leg to supervise and the role the new leg takes on answer."""

    call_control_id: str
    role: SupervisorRole


def parse_dial_supervision(b: Body) -> Supervision | None:
    target = b.string("supervise_call_control_id")
    if target is None:
        if b.has("supervisor_role"):
            raise ParameterError(
                "'supervisor_role' needs 'supervise_call_control_id'",
                field="supervise_call_control_id",
            )
        return None
    if not b.has("supervisor_role"):
        raise ParameterError(
            "'supervisor_role' is required with 'supervise_call_control_id'",
            field="supervisor_role",
        )
    return Supervision(target, SupervisorRole(b.choice("supervisor_role", CALL_ROLES, "")))


def parse_switch(b: Body) -> SwitchSupervisorRole:
    b.only(("role",))
    for name in ("client_state", "command_id"):  # the SDK's params have only role
        if b.has(name):
            raise ParameterError(f"'{name}' is not supported by this command", field=name)
    if not b.has("role"):
        raise ParameterError("'role' is required", field="role")
    return SwitchSupervisorRole(role=SupervisorRole(b.choice("role", CALL_ROLES, "")))


def conference_role(b: Body, *, required: bool) -> tuple[SupervisorRole, tuple[str, ...]]:
    """``supervisor_role`` and ``whisper_call_control_ids`` of a conference join or update."""
    if required and not b.has("supervisor_role"):
        raise ParameterError("'supervisor_role' is required", field="supervisor_role")
    role = SupervisorRole(b.choice("supervisor_role", CONFERENCE_ROLES, "none"))
    ids = b.raw("whisper_call_control_ids")
    if ids is None:
        return role, ()
    if role is not SupervisorRole.WHISPER:
        raise ParameterError(
            "'whisper_call_control_ids' is taken only with supervisor_role 'whisper'",
            field="whisper_call_control_ids",
        )
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        raise ParameterError(
            "'whisper_call_control_ids' must be an array of call_control_ids",
            field="whisper_call_control_ids",
        )
    return role, tuple(dict.fromkeys(ids))  # the SDK: "unique" ids; each once, in order


def parse_update(b: Body) -> UpdateSupervisor:
    b.only(("call_control_id", "supervisor_role", "whisper_call_control_ids"))
    if b.has("client_state"):
        raise ParameterError(
            "'client_state' is not supported by this command", field="client_state"
        )
    role, whisper_to = conference_role(b, required=True)
    return UpdateSupervisor(
        call_control_id=b.req_string("call_control_id"),
        role=role,
        whisper_to=whisper_to,
        **b.common(),
    )
