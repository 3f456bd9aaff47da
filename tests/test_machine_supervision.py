"""Supervision on the machine (engine/machine/supervision.py, hearing.py): the dialled
supervisor joins the supervised leg's room on answer as a supervisor (not a member), who hears
it is one derived ``SetAudience`` effect per change (role, mute, each new stream), its leaving
dissolves nothing, the room's end leaves it behind, and bad input changes nothing."""

from __future__ import annotations

import pytest

from engine.errors import InvalidState, NotFound
from engine.machine import commands as cmd
from engine.machine import effects as fx
from engine.machine import events as ev
from engine.machine.command_body import ParameterError
from engine.machine.conference_commands import (
    MuteParticipants,
    parse_action,
)
from engine.machine.model import HangupCause, HangupSource, Leg, LegState, Room, SupervisorRole
from engine.store import live_codec
from tests.test_machine_conferences import conference
from tests.test_machine_harness import ORG, Harness, hooks, of_type

NOBODY: frozenset[str] = frozenset()


def room_of(h: Harness, room_id: str) -> Room:
    room = h.m.room(room_id)
    assert room is not None
    return room


def supervised(h: Harness, role: str) -> str:
    """A bridged with B; S dialled to supervise A in ``role``, answered, with media."""
    h.bridged_pair("a", "b")
    h.dial("s", supervise_call_control_id="a", supervisor_role=role)
    return h.m.leg("a").room_id or ""


@pytest.mark.parametrize(
    ("role", "audience"),
    [("barge", None), ("whisper", frozenset({"a"})), ("monitor", NOBODY)],
)
def test_the_supervisor_joins_the_room_on_answer_heard_as_its_role(
    role: str, audience: frozenset[str] | None
) -> None:
    h = Harness()
    room = supervised(h, role)
    assert h.state("s") is LegState.DIALING and h.m.leg("s").room_id is None
    out = h.event(ev.LegAnswered("s"))
    assert of_type(out, fx.JoinRoom) == []  # no media yet: nothing for the mixer
    assert hooks(out, "s") == ["call.answered"]  # Telnyx documents nothing more
    assert (h.state("s"), h.m.leg("s").room_id) == (LegState.BRIDGED, room)
    assert room_of(h, room).members == ("a", "b")  # the bridge stays two-party
    assert room_of(h, room).supervisors == ("s",)
    out = h.event(ev.MediaStarted("s", "PCMU/8000"))
    expected: list[fx.Effect] = [fx.JoinRoom("s", room)]
    if audience is not None:
        expected.append(fx.SetAudience("s", audience))
    assert [e for e in out if isinstance(e, fx.JoinRoom | fx.SetAudience)] == expected


def test_switch_supervisor_role_changes_who_hears_it_at_once() -> None:
    h = Harness()
    supervised(h, "monitor")
    h.event(ev.LegAnswered("s"))
    h.event(ev.MediaStarted("s", "PCMU/8000"))
    switch = cmd.parse_command("switch_supervisor_role", {"role": "whisper"})
    assert of_type(h.command("s", switch), fx.SetAudience) == [
        fx.SetAudience("s", frozenset({"a"}))
    ]
    barge = cmd.parse_command("switch_supervisor_role", {"role": "barge"})
    assert of_type(h.command("s", barge), fx.SetAudience) == [fx.SetAudience("s", None)]
    assert of_type(h.command("s", barge), fx.SetAudience) == []  # no change, no effect
    assert h.m.leg("s").supervisor_role is SupervisorRole.BARGE
    with pytest.raises(InvalidState):  # not a supervisor
        h.command("b", switch)


def test_a_supervisor_hanging_up_dissolves_nothing_and_the_room_ending_leaves_it_behind() -> None:
    h = Harness()
    room = supervised(h, "barge")
    h.event(ev.LegAnswered("s"))
    h.dial("t", supervise_call_control_id="b", supervisor_role="monitor", answer=True)
    assert room_of(h, room).supervisors == ("s", "t")
    h.event(ev.LegHungUp("s", HangupCause.NORMAL_CLEARING, HangupSource.CALLER))
    assert (h.state("a"), h.state("b")) == (LegState.BRIDGED, LegState.BRIDGED)
    assert room_of(h, room).supervisors == ("t",)
    # A hangs up: the bridge dissolves, B and T follow their own policy (hung up).
    h.event(ev.LegHungUp("a", HangupCause.NORMAL_CLEARING, HangupSource.CALLER))
    assert (h.state("b"), h.state("t")) == (LegState.HANGUP, LegState.HANGUP)
    assert h.m.leg("t").supervise is None


