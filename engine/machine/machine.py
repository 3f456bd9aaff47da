"""The call-control state machine: events and commands in, effects out, no I/O.

``CallMachine`` owns every live leg, room, queue and conference of one engine. Three entries
change it:

- ``handle_event(event, now)``: a provider-side fact (``engine.machine.events``). Never refused: an
  event that does not fit (duplicate, late, reordered, unknown leg) yields no effects.
- ``handle_command(target, org_id, command, now)``: an application command on a leg (``target``
  its call_control_id, ``engine.machine.commands``) or on a conference (``target`` its id, or
  for create the creating leg's; ``engine.machine.conference_commands``). Refused with a typed
  error (``NotFound``, ``ValidationError``, ``InvalidState``/``CallEnded``) *before* anything
  changes; legality comes from the table in ``engine.machine.transitions``. A repeated
  ``command_id`` on the same target within 60 s returns no effects and no error.
- ``dial(ids, org_id, command, now)``: ``POST /v2/calls``; the caller picks the new leg's ids.

Each returns the effects (``engine.machine.effects``) to carry out, in order. Time is always passed
in; ids come from the caller or from counters. A leg of another organization is not found.

Each input applies wholly or not at all: an exception half-way (a bug, not a refusal) restores
the state from before the input, drops its effects, and propagates (``CallMachine._input``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from engine.errors import Conflict, NotFound
from engine.machine import actions as commands
from engine.machine import (
    app_streams,
    conference_media,
    conference_recording,
    conferences,
    gather,
    handover,
    legs,
    media,
    playback_rooms,
    queues,
    streams,
    supervision,
)
from engine.machine import commands as cmd
from engine.machine import effects as fx
from engine.machine import events as ev
from engine.machine import leg_setup as setup
from engine.machine.conference_commands import ConferenceCommand
from engine.machine.core import Checkpoint, Core, iso
from engine.machine.model import (
    CallEnded,
    CallStatus,
    Conference,
    Direction,
    HangupCause,
    HangupSource,
    Leg,
    NewLegIds,
    Queue,
    Room,
    TimerKind,
)
from engine.machine.transitions import TRANSITIONS, Trigger, next_state

COMMAND_ID_WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class DialResult:
    leg: Leg  # the new leg, or the first one when `duplicate`
    effects: list[fx.Effect]
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the machine knows, comparable: equal snapshots mean nothing changed."""

    legs: tuple[Leg, ...]
    rooms: tuple[Room, ...]
    queues: tuple[Queue, ...]
    conferences: tuple[tuple[tuple[int, int], str], ...]  # (org, bridge) -> default conference
    records: tuple[Conference, ...] = ()  # the Conferences API's, live and ended


