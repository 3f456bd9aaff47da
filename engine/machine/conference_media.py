"""What a conference's participants hear besides each other: hold, play, stop, send_dtmf.

- ``hold`` puts participants on hold (``Leg.on_hold``): ``Core.put`` derives the mixer's
  ``SetAudience`` (nobody, and ``deaf``) from it (``engine.machine.hearing``), so a held
  participant is heard by nobody and hears nobody in the room; it hears its hold audio instead
  (the overlay ``CONFERENCE_HOLD_TAG``: the action's ``audio_url`` or ``media_name``, else
  callbridge's tone on hold, looped until ``unhold``). The SDK's
  ``ConferenceParticipant.on_hold`` shows it. Leaving the room (leave, a bridge or conference
  elsewhere, hangup) takes it off hold: hold belongs to the conference.
- ``play`` plays ``audio_url`` or ``media_name`` (``loop`` times) to the participants named,
  or to everyone in the room when none is, through the playback overlays of
  ``engine.machine.media``; the conference plays one at a time, a new ``play`` replacing the
  current one (as callbridge's ``playback_start`` does). Webhooks, with the SDK's event models'
  payloads: to the whole room ``conference.playback.started`` / ``.ended``
  (``types/conference_playback_started.py``: no participant), to named participants
  ``conference.participant.playback.started`` / ``.ended`` for each of them
  (``types/conference_participant_playback_started.py``). Telnyx's reference names both
  families without saying which its ``play`` sends when; callbridge splits them by target.
  A participant that leaves stops hearing it (its ``.ended`` if it was named); ``stop`` stops it
  for the participants named (everyone when none is). A playback to the whole room, and the
  join/leave beeps, are heard by the conference's recording in progress too
  (``engine.machine.conference_recording``).
- ``send_dtmf`` queues the digits on each participant named (everyone when none is): their far
  end hears them (``engine.media_plane.digits_out``), as a leg's ``send_dtmf`` does.

Each check is done by ``engine.machine.conferences`` (participants, conference live); the
changes here cannot fail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from engine.machine import conference_recording
from engine.machine import effects as fx
from engine.machine.conference_commands import (
    ConferenceDtmf,
    HoldParticipants,
    PlayConference,
    StopConference,
)
from engine.machine.conference_events import record_of
from engine.machine.core import Core, iso, leg_fields
from engine.machine.events import PlaybackEnded
from engine.machine.media import audio_source
from engine.machine.model import Conference, ConferencePlayback, Leg, OverlaySource

#: callbridge's tone on hold (media/tones.py HOLD_TONE), when hold names no audio.
HOLD_TONE = OverlaySource("hold", "")

MediaCommand = HoldParticipants | PlayConference | StopConference | ConferenceDtmf


def change(
    core: Core, record: Conference, chosen: list[Leg], command: MediaCommand
) -> Callable[[], object]:
    """The change of a checked command on ``chosen`` (the participants it names, or all)."""
    match command:
        case HoldParticipants(held=True):
            source = HOLD_TONE
            if command.audio_url is not None or command.media_name is not None:
                source = audio_source(record.org_id, command.audio_url, command.media_name)
            return lambda: _hold(core, chosen, source)
        case HoldParticipants():
            return lambda: _unhold(core, chosen)
        case PlayConference():
            return lambda: _play(core, record, chosen, command)
        case StopConference():
            targets = {leg.call_control_id for leg in chosen}
            return lambda: _stop(core, record, targets if command.call_control_ids else None)
        case ConferenceDtmf():
            ids = [leg.call_control_id for leg in chosen]
            digits, duration = command.digits, command.duration_millis
            return lambda: core.emit(*(fx.SendDtmf(i, digits, duration) for i in ids))


def _hold(core: Core, chosen: list[Leg], source: OverlaySource) -> None:
    for leg in chosen:
        # Holding a held participant again changes its hold audio.
        core.emit(fx.SetOverlay(leg.call_control_id, fx.CONFERENCE_HOLD_TAG, source, None))
        core.update(core.legs[leg.call_control_id], on_hold=True)


def _unhold(core: Core, chosen: list[Leg]) -> None:
    for leg in chosen:
        _off_hold(core, core.legs[leg.call_control_id])


def _off_hold(core: Core, leg: Leg) -> Leg:
    if not leg.on_hold:
        return leg
    core.emit(fx.ClearOverlay(leg.call_control_id, fx.CONFERENCE_HOLD_TAG))
    return core.update(leg, on_hold=False)


def _play(core: Core, record: Conference, chosen: list[Leg], command: PlayConference) -> None:
    record = _stop(core, record, None)
    source = audio_source(record.org_id, command.audio_url, command.media_name)
    playback = ConferencePlayback(
        playback_id=f"{record.conference_id}/playback/{record.seq + 1}",
        listeners=tuple(leg.call_control_id for leg in chosen),
        media_url=command.audio_url,
        media_name=command.media_name,
        targeted=bool(command.call_control_ids),
    )
    # The whole room's playback is in the conference's recording too (its listener).
    room_audio = () if playback.targeted else conference_recording.hears_room_audio(record)
    for listener in (*playback.listeners, *room_audio):
        core.emit(fx.SetOverlay(listener, playback.playback_id, source, command.loop))
    record = replace(record, seq=record.seq + 1, playbacks=(*record.playbacks, playback))
    core.records[record.conference_id] = record
    _announce(core, record, playback, "started", playback.listeners)


def _stop(core: Core, record: Conference, targets: set[str] | None) -> Conference:
    """Stop the conference's playbacks for ``targets`` (None: everyone); the record after."""
    for playback in record.playbacks:
        stopped = [i for i in playback.listeners if targets is None or i in targets]
        record = _drop_listeners(core, record, playback, stopped)
    return record


