"""Bridge semantics of CallMachine: rooms, moves, unbridge policies, ringback, media wait,
queues as bridge sources, conferences, and refusals that change nothing."""

from __future__ import annotations

import pytest

from engine.errors import InvalidState, NotFound, ValidationError
from engine.machine import commands as cmd
from engine.machine import effects as fx
from engine.machine import events as ev
from engine.machine.model import (
    CallEnded,
    HangupCause,
    HangupSource,
    LegState,
    OverlaySource,
    TimerKey,
    TimerKind,
)
from tests.test_machine_harness import OTHER_ORG, Harness, hook, hooks, of_type, webhook_order

S = LegState


def bridge(h: Harness, a: str, b: str, **fields: object) -> list[fx.Effect]:
    return h.command(a, cmd.parse_command("bridge", {"call_control_id": b, **fields}))


def test_bridging_puts_both_legs_in_one_room_and_reports_each() -> None:
    h = Harness()
    h.incoming("a")
    h.incoming("b")
    out = bridge(h, "a", "b")
    room = h.m.leg("a").room_id
    assert room is not None and h.m.leg("b").room_id == room
    assert [leg.call_control_id for leg in h.m.legs_in_room(room)] == ["a", "b"]
    assert (h.state("a"), h.state("b")) == (S.BRIDGED, S.BRIDGED)
    assert webhook_order(out) == [("a", "call.bridged"), ("b", "call.bridged")]
    assert of_type(out, fx.JoinRoom) == [fx.JoinRoom("a", room), fx.JoinRoom("b", room)]


@pytest.mark.parametrize(
    ("policy", "left_state", "left_hooks"),
    [
        ({"park_after_unbridge": "self"}, S.PARKED, []),
        ({"hold_after_unbridge": True}, S.HELD, []),
        ({}, S.HANGUP, ["call.hangup"]),
    ],
    ids=["park", "hold", "hang-up"],
)
@pytest.mark.parametrize("moved", ["commanding-leg", "target-leg"])
def test_bridging_a_bridged_leg_moves_it_and_the_peer_left_follows_its_policy(
    policy: dict[str, object], left_state: LegState, left_hooks: list[str], moved: str
) -> None:
    h = Harness()
    h.bridged_pair("left", "mover", **policy)  # "left" sent the bridge: the policy is its own
    h.incoming("new")
    out = bridge(h, "mover", "new") if moved == "commanding-leg" else bridge(h, "new", "mover")
    assert h.state("left") is left_state
    assert h.m.leg("left").room_id is None
    assert hooks(out, "left") == left_hooks
    assert h.m.leg("mover").room_id == h.m.leg("new").room_id is not None
    assert hooks(out, "mover") == hooks(out, "new") == ["call.bridged"]
    if left_state is S.HANGUP:
        payload = hook(out, "left", "call.hangup")
        assert payload["hangup_cause"] == "normal_clearing"
        assert fx.HangupCall("left") in out


def test_prevent_double_bridge_refuses_the_move_and_changes_nothing() -> None:
    h = Harness()
    h.bridged_pair("a", "b")
    h.incoming("c")
    before = h.m.snapshot()
    with pytest.raises(InvalidState) as refused:
        bridge(h, "c", "b", prevent_double_bridge=True)
    assert refused.value.field == "call_control_id"
    assert h.m.snapshot() == before


@pytest.mark.parametrize(
    ("target", "error", "field"),
    [
        ("a", ValidationError, "call_control_id"),
        ("ended", CallEnded, "call_control_id"),
        ("nobody", NotFound, "call_control_id"),
        ("foreign", NotFound, "call_control_id"),
        ("ringing-in", InvalidState, "call_control_id"),
        ("b", InvalidState, "call_control_id"),  # already bridged together
    ],
)
def test_bridge_refusals_change_nothing(target: str, error: type[Exception], field: str) -> None:
    h = Harness()
    h.bridged_pair("a", "b")
    h.incoming("ended")
    h.command("ended", cmd.Hangup())
    h.incoming("foreign", org=OTHER_ORG)
    h.incoming("ringing-in", answer=False)
    before = h.m.snapshot()
    with pytest.raises(error) as refused:
        bridge(h, "a", target)
    assert getattr(refused.value, "field", None) == field
    assert h.m.snapshot() == before


