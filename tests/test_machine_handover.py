"""A leg handed between machines (engine/machine/handover.py): what keeps it where it is, what
it takes along, and that the machine taking it carries on with it as the one letting it go
would have. Two machines stand for two nodes; the store between them is the live codec's
snapshot (engine/store/live_records.py)."""

from __future__ import annotations

import pytest

from engine.machine import commands as cmd
from engine.machine import effects as fx
from engine.machine.conference_commands import CreateConference
from engine.machine.model import LegState
from engine.store.live_records import LiveSnapshot
from tests.test_machine_harness import ORG, Harness, hooks, of_type


def stored(h: Harness) -> LiveSnapshot:
    """What the store holds of ``h``'s machine (every input is stored as it is applied)."""
    snap = h.m.snapshot()
    return LiveSnapshot(legs=snap.legs, rooms=snap.rooms, queues=snap.queues,
                        conferences=snap.conferences, records=snap.records)  # fmt: skip


def test_an_answered_leg_alone_moves_and_the_taking_machine_carries_it_on() -> None:
    here, there = Harness(), Harness()
    here.incoming("a")
    there.incoming("b")
    assert here.m.why_it_stays("a") is None
    store = stored(here)

    gone = here.m.let_go("a")
    assert gone.leg.call_control_id == "a" and gone.room_id is None
    assert not here.has("a")
    there.m.take(store.of_leg("a").checkpoint())

    # b's machine now bridges them as if both had been its own from the start.
    there.command("b", cmd.parse_command("bridge", {"call_control_id": "a"}))
    assert there.state("a") is LegState.BRIDGED and there.state("b") is LegState.BRIDGED
    assert hooks(there.log, "a")[-1] == "call.bridged"


def test_a_leg_alone_in_its_bridge_room_takes_the_room_along() -> None:
    here, there = Harness(), Harness()
    here.bridged_pair("a", "b", park_after_unbridge="self")
    here.command("b", cmd.Hangup())
    room = here.m.leg("a").room_id
    if room is not None:  # parked in its room alone, or out of any room: both may move
        assert here.m.room(room) is not None
    assert here.m.why_it_stays("a") is None
    store = stored(here)
    gone = here.m.let_go("a")
    assert gone.room_id == room
    assert room is None or here.m.room(room) is None
    there.m.take(store.of_leg("a").checkpoint())
    assert there.m.leg("a").room_id == room
    assert there.m.is_alive("a")


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ("bridged", "it shares a room with other calls"),
        ("unanswered", "it has not been answered"),
        ("recording", "it is being recorded"),
        ("playing", "audio is playing to it"),
        ("conference", "it is in a conference"),
        ("ended", "the call has ended"),
    ],
)
def test_a_leg_tied_to_its_node_stays_and_says_why(setup: str, reason: str) -> None:
    h = Harness()
    if setup == "bridged":
        h.bridged_pair("a", "b")
    elif setup == "unanswered":
        h.incoming("a", answer=False, media=False)
    else:
        h.incoming("a")
    if setup == "recording":
        h.command("a", cmd.parse_command("record_start", {"format": "wav", "channels": "single"}))
    elif setup == "playing":
        h.command("a", cmd.PlaybackStart(media_name="beep"))
    elif setup == "conference":
        h.m.handle_command("a", ORG, CreateConference(call_control_id="a", name="n"), h.now)
    elif setup == "ended":
        h.command("a", cmd.Hangup())
    why = h.m.why_it_stays("a")
    assert why is not None and why.startswith(reason), why
    before = h.m.checkpoint()
    with pytest.raises(RuntimeError, match="cannot move"):
        h.m.let_go("a")
    assert h.m.checkpoint() == before  # nothing changed


def test_a_leg_cannot_be_taken_twice() -> None:
    here, there = Harness(), Harness()
    here.incoming("a")
    store = stored(here)
    there.m.take(store.of_leg("a").checkpoint())
    with pytest.raises(RuntimeError, match="already held here"):
        there.m.take(store.of_leg("a").checkpoint())
    assert of_type(there.log, fx.EmitWebhook) == []  # taking a leg publishes nothing


def test_a_lost_leg_goes_with_its_room_and_everything_tied_to_it() -> None:
    h = Harness()
    h.bridged_pair("a", "b")
    h.incoming("c")
    room = h.m.leg("a").room_id
    lost = h.m.lose(["a"])
    assert sorted(leg.call_control_id for leg in lost) == ["a", "b"]  # b was in a's room
    assert not h.has("a") and not h.has("b") and h.has("c")
    assert room is not None and h.m.room(room) is None
