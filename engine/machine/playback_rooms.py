"""Playbacks follow their leg when its room changes (issue 14, point 4).

A playback with ``target_legs`` ``opposite`` or ``both`` plays to the leg's room as it is *now*:
when members leave or join (an unbridge, a bridge, a conference join or leave, a hangup), those
who left stop hearing it and those who came hear it until it ends (from the start of its audio:
each listener's copy plays on its own, and the first to finish ends the playback for all). A
``self`` playback is the leg's own overlay and goes wherever the leg goes with nothing done here.
An ``opposite`` playback left with nobody to play to ends as a queued one whose target is gone
does (``call.playback.ended``, ``failed``), so the leg's queue moves on instead of waiting for a
playback nobody hears.

The machine runs this once per input, after its handler (``Core.finish``), over the rooms whose
members changed: the legs that moved and the members of those rooms now are the only ones
whose audience can have changed.
"""

from __future__ import annotations

from dataclasses import replace

from engine.machine import effects as fx
from engine.machine.core import Core
from engine.machine.media import end_playback, next_playback
from engine.machine.model import ActivePlayback, Leg, TargetLegs

__all__ = ["follow"]

GONE_DETAIL = "target_legs names no leg: the leg's room changed"


def follow(core: Core) -> None:
    """Re-aim the room-targeted playbacks of every leg a membership change can have touched."""
    touched = set(core.moved_legs)
    for room_id in core.moved_rooms:
        room = core.rooms.get(room_id)
        if room is not None:
            touched.update(room.members)
    for call_control_id in sorted(touched):
        leg = core.live(call_control_id)
        if leg is not None and leg.playbacks:
            _reaim(core, leg)


def _room_targeted(leg: Leg) -> list[ActivePlayback]:
    return [p for p in leg.playbacks if p.target_legs is not TargetLegs.SELF and p.source]


def _reaim(core: Core, leg: Leg) -> None:
    for playback in _room_targeted(leg):
        now = core.listeners(leg, playback.target_legs)
        if now == playback.listeners:
            continue
        if not now:
            leg = end_playback(core, leg, playback, "failed", status_detail=GONE_DETAIL)
            leg = next_playback(core, leg)
            continue
        assert playback.source is not None  # _room_targeted
        for gone in set(playback.listeners) - set(now):
            core.emit(fx.ClearOverlay(gone, playback.playback_id))
        for new in [m for m in now if m not in playback.listeners]:
            core.emit(fx.SetOverlay(new, playback.playback_id, playback.source, playback.loop))
        moved = replace(playback, listeners=now)
        leg = core.update(
            leg,
            playbacks=tuple(moved if p is playback else p for p in leg.playbacks),
        )