def test_a_bridge_waits_for_media_without_error() -> None:
    h = Harness()
    h.incoming("a", media=False)
    h.incoming("b", media=False)
    out = bridge(h, "a", "b")
    assert hooks(out) == ["call.bridged", "call.bridged"]
    assert of_type(out, fx.JoinRoom) == []  # nothing to mix yet
    room = h.m.leg("a").room_id
    assert room is not None
    assert of_type(h.event(ev.MediaStarted("b", "PCMA/8000")), fx.JoinRoom) == [
        fx.JoinRoom("b", room)
    ]
    assert of_type(h.event(ev.MediaStarted("a", "PCMU/8000")), fx.JoinRoom) == [
        fx.JoinRoom("a", room)
    ]
    out = h.event(ev.MediaStopped("a"))
    assert of_type(out, fx.LeaveRoom) == [fx.LeaveRoom("a", room)]
    assert hooks(out, "a") == ["streaming.stopped"]
    assert h.state("a") is S.BRIDGED  # a media gap is not an unbridge


@pytest.mark.parametrize("ringtone", ["us", "de", "us-old"])
def test_play_ringtone_plays_the_countrys_ringback_until_b_answers(ringtone: str) -> None:
    h = Harness()
    h.incoming("a")
    h.dial("b")
    out = bridge(h, "a", "b", play_ringtone=True, ringtone=ringtone)
    assert out[-1:] == [fx.SetOverlay("a", "ringback", OverlaySource("ringback", ringtone))]
    assert hooks(out) == []  # not bridged until B answers
    assert (h.state("a"), h.state("b")) == (S.BRIDGING, S.DIALING)
    out = h.event(ev.LegAnswered("b"))
    assert fx.ClearOverlay("a", "ringback") in out
    assert webhook_order(out) == [
        ("b", "call.answered"),
        ("a", "call.bridged"),
        ("b", "call.bridged"),
    ]
    assert (h.state("a"), h.state("b")) == (S.BRIDGED, S.BRIDGED)
    assert h.m.leg("a").room_id == h.m.leg("b").room_id


def test_without_play_ringtone_no_ringback_is_played() -> None:
    h = Harness()
    h.incoming("a")
    h.dial("b")
    assert of_type(bridge(h, "a", "b"), fx.SetOverlay) == []


@pytest.mark.parametrize(
    ("policy", "a_state"),
    [({"park_after_unbridge": "self"}, S.PARKED), ({}, S.HANGUP)],
)
@pytest.mark.parametrize("failure", ["busy", "timeout", "provider"])
def test_a_ringing_peer_that_never_answers_leaves_a_to_its_policy(
    policy: dict[str, object], a_state: LegState, failure: str
) -> None:
    h = Harness()
    h.incoming("a")
    h.dial("b")
    bridge(h, "a", "b", play_ringtone=True, **policy)
    if failure == "busy":
        out = h.event(ev.LegHungUp("b", HangupCause.USER_BUSY, HangupSource.CALLEE, "486"))
    elif failure == "timeout":
        out = h.fire("b", TimerKind.RING_TIMEOUT)
    else:
        out = h.event(ev.ProviderFailed("b", "dial", "refused"))
    assert h.state("b") is S.HANGUP
    assert h.state("a") is a_state
    assert fx.ClearOverlay("a", "ringback") in out
    assert h.m.leg("a").room_id is None


def test_bridge_with_a_queue_takes_its_head() -> None:
    h = Harness()
    for caller in ("q1", "q2"):
        h.incoming(caller)
        h.command(caller, cmd.Enqueue(queue_name="support"))
    h.incoming("agent")
    out = h.command("agent", cmd.parse_command("bridge", {"queue": "support"}))
    assert h.m.leg("agent").room_id == h.m.leg("q1").room_id is not None
    dequeued = hook(out, "q1", "call.dequeued")
    assert (dequeued["queue"], dequeued["reason"], dequeued["queue_position"]) == (
        "support",
        "bridged",
        1,
    )
    assert webhook_order(out)[-2:] == [("agent", "call.bridged"), ("q1", "call.bridged")]
    queue = h.m.queue(1, "support")
    assert queue is not None and queue.members == ("q2",)