def test_a_supervisor_whose_call_ended_before_it_answered_stays_answered() -> None:
    h = Harness()
    supervised(h, "whisper")
    h.event(ev.LegHungUp("a", HangupCause.NORMAL_CLEARING, HangupSource.CALLER))
    h.event(ev.LegAnswered("s"))
    s = h.m.leg("s")
    assert (s.state, s.room_id, s.supervise) == (LegState.ANSWERED, None, None)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"supervise_call_control_id": "a"}, "supervisor_role"),
        ({"supervisor_role": "barge"}, "supervise_call_control_id"),
        ({"supervise_call_control_id": "a", "supervisor_role": "none"}, "supervisor_role"),
        (
            {
                "supervise_call_control_id": "a",
                "supervisor_role": "barge",
                "link_to": "a",
                "bridge_on_answer": True,
            },
            "supervise_call_control_id",
        ),
    ],
)
def test_bad_dial_supervision_is_refused_naming_the_field(
    body: dict[str, object], field: str
) -> None:
    with pytest.raises(ParameterError) as caught:
        cmd.parse_dial({"connection_id": "c", "from": "+15550003333", "to": "+15550004444", **body})
    assert caught.value.field == field


def test_dial_to_supervise_a_leg_in_no_room_or_unknown_is_refused() -> None:
    h = Harness()
    h.incoming("alone")
    with pytest.raises(InvalidState) as caught:
        h.dial("s", supervise_call_control_id="alone", supervisor_role="barge")
    assert caught.value.field == "supervise_call_control_id"
    with pytest.raises(NotFound):
        h.dial("s", supervise_call_control_id="nobody", supervisor_role="barge")
    assert not h.has("s")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "role"),
        ({"role": "none"}, "role"),
        ({"role": "barge", "command_id": "x"}, "command_id"),
    ],
)
def test_bad_switch_is_refused_naming_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(ParameterError) as caught:
        cmd.parse_command("switch_supervisor_role", body)
    assert caught.value.field == field


def test_a_conference_participant_updated_to_whisper_is_heard_by_the_named_only() -> None:
    h = Harness()
    conf = conference(h, "a", "b", "c", "d")
    update = parse_action(
        "update",
        {"call_control_id": "d", "supervisor_role": "whisper", "whisper_call_control_ids": ["b"]},
    )
    h.tick(5)
    out = h.m.handle_command(conf, ORG, update, h.now)
    assert of_type(out, fx.SetAudience) == [fx.SetAudience("d", frozenset({"b"}))]
    assert h.m.conferences_of(ORG)[0].updated_at == h.now
    # Muted, a whisperer is heard by nobody; unmuted, by its targets again.
    mute = MuteParticipants(call_control_ids=("d",), muted=True)
    assert of_type(h.m.handle_command(conf, ORG, mute, h.now), fx.SetAudience) == [
        fx.SetAudience("d", NOBODY)
    ]
    unmute = MuteParticipants(call_control_ids=("d",), muted=False)
    assert of_type(h.m.handle_command(conf, ORG, unmute, h.now), fx.SetAudience) == [
        fx.SetAudience("d", frozenset({"b"}))
    ]
    # Leaving ends the role.
    leave = parse_action("leave", {"call_control_id": "d"})
    h.m.handle_command(conf, ORG, leave, h.now)
    assert h.m.leg("d").supervisor_role is SupervisorRole.NONE


@pytest.mark.parametrize(
    ("action", "body", "field"),
    [
        ("update", {"call_control_id": "d"}, "supervisor_role"),
        ("update", {"call_control_id": "d", "supervisor_role": "boss"}, "supervisor_role"),
        (
            "update",
            {"call_control_id": "d", "supervisor_role": "barge", "whisper_call_control_ids": []},
            "whisper_call_control_ids",
        ),
        ("update", {"call_control_id": "d", "supervisor_role": "none", "region": "US"}, "region"),
        (
            "join",
            {"call_control_id": "d", "supervisor_role": "whisper", "whisper_call_control_ids": 1},
            "whisper_call_control_ids",
        ),
    ],
)
def test_bad_conference_roles_are_refused_naming_the_field(
    action: str, body: dict[str, object], field: str
) -> None:
    with pytest.raises(ParameterError) as caught:
        parse_action(action, body)
    assert caught.value.field == field


def test_whispering_to_a_non_participant_is_refused_and_changes_nothing() -> None:
    h = Harness()
    conf = conference(h, "a", "b")
    h.incoming("x")
    update = parse_action(
        "update",
        {"call_control_id": "b", "supervisor_role": "whisper", "whisper_call_control_ids": ["x"]},
    )
    with pytest.raises(InvalidState) as caught:
        h.m.handle_command(conf, ORG, update, h.now)
    assert caught.value.field == "whisper_call_control_ids"
    assert h.m.leg("b").supervisor_role is SupervisorRole.NONE


def test_supervision_is_stored_with_the_leg_and_the_room() -> None:
    h = Harness()
    room = supervised(h, "whisper")
    h.event(ev.LegAnswered("s"))
    leg, stored_room = h.m.leg("s"), room_of(h, room)
    assert live_codec.loads(Leg, live_codec.dumps(leg)) == leg
    assert live_codec.loads(Room, live_codec.dumps(stored_room)) == stored_room
    assert live_codec.loads(Room, live_codec.dumps(stored_room)).supervisors == ("s",)
