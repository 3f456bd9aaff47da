"""Room ids: one owner (the machine), one namespace, never shared by two organizations.

Before, a bridge's default conference was named ``bridge-<bridge id>`` by the adapters and a
bridge room ``bridge-<counter>`` by the machine: one organization's conference and another's
bridged pair could get the same name, and the mixer mixed them together (issue 11, point 1).
"""

from __future__ import annotations

import pytest

from engine.errors import NotFound
from engine.machine import commands as cmd
from engine.machine import effects as fx
from engine.machine import events as ev
from engine.machine.machine import CallMachine
from engine.machine.model import LegState
from tests.test_machine_harness import OTHER_ORG, Harness, hooks, of_type


def conference_caller(h: Harness, leg: str, *, org: int, bridge: int) -> str:
    """A caller of a bridge without webhook URL: answered by the machine, in its conference."""
    h.incoming(leg, answer=False, media=False, webhook_url=None, org=org, default_conference=bridge)
    h.event(ev.LegAnswered(leg))
    h.event(ev.MediaStarted(leg, "PCMU/8000"))
    return leg


def test_rooms_are_named_by_the_machine_with_their_kind() -> None:
    h = Harness()
    conference_caller(h, "c", org=1, bridge=1)
    h.incoming("a")
    h.incoming("b")
    h.command("a", cmd.Bridge(call_control_id="b"))
    conference, bridged = h.m.leg("c").room_id, h.m.leg("a").room_id
    assert conference is not None and conference.startswith("conf:")
    assert bridged is not None and bridged.startswith("room:")
    assert conference.split(":")[1] != bridged.split(":")[1]


def test_ids_take_their_unique_part_from_the_given_source() -> None:
    keys = iter(["k1", "k2"])
    h = Harness()
    h.m = CallMachine(new_room_key=lambda: next(keys))
    h.incoming("a")
    h.incoming("b")
    h.command("a", cmd.Bridge(call_control_id="b"))
    assert h.m.leg("a").room_id == "room:k1"


def test_a_source_that_repeats_itself_is_refused_rather_than_merging_rooms() -> None:
    h = Harness()
    h.m = CallMachine(new_room_key=lambda: "same")
    for leg in "abcd":
        h.incoming(leg)
    h.command("a", cmd.Bridge(call_control_id="b"))
    with pytest.raises(RuntimeError, match="minted twice"):
        h.command("c", cmd.Bridge(call_control_id="d"))
    assert h.m.legs_in_room("room:same") == (h.m.leg("a"), h.m.leg("b"))


def test_the_same_bridge_id_in_two_organizations_is_two_conferences() -> None:
    h = Harness()
    conference_caller(h, "a1", org=1, bridge=7)
    conference_caller(h, "b1", org=OTHER_ORG, bridge=7)
    conference_caller(h, "a2", org=1, bridge=7)
    room_a, room_b = h.m.leg("a1").room_id, h.m.leg("b1").room_id
    assert room_a != room_b
    assert h.m.leg("a2").room_id == room_a
    assert {leg.org_id for leg in h.m.legs_in_room(room_a or "")} == {1}


def test_one_organizations_conference_and_anothers_bridge_never_meet_or_end_each_other() -> None:
    """The reported case, in both orders: hangups on one side leave the other alone."""
    for conference_first in (True, False):
        h = Harness()
        if conference_first:
            conference_caller(h, "a1", org=1, bridge=1)
            conference_caller(h, "a2", org=1, bridge=1)
        h.incoming("b1", org=OTHER_ORG)
        h.incoming("b2", org=OTHER_ORG)
        h.command("b1", cmd.Bridge(call_control_id="b2"), org=OTHER_ORG)
        if not conference_first:
            conference_caller(h, "a1", org=1, bridge=1)
            conference_caller(h, "a2", org=1, bridge=1)
        rooms = {leg: h.m.leg(leg).room_id for leg in ("a1", "a2", "b1", "b2")}
        assert rooms["a1"] == rooms["a2"] != rooms["b1"] == rooms["b2"]
        out = h.command("a1", cmd.Hangup())
        assert of_type(out, fx.HangupCall) == [fx.HangupCall("a1")]
        assert hooks(out, "b1") == hooks(out, "b2") == []
        assert h.state("b1") is h.state("b2") is LegState.BRIDGED
        out = h.command("b1", cmd.Hangup(), org=OTHER_ORG)
        assert {e.call_control_id for e in of_type(out, fx.HangupCall)} == {"b1", "b2"}
        assert h.state("a2") is LegState.BRIDGED and h.m.leg("a2").room_id == rooms["a1"]


def test_an_empty_conference_is_forgotten_and_the_next_caller_starts_a_new_one() -> None:
    h = Harness()
    conference_caller(h, "a", org=1, bridge=3)
    first = h.m.leg("a").room_id
    h.command("a", cmd.Hangup())
    assert h.m.snapshot().conferences == ()
    conference_caller(h, "b", org=1, bridge=3)
    assert h.m.leg("b").room_id not in (None, first)


def test_a_leg_cannot_be_put_in_another_organizations_conference() -> None:
    h = Harness()
    conference_caller(h, "a", org=1, bridge=1)
    room = h.m.leg("a").room_id
    assert room is not None
    h.incoming("b", org=OTHER_ORG)
    before = h.m.snapshot()
    with pytest.raises(NotFound):
        h.command("b", cmd.JoinConference(room_id=room), org=OTHER_ORG)
    assert h.m.snapshot() == before