@pytest.mark.parametrize("name", ["empty", "never-created"])
def test_bridge_with_an_empty_queue_fails_naming_the_queue(name: str) -> None:
    h = Harness()
    h.incoming("q1")
    h.command("q1", cmd.Enqueue(queue_name="empty"))
    h.command("q1", cmd.LeaveQueue())
    h.incoming("agent")
    before = h.m.snapshot()
    with pytest.raises(InvalidState) as refused:
        h.command("agent", cmd.Bridge(queue=name))
    assert refused.value.field == "queue"
    assert name in refused.value.detail
    assert h.m.snapshot() == before


@pytest.mark.parametrize(
    ("policy", "survivor_state"),
    [
        ({"park_after_unbridge": "self"}, S.PARKED),
        ({"hold_after_unbridge": True}, S.HELD),
        ({}, S.HANGUP),
    ],
)
@pytest.mark.parametrize("how", ["peer-hangs-up", "peer-unbridged", "peer-hung-up-by-app"])
def test_when_the_peer_leaves_the_survivor_follows_its_own_policy(
    policy: dict[str, object], survivor_state: LegState, how: str
) -> None:
    h = Harness()
    h.bridged_pair("survivor", "peer", **policy)
    if how == "peer-hangs-up":
        h.event(ev.LegHungUp("peer", HangupCause.NORMAL_CLEARING, HangupSource.CALLER))
    elif how == "peer-unbridged":
        h.command("peer", cmd.Unbridge())
        assert h.state("peer") is S.PARKED
    else:
        h.command("peer", cmd.Hangup())
    assert h.state("survivor") is survivor_state
    assert h.m.leg("survivor").room_id is None
    if survivor_state is S.HANGUP:
        survivor = h.m.leg("survivor")
        assert survivor.hangup_cause is HangupCause.NORMAL_CLEARING
        assert survivor.hangup_source is HangupSource.CALLEE  # callbridge ended it


def test_unbridge_parks_the_leg_and_only_the_peer_policy_applies() -> None:
    h = Harness()
    h.bridged_pair("a", "b", park_after_unbridge="self")  # a's policy; b has none
    out = h.command("a", cmd.Unbridge())
    assert h.state("a") is S.PARKED
    assert h.state("b") is S.HANGUP  # b follows its own (default) policy
    assert hooks(out, "a") == []
    assert hooks(out, "b") == ["call.hangup"]


def test_unbridge_of_a_leg_in_no_room_is_refused() -> None:
    h = Harness()
    h.incoming("a")
    before = h.m.snapshot()
    with pytest.raises(InvalidState):
        h.command("a", cmd.Unbridge())
    assert h.m.snapshot() == before


def test_a_conference_room_holds_three_legs_and_outlives_a_departure() -> None:
    h = Harness()
    for leg in ("a", "b", "c"):
        h.incoming(leg)
        h.command(leg, cmd.JoinConference(room_id="conf-7"))
    assert [leg.call_control_id for leg in h.m.legs_in_room("conf-7")] == ["a", "b", "c"]
    out = h.command("b", cmd.Hangup())
    assert of_type(out, fx.LeaveRoom) == [fx.LeaveRoom("b", "conf-7")]
    assert [leg.call_control_id for leg in h.m.legs_in_room("conf-7")] == ["a", "c"]
    assert (h.state("a"), h.state("c")) == (S.BRIDGED, S.BRIDGED)
    bridge(h, "a", "c")  # two conference members can leave it together for a private room
    assert h.m.room("conf-7") is None


