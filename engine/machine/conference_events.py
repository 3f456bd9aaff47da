"""A conference's record and its webhooks, as its room gains and loses members.

Every conference room has a ``Conference`` record (``core.records``): made when the room is
made (by ``POST /v2/conferences``, or by the first caller of a bridge's default conference), ended
when its last member leaves, and kept after that so ``GET /v2/conferences/{id}`` finds it
until ``CallMachine.prune`` forgets it with the legs of its time.

The webhooks are Call Control v2's, with the payload fields the official SDK's event models name
(its ``types/conference_created.py``, ``conference_participant_joined.py``,
``conference_participant_left.py``, ``conference_ended.py``): ``call_control_id``,
``call_leg_id``, ``call_session_id``, ``client_state``, ``conference_id``, ``connection_id``;
``occurred_at`` in the payload of ``conference.created`` and ``conference.ended``, and
``reason`` in ``conference.ended``. They go to the creating leg's webhook URL with the
conference's ``client_state`` (the create command's: the SDK's ``client_state`` of
``ConferenceCreateParams`` "will be used for all webhooks related to the created conference"),
in order per conference. A bridge's default conference has no webhook URL: nobody listens.

This module knows no room mechanics (``engine.machine.legs`` calls it); the commands that act on
conferences are ``engine.machine.conferences``.
"""

from __future__ import annotations

import re
from dataclasses import replace

from engine.machine import conference_recording
from engine.machine.core import Core, iso, leg_fields
from engine.machine.model import Conference, Leg, Room

ROOM_PREFIX = "conf:"
_UUID_HEX = re.compile(r"[0-9a-f]{32}")


def conference_id_of(room_id: str) -> str:
    """The conference id of a conference room: its key as a UUID (the runtime's keys are
    UUID hex), or the key itself when it is not one (the counted keys of tests are)."""
    k = room_id.removeprefix(ROOM_PREFIX)
    if not _UUID_HEX.fullmatch(k):
        return k
    return f"{k[:8]}-{k[8:12]}-{k[12:16]}-{k[16:20]}-{k[20:]}"


def record_of(core: Core, room_id: str) -> Conference | None:
    return core.records.get(conference_id_of(room_id))


def opened(core: Core, record: Conference, leg: Leg) -> None:
    """A new conference, made from ``leg``: stored, then ``conference.created``."""
    core.records[record.conference_id] = record
    _send(core, record, leg, "conference.created", occurred_at=iso(core.now))


def new_record(
    core: Core,
    room_id: str,
    org_id: int,
    leg: Leg,
    name: str,
    *,
    max_participants: int = 250,
    bridge_id: int | None = None,
) -> Conference:
    """A new conference's record, made from ``leg`` now."""
    return Conference(
        conference_id=conference_id_of(room_id),
        room_id=room_id,
        org_id=org_id,
        name=name,
        created_at=core.now,
        updated_at=core.now,
        creator=leg.call_control_id,
        connection_id=leg.connection_id,
        webhook_url=leg.webhook_url,
        client_state=leg.client_state,
        max_participants=max_participants,
        bridge_id=bridge_id,
    )


def default_record(core: Core, room: Room, leg: Leg) -> Conference:
    """The record of a room made without ``POST /v2/conferences``: a bridge's default
    conference (named after the bridge) or the machine's own ``JoinConference``."""
    bridge_id = room.bridge_id
    name = f"bridge-{bridge_id}" if bridge_id is not None else conference_id_of(room.room_id)
    return new_record(core, room.room_id, room.org_id, leg, name, bridge_id=bridge_id)


def joined(core: Core, room_id: str, leg: Leg) -> None:
    record = record_of(core, room_id)
    if record is not None:
        _send(core, record, leg, "conference.participant.joined")


def left(core: Core, room: Room, leg: Leg, *, last: bool) -> None:
    """``leg`` has left the room; the conference ends with its last member."""
    record = record_of(core, room.room_id)
    if record is None:
        return
    _send(core, record, leg, "conference.participant.left")
    if last:
        reason = record.end_reason or "all_left"
        record = replace(record, ended_at=core.now, updated_at=core.now, end_reason=reason)
        core.records[record.conference_id] = record
        # "Recording will stop on conference end" (the SDK's record_start).
        record = conference_recording.stop(core, record)
        creator = core.legs.get(record.creator, leg)
        _send(core, record, creator, "conference.ended", occurred_at=iso(core.now), reason=reason)


def _send(core: Core, record: Conference, leg: Leg, event_type: str, **extra: object) -> None:
    if record.webhook_url is None:
        return  # a bridge's default conference: nobody listens
    payload = leg_fields(leg, record.client_state)
    payload["conference_id"] = record.conference_id
    payload.update(extra)
    core.send(
        leg.call_control_id,
        record.org_id,
        record.webhook_url,
        event_type,
        payload,
        order_key=record.room_id,
    )