def _drop_listeners(
    core: Core, record: Conference, playback: ConferencePlayback, stopped: list[str]
) -> Conference:
    if not stopped:
        return record
    for listener in stopped:
        core.emit(fx.ClearOverlay(listener, playback.playback_id))
    rest = tuple(i for i in playback.listeners if i not in stopped)
    kept = tuple(p for p in record.playbacks if p.playback_id != playback.playback_id)
    if rest:
        kept = (*kept, replace(playback, listeners=rest))
    record = replace(record, playbacks=kept)
    core.records[record.conference_id] = record
    if playback.targeted:
        _announce(core, record, playback, "ended", tuple(stopped))
    elif not rest:
        # Over for the whole room: for the recording's listener too.
        for listener in conference_recording.hears_room_audio(record):
            core.emit(fx.ClearOverlay(listener, playback.playback_id))
        _announce(core, record, playback, "ended", ())
    return record


def _announce(
    core: Core,
    record: Conference,
    playback: ConferencePlayback,
    what: str,
    listeners: tuple[str, ...],
) -> None:
    if record.webhook_url is None:
        return  # a bridge's default conference: nobody listens
    creator = core.legs.get(record.creator)
    common: dict[str, object] = {
        "conference_id": record.conference_id,
        "connection_id": record.connection_id,
        "creator_call_session_id": creator.call_session_id if creator else None,
        "media_url": playback.media_url,
        "media_name": playback.media_name,
        "occurred_at": iso(core.now),
    }
    if not playback.targeted:
        _send(core, record, record.creator, f"conference.playback.{what}", common)
        return
    for listener in listeners:
        leg = core.legs[listener]
        payload = {**leg_fields(leg, record.client_state), **common}
        _send(core, record, listener, f"conference.participant.playback.{what}", payload)


def _send(
    core: Core, record: Conference, leg_id: str, event_type: str, payload: dict[str, object]
) -> None:
    assert record.webhook_url is not None
    core.send(
        leg_id, record.org_id, record.webhook_url, event_type, payload, order_key=record.room_id
    )


def playback_ended(core: Core, record: Conference, event: PlaybackEnded) -> None:
    """A conference playback played out (or could not be played): over for everyone."""
    for playback in record.playbacks:
        if playback.playback_id == event.playback_id:
            _drop_listeners(core, record, playback, list(playback.listeners))
            return


#: The beep of a conference's beep_enabled (the plane's one-shot beep: 1 kHz, 250 ms).
JOIN_BEEP = OverlaySource("beep", "conference")


def beep(core: Core, room_id: str, leg: Leg, moment: str, hearers: tuple[str, ...]) -> None:
    """``leg`` entered (``moment`` "enter") or is leaving ("exit") the room: a beep to
    ``hearers`` if its beep_enabled (its join's, else the conference's) says so."""
    record = record_of(core, room_id)
    if record is None:
        return
    setting = leg.conference_beep or record.beep_enabled
    if setting not in ("always", f"on_{moment}") or not hearers:
        return
    tag = f"{room_id}/beep/{record.seq + 1}"
    core.records[record.conference_id] = replace(record, seq=record.seq + 1)
    for hearer in (*hearers, *conference_recording.hears_room_audio(record)):
        core.emit(fx.SetOverlay(hearer, tag, JOIN_BEEP, 1))


def leaving(core: Core, room_id: str, leg: Leg) -> Leg:
    """``leg`` is leaving the conference room: off hold, and out of its playbacks."""
    record = record_of(core, room_id)
    if record is not None:
        for playback in record.playbacks:
            if leg.call_control_id in playback.listeners:
                record = _drop_listeners(core, record, playback, [leg.call_control_id])
    return _off_hold(core, leg)