def test_default_routing_answers_and_joins_the_conference() -> None:
    h = Harness()
    out = h.event(
        ev.LegInitiated(
            call_control_id="in",
            call_leg_id="l",
            call_session_id="s",
            org_id=1,
            connection_id="c",
            from_="+15550001111",
            to="+15550002222",
            webhook_url=None,
            default_conference=9,
        )
    )
    # No webhook URL: nobody to tell; the answer must come within the setup timeout.
    setup_timeout = TimerKey("in", TimerKind.SETUP_TIMEOUT)
    assert out == [fx.StartTimer(setup_timeout, 60.0), fx.AnswerCall("in")]
    h.event(ev.LegAnswered("in"))
    room = h.m.leg("in").room_id
    assert room is not None and room.startswith("conf:")  # named by the machine
    out = h.event(ev.MediaStarted("in", "PCMU/8000"))
    # Media is flowing: the wait for it (engine/machine/streams.py) is over.
    media_wait = TimerKey("in", TimerKind.MEDIA_WAIT)
    assert out == [fx.JoinRoom("in", room), fx.CancelTimer(media_wait)]
    assert h.state("in") is S.BRIDGED


def test_dial_with_link_to_and_bridge_on_answer_bridges_on_answer() -> None:
    h = Harness()
    h.incoming("a")
    h.dial("b", link_to="a", bridge_on_answer=True, bridge_intent=True)
    b = h.m.leg("b")
    assert b.call_session_id == "session-a"  # link_to shares the session
    assert b.from_ == h.m.leg("a").from_  # bridge_intent presents the linked call's from
    assert h.state("a") is S.ANSWERED
    out = h.event(ev.LegAnswered("b"))
    assert webhook_order(out) == [
        ("b", "call.answered"),
        ("b", "call.bridged"),
        ("a", "call.bridged"),
    ]
    assert h.m.leg("a").room_id == h.m.leg("b").room_id is not None


def test_bridge_on_answer_when_the_linked_call_is_gone_just_answers() -> None:
    h = Harness()
    h.incoming("a")
    h.dial("b", link_to="a", bridge_on_answer=True)
    h.command("a", cmd.Hangup())
    out = h.event(ev.LegAnswered("b"))
    assert hooks(out) == ["call.answered"]
    assert h.state("b") is S.ANSWERED


def test_dial_refuses_a_link_to_of_another_org_or_ended() -> None:
    h = Harness()
    h.incoming("foreign", org=OTHER_ORG)
    h.incoming("gone")
    h.command("gone", cmd.Hangup())
    with pytest.raises(NotFound) as missing:
        h.dial("b", link_to="foreign")
    assert missing.value.field == "link_to"
    with pytest.raises(CallEnded):
        h.dial("c", link_to="gone")
    assert not h.has("b") and not h.has("c")


def test_a_ringing_peer_whose_bridge_went_away_keeps_ringing_and_is_just_answered() -> None:
    h = Harness()
    h.incoming("a")
    h.dial("b")
    bridge(h, "a", "b", play_ringtone=True)
    out = h.command("a", cmd.Hangup())
    assert fx.ClearOverlay("a", "ringback") in out
    assert h.state("b") is S.DIALING and h.m.leg("b").pending_room_id is None
    out = h.event(ev.LegAnswered("b"))
    assert hooks(out) == ["call.answered"]
    assert h.state("b") is S.ANSWERED and h.m.leg("b").room_id is None


def test_rebridging_a_waiting_leg_abandons_its_ringing_peer() -> None:
    h = Harness()
    h.incoming("a")
    h.dial("b")
    bridge(h, "a", "b", play_ringtone=True)
    h.incoming("c")
    out = bridge(h, "a", "c")
    assert fx.ClearOverlay("a", "ringback") in out
    assert webhook_order(out) == [("a", "call.bridged"), ("c", "call.bridged")]
    assert h.m.leg("b").pending_room_id is None
    assert hooks(h.event(ev.LegAnswered("b"))) == ["call.answered"]
    assert h.m.leg("a").room_id == h.m.leg("c").room_id


def test_a_ringing_target_of_prevent_double_bridge_counts_as_bridged() -> None:
    h = Harness()
    h.incoming("a")
    h.dial("b")
    bridge(h, "a", "b")
    h.incoming("c")
    with pytest.raises(InvalidState):
        bridge(h, "c", "b", prevent_double_bridge=True)
    bridge(h, "c", "b")  # without it, c takes b over and a is left to its policy
    assert h.state("a") is S.HANGUP
    assert h.m.leg("b").pending_room_id == h.m.leg("c").room_id
