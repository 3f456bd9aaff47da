"""Application commands: check each against the leg, then carry it out.

``check`` raises the typed refusal (having changed nothing) or returns the change, a function of
the leg that cannot fail. The machine applies the command's ``client_state`` to the leg first,
so every webhook the change emits already carries it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

from engine.machine import app_streams, gather, legs, media, queues, supervision
from engine.machine import commands as cmd
from engine.machine import effects as fx
from engine.machine.core import Core
from engine.machine.model import Direction, HangupCause, Leg
from engine.machine.transitions import Trigger, require

# A checked command's change (its return value, if any, is not used).
Apply: TypeAlias = Callable[[Leg], object]


def check(core: Core, leg: Leg, command: cmd.Command) -> Apply:
    """Check `command` against `leg` and the rest of the machine; return its change."""
    match command:
        case cmd.Bridge():
            peer, trigger = legs.check_bridge(core, leg, command)
            return lambda a: legs.bridge(core, a, peer, trigger, command)
        case cmd.Unbridge():
            require(leg.state, Trigger.UNBRIDGE)
            return lambda a: legs.unbridge(core, a)
        case cmd.JoinConference():
            legs.check_join_conference(core, leg, command)
            return lambda a: legs.join_conference(core, a, command.room_id)
        case cmd.Enqueue():
            queues.check_enqueue(core, leg, command)
            return lambda a: _enqueue(core, a, command)
        case cmd.LeaveQueue():
            require(leg.state, Trigger.LEAVE_QUEUE)
            return lambda a: queues.leave_queue(core, a)
        case cmd.ClientStateUpdate():
            require(leg.state, Trigger.CLIENT_STATE_UPDATE)
            return lambda a: None  # the machine has set it already
        case cmd.SwitchSupervisorRole():
            supervision.check_switch(leg)
            return lambda a: supervision.set_role(core, a, command.role, a.whisper_to)
    return _check_call(core, leg, command) or _check_media(core, leg, command)


def _check_call(core: Core, leg: Leg, command: cmd.Command) -> Apply | None:
    match command:
        case cmd.Answer():
            require(leg.state, Trigger.ANSWER)
            return lambda a: _answer(core, a, command)
        case cmd.Reject():
            require(leg.state, Trigger.REJECT)
            return lambda a: _reject(core, a, command)
        case cmd.Hangup():
            require(leg.state, Trigger.HANGUP)
            return lambda a: _hangup(core, a)
    return None


def _check_media(core: Core, leg: Leg, command: cmd.Command) -> Apply:
    require(leg.state, Trigger.MEDIA_COMMAND)
    match command:
        case cmd.SendDtmf():
            return lambda a: media.send_dtmf(core, a, command)
        case cmd.PlaybackStart():
            media.check_playback_start(core, leg, command)
            return lambda a: _then_gather(core, media.playback_start(core, a, command))
        case cmd.PlaybackStop():
            return lambda a: _then_gather(core, media.playback_stop(core, a, command))
        case cmd.Gather():
            gather.check_start(leg)
            return lambda a: gather.start(core, a, command)
        case cmd.GatherUsingAudio():
            gather.check_start(leg)
            return lambda a: gather.start_using_audio(core, a, command)
        case cmd.GatherStop():
            gather.check_stop(leg)
            return lambda a: gather.stop(core, a)
        case cmd.RecordStart():
            media.check_record_start(leg, command)
            return lambda a: media.start_recording(core, a, command.options)
        case cmd.RecordStop():
            media.check_record_stop(leg, command)
            return lambda a: media.stop_recording(core, a)
        case cmd.StreamingStart():
            app_streams.check_start(leg)
            return lambda a: app_streams.start(core, a, command)
        case cmd.StreamingStop():
            app_streams.check_stop(leg, command)
            return lambda a: app_streams.stop(core, a, command)
        case cmd.RecordPause():
            media.check_record_stop(leg, command)
            return lambda a: media.pause_recording(core, a, command.paused)
    raise AssertionError(f"unhandled command {type(command).__name__}")


def _then_gather(core: Core, leg: Leg) -> Leg:
    """A playback command may have stopped or replaced a gather's prompt."""
    return gather.playback_changed(core, leg)


def _answer(core: Core, leg: Leg, command: cmd.Answer) -> None:
    core.emit(fx.AnswerCall(leg.call_control_id))
    core.move(leg, Trigger.ANSWER, webhook_url=command.webhook_url or leg.webhook_url)


def _reject(core: Core, leg: Leg, command: cmd.Reject) -> None:
    cause = command.cause
    legs.end_leg(
        core,
        leg,
        Trigger.REJECT,
        cause.hangup_cause,
        leg.our_side,
        sip_code=cause.sip_code,
        provider=fx.RejectCall(leg.call_control_id, cause),
    )


def _hangup(core: Core, leg: Leg) -> None:
    # Hanging up our own unanswered outgoing call cancels it.
    dialing = leg.direction is Direction.OUTGOING and leg.answered_at is None
    cause = HangupCause.ORIGINATOR_CANCEL if dialing else HangupCause.NORMAL_CLEARING
    hangup = fx.HangupCall(leg.call_control_id)
    legs.end_leg(core, leg, Trigger.HANGUP, cause, leg.our_side, provider=hangup)


def _enqueue(core: Core, leg: Leg, command: cmd.Enqueue) -> None:
    leg, orphans = legs.detach(core, leg, "bridged")
    queues.enqueue(core, leg, command)
    legs.left_behind(core, orphans)
