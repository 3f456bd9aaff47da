"""Every leg-state transition of callbridge, in one table.

This module owns legality. ``TRANSITIONS`` maps (state, trigger) to the next state; the machine
consults it before it touches anything, so a pair missing from the table is a refused command
(``InvalidState``) or an ignored provider event (events are facts that can arrive late or twice).
The README's state diagram is rendered from this table by ``engine.machine.diagram``.

A trigger names what happens to the leg: a command on it, a provider event about it, a timer, or
a reaction to another leg (its peer answered, or left the bridge). Source ``None`` is creation.
Pairs that keep the state (self-loops) are listed too: they say which states accept a command.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

from engine.errors import InvalidState
from engine.machine.model import INVALID_STATE_CODE, CallEnded, LegState


class Trigger(enum.Enum):
    # Creation.
    LEG_INITIATED = "leg initiated"
    DIAL = "dial"
    # Commands on the leg itself.
    ANSWER = "answer"
    REJECT = "reject"
    HANGUP = "hangup"
    BRIDGE = "bridge"  # this leg is A; its peer is up
    BRIDGE_TO_RINGING = "bridge to ringing peer"  # this leg is A; its peer still rings
    BRIDGE_TARGET = "bridged by peer"  # this leg is B of another leg's bridge
    UNBRIDGE = "unbridge"
    ENQUEUE = "enqueue"
    LEAVE_QUEUE = "leave_queue"
    JOIN_CONFERENCE = "join conference"
    MEDIA_COMMAND = "record/playback/send_dtmf"
    CLIENT_STATE_UPDATE = "client_state_update"
    # Provider events and timers.
    LEG_ANSWERED = "leg answered"
    LEG_HUNG_UP = "leg hung up"
    PROVIDER_FAILED = "provider failed"
    RING_TIMEOUT = "timeout_secs"
    TIME_LIMIT = "time_limit_secs"
    QUEUE_TIMEOUT = "max_wait_time_secs"
    SETUP_TIMEOUT = "setup timeout"  # incoming, not answered in time (leg_setup.py)
    # Reactions to another leg.
    PEER_ANSWERED = "peer answered"
    PARK_AFTER_UNBRIDGE = "peer left (park)"
    HOLD_AFTER_UNBRIDGE = "peer left (hold)"
    HANGUP_AFTER_UNBRIDGE = "peer left (hang up)"


S = LegState
T = Trigger

TRANSITIONS: Final[Mapping[tuple[LegState | None, Trigger], LegState]] = {
    # Creation.
    (None, T.LEG_INITIATED): S.INITIATED,
    (None, T.DIAL): S.DIALING,
    # Incoming, ringing at callbridge. A provider may report the answer unasked (some answer as
    # soon as their incoming-call webhook returns): accepted.
    (S.INITIATED, T.ANSWER): S.ANSWERING,
    (S.INITIATED, T.REJECT): S.HANGUP,
    (S.INITIATED, T.LEG_ANSWERED): S.ANSWERED,
    (S.INITIATED, T.HANGUP): S.HANGUP,
    (S.INITIATED, T.LEG_HUNG_UP): S.HANGUP,
    (S.INITIATED, T.PROVIDER_FAILED): S.HANGUP,
    (S.INITIATED, T.SETUP_TIMEOUT): S.HANGUP,
    (S.INITIATED, T.CLIENT_STATE_UPDATE): S.INITIATED,
    # Answer sent, not yet confirmed. A bridge may already name it: it joins on answer.
    (S.ANSWERING, T.LEG_ANSWERED): S.ANSWERED,
    (S.ANSWERING, T.BRIDGE_TARGET): S.ANSWERING,
    (S.ANSWERING, T.HANGUP): S.HANGUP,
    (S.ANSWERING, T.LEG_HUNG_UP): S.HANGUP,
    (S.ANSWERING, T.PROVIDER_FAILED): S.HANGUP,
    (S.ANSWERING, T.SETUP_TIMEOUT): S.HANGUP,
    (S.ANSWERING, T.CLIENT_STATE_UPDATE): S.ANSWERING,
    # Outgoing, ringing at the far end.
    (S.DIALING, T.LEG_ANSWERED): S.ANSWERED,
    (S.DIALING, T.BRIDGE_TARGET): S.DIALING,
    (S.DIALING, T.RING_TIMEOUT): S.HANGUP,
    (S.DIALING, T.HANGUP): S.HANGUP,
    (S.DIALING, T.LEG_HUNG_UP): S.HANGUP,
    (S.DIALING, T.PROVIDER_FAILED): S.HANGUP,
    (S.DIALING, T.CLIENT_STATE_UPDATE): S.DIALING,
    # Up since its answer, in no room.
    (S.ANSWERED, T.BRIDGE): S.BRIDGED,
    (S.ANSWERED, T.BRIDGE_TO_RINGING): S.BRIDGING,
    (S.ANSWERED, T.BRIDGE_TARGET): S.BRIDGED,
    (S.ANSWERED, T.JOIN_CONFERENCE): S.BRIDGED,
    (S.ANSWERED, T.ENQUEUE): S.QUEUED,
    (S.ANSWERED, T.MEDIA_COMMAND): S.ANSWERED,
    (S.ANSWERED, T.CLIENT_STATE_UPDATE): S.ANSWERED,
    (S.ANSWERED, T.HANGUP): S.HANGUP,
    (S.ANSWERED, T.LEG_HUNG_UP): S.HANGUP,
    (S.ANSWERED, T.PROVIDER_FAILED): S.HANGUP,
    (S.ANSWERED, T.TIME_LIMIT): S.HANGUP,
    # In a room, waiting for its ringing peer (ringback plays if asked).
    (S.BRIDGING, T.PEER_ANSWERED): S.BRIDGED,
    (S.BRIDGING, T.BRIDGE): S.BRIDGED,
    (S.BRIDGING, T.BRIDGE_TO_RINGING): S.BRIDGING,
    (S.BRIDGING, T.BRIDGE_TARGET): S.BRIDGED,
    (S.BRIDGING, T.JOIN_CONFERENCE): S.BRIDGED,
    (S.BRIDGING, T.UNBRIDGE): S.PARKED,
    (S.BRIDGING, T.PARK_AFTER_UNBRIDGE): S.PARKED,
    (S.BRIDGING, T.HOLD_AFTER_UNBRIDGE): S.HELD,
    (S.BRIDGING, T.HANGUP_AFTER_UNBRIDGE): S.HANGUP,
    (S.BRIDGING, T.ENQUEUE): S.QUEUED,
    (S.BRIDGING, T.MEDIA_COMMAND): S.BRIDGING,
    (S.BRIDGING, T.CLIENT_STATE_UPDATE): S.BRIDGING,
    (S.BRIDGING, T.HANGUP): S.HANGUP,
    (S.BRIDGING, T.LEG_HUNG_UP): S.HANGUP,
    (S.BRIDGING, T.PROVIDER_FAILED): S.HANGUP,
    (S.BRIDGING, T.TIME_LIMIT): S.HANGUP,
    # In a room with others. Bridging it again moves it.
    (S.BRIDGED, T.BRIDGE): S.BRIDGED,
    (S.BRIDGED, T.BRIDGE_TO_RINGING): S.BRIDGING,
    (S.BRIDGED, T.BRIDGE_TARGET): S.BRIDGED,
    (S.BRIDGED, T.JOIN_CONFERENCE): S.BRIDGED,
    (S.BRIDGED, T.UNBRIDGE): S.PARKED,
    (S.BRIDGED, T.PARK_AFTER_UNBRIDGE): S.PARKED,
    (S.BRIDGED, T.HOLD_AFTER_UNBRIDGE): S.HELD,
    (S.BRIDGED, T.HANGUP_AFTER_UNBRIDGE): S.HANGUP,
    (S.BRIDGED, T.ENQUEUE): S.QUEUED,
    (S.BRIDGED, T.MEDIA_COMMAND): S.BRIDGED,
    (S.BRIDGED, T.CLIENT_STATE_UPDATE): S.BRIDGED,
    (S.BRIDGED, T.HANGUP): S.HANGUP,
    (S.BRIDGED, T.LEG_HUNG_UP): S.HANGUP,
    (S.BRIDGED, T.PROVIDER_FAILED): S.HANGUP,
    (S.BRIDGED, T.TIME_LIMIT): S.HANGUP,
    # Up, in no room, after an unbridge.
    (S.PARKED, T.BRIDGE): S.BRIDGED,
    (S.PARKED, T.BRIDGE_TO_RINGING): S.BRIDGING,
    (S.PARKED, T.BRIDGE_TARGET): S.BRIDGED,
    (S.PARKED, T.JOIN_CONFERENCE): S.BRIDGED,
    (S.PARKED, T.ENQUEUE): S.QUEUED,
    (S.PARKED, T.MEDIA_COMMAND): S.PARKED,
    (S.PARKED, T.CLIENT_STATE_UPDATE): S.PARKED,
    (S.PARKED, T.HANGUP): S.HANGUP,
    (S.PARKED, T.LEG_HUNG_UP): S.HANGUP,
    (S.PARKED, T.PROVIDER_FAILED): S.HANGUP,
    (S.PARKED, T.TIME_LIMIT): S.HANGUP,
    # On hold after an unbridge: like parked; a new bridge takes it off hold.
    (S.HELD, T.BRIDGE): S.BRIDGED,
    (S.HELD, T.BRIDGE_TO_RINGING): S.BRIDGING,
    (S.HELD, T.BRIDGE_TARGET): S.BRIDGED,
    (S.HELD, T.JOIN_CONFERENCE): S.BRIDGED,
    (S.HELD, T.ENQUEUE): S.QUEUED,
    (S.HELD, T.MEDIA_COMMAND): S.HELD,
    (S.HELD, T.CLIENT_STATE_UPDATE): S.HELD,
    (S.HELD, T.HANGUP): S.HANGUP,
    (S.HELD, T.LEG_HUNG_UP): S.HANGUP,
    (S.HELD, T.PROVIDER_FAILED): S.HANGUP,
    (S.HELD, T.TIME_LIMIT): S.HANGUP,
    # Waiting in a queue. Any bridge takes it out (call.dequeued, reason "bridged").
    (S.QUEUED, T.LEAVE_QUEUE): S.PARKED,
    (S.QUEUED, T.QUEUE_TIMEOUT): S.PARKED,
    (S.QUEUED, T.BRIDGE): S.BRIDGED,
    (S.QUEUED, T.BRIDGE_TO_RINGING): S.BRIDGING,
    (S.QUEUED, T.BRIDGE_TARGET): S.BRIDGED,
    (S.QUEUED, T.JOIN_CONFERENCE): S.BRIDGED,
    (S.QUEUED, T.MEDIA_COMMAND): S.QUEUED,
    (S.QUEUED, T.CLIENT_STATE_UPDATE): S.QUEUED,
    (S.QUEUED, T.HANGUP): S.HANGUP,
    (S.QUEUED, T.LEG_HUNG_UP): S.HANGUP,
    (S.QUEUED, T.PROVIDER_FAILED): S.HANGUP,
    (S.QUEUED, T.TIME_LIMIT): S.HANGUP,
}


def next_state(state: LegState, trigger: Trigger) -> LegState | None:
    """The state `trigger` leads to from `state`, or None when the table does not allow it."""
    return TRANSITIONS.get((state, trigger))


def require(state: LegState, trigger: Trigger, *, field: str | None = None) -> LegState:
    """The next state for a command, or the typed refusal.

    An ended leg refuses everything with Call Control's 90018; any other missing pair is an
    ``InvalidState`` that names the state and the command. `field` names the body field whose
    leg is refused (``call_control_id`` for the peer of a bridge).
    """
    if state is LegState.HANGUP:
        raise CallEnded("Call has already ended", field=field)
    target = TRANSITIONS.get((state, trigger))
    if target is None:
        who = "the leg to bridge with" if field else "the leg"
        raise InvalidState(
            f"'{trigger.value}' is not allowed while {who} is {state.value}",
            field=field,
            code=INVALID_STATE_CODE,
        )
    return target