class CallMachine:
    def __init__(
        self,
        *,
        media_wait_s: float = 5.0,
        new_room_key: Callable[[], str] | None = None,
        setup_timeout_s: float | None = setup.DEFAULT_SETUP_TIMEOUT_S,
    ) -> None:
        """``media_wait_s``: how long an answered leg may go without a media stream before a new
        one is asked for, and again before the leg is hung up (``machine_streams``); likewise
        ``setup_timeout_s`` an incoming leg unanswered (``machine_setup``; None: for ever).
        ``new_room_key``: where room ids get their unique part (random in production, so ids
        stay unique across restarts and nodes; counted when None)."""
        self._core = Core(
            media_wait_s=media_wait_s, new_key=new_room_key, settle=playback_rooms.follow
        )
        self._core.setup_timeout_s = setup_timeout_s
        self._command_ids: dict[str, dict[str, float]] = {}  # leg -> command_id -> when
        self._dial_ids: dict[tuple[int, str], tuple[str, float]] = {}  # (org, id) -> leg

    @property
    def media_wait_s(self) -> float:
        return self._core.media_wait_s

    @media_wait_s.setter
    def media_wait_s(self, seconds: float) -> None:
        """Applies to waits started from now on."""
        self._core.media_wait_s = seconds

    def leg(self, call_control_id: str, org_id: int | None = None) -> Leg:
        """The leg, live or ended; ``NotFound`` if unknown or of another organization."""
        leg = self._core.legs.get(call_control_id)
        if leg is None or (org_id is not None and leg.org_id != org_id):
            raise NotFound(f"no call with call_control_id '{call_control_id}'")
        return leg

    def is_alive(self, call_control_id: str) -> bool:
        """Whether the leg is known and not over."""
        return (leg := self._core.legs.get(call_control_id)) is not None and leg.is_alive

    def room(self, room_id: str) -> Room | None:
        return self._core.rooms.get(room_id)

    def legs_in_room(self, room_id: str) -> tuple[Leg, ...]:
        room = self._core.rooms.get(room_id)
        return tuple(self._core.legs[m] for m in room.members) if room else ()

    def conference(self, conference_id: str, org_id: int) -> Conference:
        """The organization's conference, live or ended; ``NotFound`` otherwise."""
        return conferences.find(self._core, org_id, conference_id)

    def keeps_conference(self, conference_id: str) -> bool:
        return conference_id in self._core.records

    def conferences_of(self, org_id: int) -> list[Conference]:
        """The organization's conferences, oldest first."""
        found = [r for r in self._core.records.values() if r.org_id == org_id]
        return sorted(found, key=lambda r: (r.created_at, r.conference_id))

    def participants(self, record: Conference) -> tuple[Leg, ...]:
        """A conference's participants now, in the order they joined."""
        return tuple(self._core.legs[i] for i in conferences.members(self._core, record))

    def queue(self, org_id: int, name: str) -> Queue | None:
        return self._core.queues.get((org_id, name))

    def status(self, call_control_id: str, org_id: int, now: float) -> CallStatus:
        """GET /v2/calls/{call_control_id}."""
        return CallStatus.of(self.leg(call_control_id, org_id), now)

    def snapshot(self) -> Snapshot:
        core = self._core
        return Snapshot(
            tuple(core.legs.values()),
            tuple(core.rooms.values()),
            tuple(core.queues.values()),
            tuple(sorted(core.conferences.items())),
            tuple(core.records.values()),
        )

    def prune(self, now: float, retention_s: float = 3600.0) -> list[str]:
        """Forget legs that ended more than `retention_s` ago (until then, commands on them
        get 90018 rather than 404). Returns their ids."""
        gone = [
            leg.call_control_id
            for leg in self._core.legs.values()
            if leg.ended_at is not None and now - leg.ended_at >= retention_s
        ]
        for call_control_id in gone:
            del self._core.legs[call_control_id]
            self._command_ids.pop(call_control_id, None)
        records = self._core.records
        for record in list(records.values()):
            if record.ended_at is not None and now - record.ended_at >= retention_s:
                del records[record.conference_id]
                self._command_ids.pop(record.conference_id, None)
        return gone

    def checkpoint(self) -> Checkpoint:
        """The state now, to find what an input changed (``engine.machine.live_changes``) and to go
        back to if the runtime cannot store it."""
        return self._core.checkpoint()

    def restore(self, saved: Checkpoint) -> None:
        """Back to ``saved``: an input the store refused is undone as if it never came."""
        self._core.restore(saved)

    def adopt(self, stored: Checkpoint) -> None:
        """Take over the live state an earlier process stored (engine/store/live.py), before
        any input (each live leg then gets ``LegAdopted``): into an empty machine only."""
        if self._core.legs or self._core.rooms or self._core.queues:
            raise RuntimeError("live state can only be adopted by an empty machine")
        self._core.restore(stored)

    # A leg moving between nodes (engine.machine.handover): not an input, nothing is stored.
    def why_it_stays(self, call_control_id: str) -> str | None:
        return handover.why_it_stays(self._core, self.leg(call_control_id))

    def let_go(self, call_control_id: str) -> handover.LetGo:
        leg = self.leg(call_control_id)
        if (why := handover.why_it_stays(self._core, leg)) is not None:
            raise RuntimeError(f"call '{call_control_id}' cannot move: {why}")
        self._command_ids.pop(call_control_id, None)
        return handover.let_go(self._core, leg)

    def take(self, stored: Checkpoint) -> None:
        handover.take(self._core, stored)

    def lose(self, leg_ids: Collection[str]) -> list[Leg]:
        for leg_id in leg_ids:
            self._command_ids.pop(leg_id, None)
        return handover.lose(self._core, leg_ids)

    # Events.
    def handle_event(self, event: ev.Event, now: float) -> list[fx.Effect]:
        with self._input(now) as core:
            if isinstance(event, ev.LegInitiated):
                self._initiated(event)
            elif isinstance(event, ev.TimerFired):
                self._timer(event.key.call_control_id, event)
            elif isinstance(event, ev.RecordingSaved | ev.RecordingFailed) and (
                (record := core.records.get(event.call_control_id)) is not None
            ):  # a conference's recording: named by the conference's id
                conference_recording.reported(core, record, event)
            elif isinstance(event, ev.RecordingSaved):
                # Arrives after the leg ended too: ended legs still report their recordings.
                leg = core.legs.get(event.call_control_id)
                if leg is not None:
                    media.recording_saved(core, leg, event)
            elif isinstance(event, ev.RecordingFailed):
                if (leg := core.legs.get(event.call_control_id)) is not None:  # ended ones too
                    media.recording_failed(core, leg, event)
            elif isinstance(event, ev.PlaybackEnded) and event.call_control_id in core.records:
                # A conference's playback: its tags are "<conference_id>/playback/<n>".
                record = core.records[event.call_control_id]
                conference_media.playback_ended(core, record, event)
            else:
                leg = core.live(event.call_control_id)
                if leg is not None:
                    self._live_event(leg, event)
            return core.finish()

    @contextmanager
    def _input(self, now: float) -> Iterator[Core]:
        """Frame one input so that it applies wholly or not at all: on any exception the state
        goes back to what it was before the input, its effects are dropped, and the exception
        propagates. Typed refusals are raised before any change, so for them this is a no-op;
        it is what keeps a bug half-way through a handler from leaving legs, rooms, queues and
        the mixer disagreeing."""
        core = self._core
        saved = core.checkpoint()
        core.begin(now)
        try:
            yield core
        except BaseException:
            core.restore(saved)
            raise

    def _live_event(self, leg: Leg, event: ev.Event) -> None:
        core = self._core
        if isinstance(event, ev.LegAnswered):
            setup.answered(core, leg)
        elif isinstance(event, ev.LegHungUp):
            if next_state(leg.state, Trigger.LEG_HUNG_UP) is not None:
                legs.end_leg(
                    core,
                    leg,
                    Trigger.LEG_HUNG_UP,
                    event.cause,
                    event.source,
                    sip_code=event.sip_hangup_cause or "unspecified",
                )
        elif isinstance(event, ev.ProviderFailed):
            if next_state(leg.state, Trigger.PROVIDER_FAILED) is not None:
                # Best effort at the provider too, so nothing is left dangling there.
                legs.end_leg(
                    core,
                    leg,
                    Trigger.PROVIDER_FAILED,
                    HangupCause.UNSPECIFIED,
                    HangupSource.UNKNOWN,
                    provider=fx.HangupCall(leg.call_control_id),
                    reason=f"provider_failed:{event.operation}",
                    detail=event.reason,
                )
        elif isinstance(event, ev.ProviderCallGone):
            setup.provider_gone(core, leg, event)
        elif isinstance(event, ev.CarrierAssigned):
            core.update(leg, carrier=event.carrier)
        elif isinstance(event, ev.LegAdopted):
            leg = app_streams.adopted(core, leg)
            streams.adopted(core, leg)
            gather.adopted(core, core.legs[leg.call_control_id])
        elif isinstance(event, ev.MediaStarted):
            media.media_started(core, setup.answered_by_stream(core, leg), event)
            streams.media_flowing(core, core.legs[leg.call_control_id])
        elif isinstance(event, ev.MediaStopped):
            media.media_stopped(core, leg)
            streams.expect_media(core, core.legs[leg.call_control_id])
        elif isinstance(event, ev.MediaFailed):
            streams.media_failed(core, leg, event)
        elif isinstance(event, ev.DtmfReceived):
            if (pressed := media.dtmf_received(core, leg, event)) is not None:
                gather.digit(core, pressed, event.digit)
        elif isinstance(event, ev.AppStreamChanged):
            app_streams.changed(core, leg, event)
        elif isinstance(event, ev.RecordingSilenced):
            if leg.recording_id == event.recording_id:  # else stopped meanwhile
                media.stop_recording(core, leg)
        elif isinstance(event, ev.PlaybackEnded):
            media.playback_ended(core, leg, event)
            completed = event.status == "completed"
            gather.playback_changed(core, core.legs[leg.call_control_id], completed=completed)

    def _initiated(self, event: ev.LegInitiated) -> None:
        core = self._core
        if event.call_control_id in core.legs:
            return  # a retried webhook
        leg = core.put(
            Leg(
                call_control_id=event.call_control_id,
                call_leg_id=event.call_leg_id,
                call_session_id=event.call_session_id,
                org_id=event.org_id,
                connection_id=event.connection_id,
                direction=Direction.INCOMING,
                from_=event.from_,
                to=event.to,
                state=TRANSITIONS[(None, Trigger.LEG_INITIATED)],
                start_time=core.now,
                webhook_url=event.webhook_url,
                time_limit_secs=event.time_limit_secs,
                carrier=event.carrier,
            )
        )
        core.webhook(leg, "call.initiated", state="parked", start_time=iso(leg.start_time))
        leg = setup.start_setup_timer(core, leg)
        if event.webhook_url is None and event.default_conference is not None:
            # Default routing: nobody will command this leg, so answer it and, once answered,
            # put it in its bridge's conference room.
            core.emit(fx.AnswerCall(leg.call_control_id))
            core.move(leg, Trigger.ANSWER, join_conference_of=event.default_conference)

    def _timer(self, call_control_id: str, event: ev.TimerFired) -> None:
        core = self._core
        leg = core.live(call_control_id)
        if leg is None or event.key not in leg.timers:
            return  # cancelled meanwhile: a stale firing
        leg = core.update(leg, timers=leg.timers - {event.key})
        kind = event.key.kind
        if kind is TimerKind.RING_TIMEOUT and next_state(leg.state, Trigger.RING_TIMEOUT):
            self._end_by_timer(leg, Trigger.RING_TIMEOUT, HangupCause.TIMEOUT)
        elif kind is TimerKind.TIME_LIMIT and next_state(leg.state, Trigger.TIME_LIMIT):
            self._end_by_timer(leg, Trigger.TIME_LIMIT, HangupCause.TIME_LIMIT)
        elif kind is TimerKind.QUEUE_WAIT:
            queues.queue_timed_out(core, leg)
        elif kind is TimerKind.RECORD_LIMIT and leg.recording_id == event.key.tag:
            media.stop_recording(core, leg)
        elif kind is TimerKind.MEDIA_WAIT:
            streams.wait_expired(core, leg)
        elif kind is TimerKind.SETUP_TIMEOUT:
            setup.setup_expired(core, leg)
        elif kind in (TimerKind.GATHER_TIMEOUT, TimerKind.GATHER_DIGIT_WAIT):
            gather.timer_fired(core, leg, event.key)

    def _end_by_timer(self, leg: Leg, trigger: Trigger, cause: HangupCause) -> None:
        hangup = fx.HangupCall(leg.call_control_id)
        legs.end_leg(self._core, leg, trigger, cause, leg.our_side, provider=hangup)

    # Commands.
    def handle_command(
        self, target: str, org_id: int, command: cmd.Command | ConferenceCommand, now: float
    ) -> list[fx.Effect]:
        leg = None if isinstance(command, ConferenceCommand) else self.leg(target, org_id)
        if self._is_repeat(target, command.command_id, now):
            return []
        with self._input(now) as core:
            # Each check raises, having changed nothing.
            if isinstance(command, ConferenceCommand):
                conferences.check(core, org_id, target, command)()
            else:
                assert leg is not None
                apply = commands.check(core, leg, command)
                apply(core.with_client_state(leg, command.client_state))
            effects = core.finish()
        # Only once the command has applied: a failed one may be retried under its command_id.
        if command.command_id is not None:
            self._command_ids.setdefault(target, {})[command.command_id] = now
        return effects

    def _is_repeat(self, call_control_id: str, command_id: str | None, now: float) -> bool:
        seen = self._command_ids.get(call_control_id)
        if command_id is None or not seen:
            return False
        for old_id, when in list(seen.items()):
            if now - when >= COMMAND_ID_WINDOW_S:
                del seen[old_id]
        return command_id in seen

    # Dial.
    def dial(
        self,
        ids: NewLegIds,
        org_id: int,
        command: cmd.Dial,
        now: float,
        *,
        default_webhook_url: str | None = None,
    ) -> DialResult:
        """Create an outgoing leg and ask the provider to place it.

        The webhook URL is the command's, else `default_webhook_url` (the API layer's choice),
        else the linked call's. With `link_to` the leg joins the linked call's session.
        """
        repeat = self._repeat_dial(org_id, command.command_id, now)
        if repeat is not None:
            return DialResult(repeat, [], duplicate=True)
        if ids.call_control_id in self._core.legs:
            raise Conflict(f"call_control_id '{ids.call_control_id}' is already in use")
        linked = self._linked(command.link_to, org_id)
        if command.supervision is not None:
            supervision.check_dial(self._core, org_id, command.supervision)
        with self._input(now) as core:
            leg = core.put(
                Leg(
                    call_control_id=ids.call_control_id,
                    call_leg_id=ids.call_leg_id,
                    call_session_id=linked.call_session_id if linked else ids.call_session_id,
                    org_id=org_id,
                    connection_id=command.connection_id,
                    direction=Direction.OUTGOING,
                    from_=linked.from_ if linked and command.bridge_intent else command.from_,
                    to=command.to,
                    state=TRANSITIONS[(None, Trigger.DIAL)],
                    start_time=core.now,
                    webhook_url=command.webhook_url
                    or default_webhook_url
                    or (linked.webhook_url if linked else None),
                    client_state=command.client_state,
                    link_to=command.link_to,
                    bridge_on_answer=command.bridge_on_answer,
                    park_after_unbridge=command.park_after_unbridge,
                    prevent_double_bridge=command.prevent_double_bridge,
                    ring_timeout_secs=command.timeout_secs,
                    time_limit_secs=command.time_limit_secs,
                    **supervision.dial_fields(command.supervision),
                )
            )
            core.emit(
                fx.DialCall(
                    call_control_id=leg.call_control_id,
                    org_id=org_id,
                    connection_id=leg.connection_id,
                    from_=leg.from_,
                    to=leg.to,
                    timeout_secs=command.timeout_secs,
                )
            )
            leg = core.start_timer(leg, TimerKind.RING_TIMEOUT, command.timeout_secs)
            state = "bridging" if command.link_to else "parked"
            core.webhook(leg, "call.initiated", state=state, start_time=iso(leg.start_time))
            effects = core.finish()
        if command.command_id is not None:
            self._dial_ids[(org_id, command.command_id)] = (leg.call_control_id, now)
        return DialResult(leg, effects)

    def _linked(self, link_to: str | None, org_id: int) -> Leg | None:
        if link_to is None:
            return None
        linked = self._core.legs.get(link_to)
        if linked is None or linked.org_id != org_id:
            raise NotFound(f"no call with call_control_id '{link_to}'", field="link_to")
        if not linked.is_alive:
            raise CallEnded("Call has already ended", field="link_to")
        return linked

    def _repeat_dial(self, org_id: int, command_id: str | None, now: float) -> Leg | None:
        # Entries are in time order: drop the expired ones from the front.
        while self._dial_ids:
            key, (_, when) = next(iter(self._dial_ids.items()))
            if now - when < COMMAND_ID_WINDOW_S:
                break
            del self._dial_ids[key]
        if command_id is None or (org_id, command_id) not in self._dial_ids:
            return None
        return self._core.legs.get(self._dial_ids[(org_id, command_id)][0])
