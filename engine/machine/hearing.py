"""Who may hear a leg: the one owner of that decision, in the machine.

A leg's audience is derived from its state alone, so it cannot drift from it:

- a conference participant that is ``muted`` or ``on_hold`` is heard by nobody, whatever its
  role (a muted barge supervisor is heard by nobody; unmuted, it is heard by all again); one on
  hold is also deaf: it hears only its hold audio (an overlay, which deafness does not touch);
- ``monitor`` is heard by nobody ("nobody can hear supervisor call, but supervisor can hear
  everything on the call": the SDK's ``call_dial_params.supervisor_role``);
- ``whisper`` is heard only by the legs in ``Leg.whisper_to`` (dial: the supervised leg, "only
  supervised_call_control_id hears supervisor"; conferences: ``whisper_call_control_ids``,
  none of them meaning "as a monitoring participant only": the SDK's ``action_update_params``);
- ``barge`` and ``none`` are heard by all.

Every role hears everyone in its room: no role deafens; only hold does. ``Core.put`` turns a
change of the audience or deafness into the ``SetAudience`` effect while the leg is in the mixer;
the media plane hands it to the mixer's hear-matrix (``Mixer.hear_only``, ``Mixer.deafen``).
DTMF muting is the one other writer of that matrix (``engine.media_plane.dtmf_mute``: listeners
that must not hear a digit, per tick); the matrix keeps the two apart and a listener hears a
speaker only where both allow it.
"""

from __future__ import annotations

from engine.machine.model import Leg, SupervisorRole

#: The only listeners that hear a leg; None: everyone in its room.
Audience = frozenset[str] | None


def audience(leg: Leg) -> Audience:
    """Who may hear ``leg`` in its room."""
    if leg.muted or leg.on_hold or leg.supervisor_role is SupervisorRole.MONITOR:
        return frozenset()
    if leg.supervisor_role is SupervisorRole.WHISPER:
        return frozenset(leg.whisper_to)
    return None


def deaf(leg: Leg) -> bool:
    """Whether ``leg`` hears nobody in its room: a participant on hold."""
    return leg.on_hold
