"""Setup timeout (incoming legs not answered in time) and legs whose provider call is gone
(``engine.machine.leg_setup``)."""

from __future__ import annotations

from engine.machine import commands as cmd
from engine.machine import effects as fx
from engine.machine import events as ev
from engine.machine.machine import CallMachine
from engine.machine.model import LegState, TimerKey, TimerKind
from tests.test_machine_harness import Harness, hook, hooks, of_type


def test_an_incoming_leg_nobody_answers_times_out_with_call_hangup() -> None:
    h = Harness()
    h.incoming("in", answer=False, media=False)
    assert h.timers("in") == {TimerKind.SETUP_TIMEOUT}
    assert fx.StartTimer(TimerKey("in", TimerKind.SETUP_TIMEOUT), 60.0) in h.log
    h.tick(60)
    out = h.fire("in", TimerKind.SETUP_TIMEOUT)
    assert h.state("in") is LegState.HANGUP
    assert of_type(out, fx.HangupCall) == [fx.HangupCall("in")]
    payload = hook(out, "in", "call.hangup")
    assert payload["hangup_cause"] == "timeout"
    assert payload["hangup_source"] == "callee"
    assert payload["callbridge_reason"] == "setup_timeout"
    assert "initiated" in str(payload["callbridge_reason_detail"])


def test_an_answer_the_provider_never_confirms_times_out_too() -> None:
    h = Harness()
    h.incoming("in", answer=False, media=False)
    h.command("in", cmd.Answer())
    assert h.state("in") is LegState.ANSWERING
    out = h.fire("in", TimerKind.SETUP_TIMEOUT)
    assert h.state("in") is LegState.HANGUP
    assert of_type(out, fx.HangupCall) == [fx.HangupCall("in")]
    assert "answering" in str(hook(out, "in", "call.hangup")["callbridge_reason_detail"])


def test_the_answer_cancels_the_setup_timeout() -> None:
    h = Harness()
    h.incoming("in", answer=False, media=False)
    h.command("in", cmd.Answer())
    out = h.event(ev.LegAnswered("in"))
    assert fx.CancelTimer(TimerKey("in", TimerKind.SETUP_TIMEOUT)) in out
    assert TimerKind.SETUP_TIMEOUT not in h.timers("in")
    # A firing that raced the cancel changes nothing.
    assert h.event(ev.TimerFired(TimerKey("in", TimerKind.SETUP_TIMEOUT))) == []
    assert h.state("in") is LegState.ANSWERED


def test_a_rejected_leg_leaves_no_setup_timer() -> None:
    h = Harness()
    h.incoming("in", answer=False, media=False)
    out = h.command("in", cmd.parse_command("reject", {"cause": "USER_BUSY"}))
    assert fx.CancelTimer(TimerKey("in", TimerKind.SETUP_TIMEOUT)) in out
    assert h.timers("in") == set()


def test_the_setup_timeout_is_configurable_and_can_be_off() -> None:
    machine = CallMachine(setup_timeout_s=2.5)
    initiated = ev.LegInitiated(
        call_control_id="in", call_leg_id="l", call_session_id="s", org_id=1,
        connection_id="c", from_="+15550001111", to="+15550002222", webhook_url="https://x/h",
    )  # fmt: skip
    out = machine.handle_event(initiated, 0.0)
    assert fx.StartTimer(TimerKey("in", TimerKind.SETUP_TIMEOUT), 2.5) in out
    off = CallMachine(setup_timeout_s=None)
    assert of_type(off.handle_event(initiated, 0.0), fx.StartTimer) == []


def test_dialled_legs_have_no_setup_timer() -> None:
    h = Harness()
    h.dial("out")
    assert h.timers("out") == {TimerKind.RING_TIMEOUT}


def test_a_leg_the_provider_says_is_gone_ends_with_call_hangup() -> None:
    h = Harness()
    a, b = h.bridged_pair()
    out = h.event(ev.ProviderCallGone(a, "is_alive false"))
    assert h.state(a) is LegState.HANGUP
    payload = hook(out, a, "call.hangup")
    assert payload["hangup_cause"] == "unspecified"
    assert payload["hangup_source"] == "unknown"
    assert payload["callbridge_reason"] == "provider_call_gone"
    assert payload["callbridge_reason_detail"] == "is_alive false"
    # Best effort at the provider (it answers "already ended"); the peer follows its policy.
    assert fx.HangupCall(a) in out
    assert hooks(out, b) == ["call.hangup"]


def test_provider_call_gone_for_an_ended_leg_changes_nothing() -> None:
    h = Harness()
    h.incoming("in")
    h.command("in", cmd.Hangup())
    before = h.m.snapshot()
    assert h.event(ev.ProviderCallGone("in", "gone")) == []
    assert h.m.snapshot() == before
