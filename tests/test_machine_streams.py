"""No answered leg without media (engine/machine/streams.py), table by table, with a fake clock."""

from __future__ import annotations

import pytest

from engine.machine import commands as cmd
from engine.machine import effects as fx
from engine.machine import events as ev
from engine.machine.model import LegState, TimerKind
from engine.machine.streams import RESTART_WINDOW_S
from tests.test_machine_harness import Harness, hook, hooks, of_type

WAIT = TimerKind.MEDIA_WAIT


def restarts(effects: list[fx.Effect]) -> list[str]:
    return [e.call_control_id for e in of_type(effects, fx.RestartMedia)]


def test_answer_starts_the_wait_and_media_ends_it() -> None:
    h = Harness()
    h.incoming("a", media=False)
    assert WAIT in h.timers("a")
    h.event(ev.MediaStarted("a", "PCMU/8000"))
    assert WAIT not in h.timers("a")


def test_an_unanswered_leg_waits_for_nothing() -> None:
    h = Harness()
    h.incoming("a", answer=False, media=False)
    assert WAIT not in h.timers("a")


def test_no_media_asks_for_a_new_stream_once_then_hangs_up_with_a_reason() -> None:
    h = Harness()
    h.incoming("a", media=False)
    h.tick(5)
    out = h.fire("a", WAIT)
    assert restarts(out) == ["a"]
    assert h.state("a") is LegState.ANSWERED and WAIT in h.timers("a")
    h.tick(5)
    out = h.fire("a", WAIT)
    assert of_type(out, fx.HangupCall) == [fx.HangupCall("a")]
    payload = hook(out, "a", "call.hangup")
    assert payload["hangup_cause"] == "unspecified"
    assert payload["callbridge_reason"] == "media_timeout"
    assert h.state("a") is LegState.HANGUP


@pytest.mark.parametrize("reason", ["stream_failed", "unsupported_codec"])
def test_a_failed_stream_is_retried_then_ends_the_leg(reason: str) -> None:
    h = Harness()
    h.incoming("a", media=False)
    out = h.event(ev.MediaFailed("a", reason, "detail text"))
    assert restarts(out) == ["a"]
    out = h.event(ev.MediaFailed("a", reason, "detail text"))
    assert hooks(out, "a") == ["call.hangup"]
    payload = hook(out, "a", "call.hangup")
    assert payload["callbridge_reason"] == reason
    assert payload["callbridge_reason_detail"] == "detail text"


def test_a_retried_stream_that_starts_keeps_the_leg() -> None:
    h = Harness()
    h.incoming("a", media=False)
    h.event(ev.MediaFailed("a", "stream_failed"))
    h.event(ev.MediaStarted("a", "PCMU/8000"))
    assert WAIT not in h.timers("a")
    assert h.state("a") is LegState.ANSWERED


def test_a_drop_waits_first_so_a_reconnect_costs_nothing() -> None:
    h = Harness()
    h.incoming("a")
    out = h.event(ev.MediaStopped("a"))
    assert WAIT in h.timers("a") and restarts(out) == []
    out = h.event(ev.MediaStarted("a", "PCMU/8000"))
    assert WAIT not in h.timers("a") and restarts(out) == []


def test_a_stream_that_flaps_is_not_restarted_forever() -> None:
    h = Harness()
    h.incoming("a")
    h.event(ev.MediaStopped("a"))
    assert restarts(h.fire("a", WAIT)) == ["a"]
    h.event(ev.MediaStarted("a", "PCMU/8000"))
    h.tick(1)
    h.event(ev.MediaStopped("a"))
    out = h.fire("a", WAIT)
    assert restarts(out) == [] and h.state("a") is LegState.HANGUP


def test_a_drop_long_after_the_last_restart_gets_its_own_retry() -> None:
    h = Harness()
    h.incoming("a")
    h.event(ev.MediaStopped("a"))
    h.fire("a", WAIT)
    h.event(ev.MediaStarted("a", "PCMU/8000"))
    h.tick(RESTART_WINDOW_S + 1)
    h.event(ev.MediaStopped("a"))
    assert restarts(h.fire("a", WAIT)) == ["a"]
    assert h.state("a") is LegState.ANSWERED


def test_bridged_legs_are_watched_too_and_the_peer_follows_its_rules() -> None:
    h = Harness()
    h.incoming("a")
    h.incoming("b")
    h.command("a", cmd.Bridge(call_control_id="b"))
    assert h.state("a") is LegState.BRIDGED
    h.event(ev.MediaStopped("a"))
    h.fire("a", WAIT)
    h.tick(1)
    out = h.fire("a", WAIT)
    assert h.state("a") is LegState.HANGUP
    # b was bridged without park_after_unbridge: the Telnyx default hangs it up too.
    assert "call.hangup" in hooks(out, "b")


def test_a_hangup_cancels_the_wait() -> None:
    h = Harness()
    h.incoming("a", media=False)
    out = h.command("a", cmd.Hangup())
    assert any(isinstance(e, fx.CancelTimer) and e.key.kind is WAIT for e in out)


def test_failures_after_the_leg_ended_change_nothing() -> None:
    h = Harness()
    h.incoming("a", media=False)
    h.command("a", cmd.Hangup())
    assert h.event(ev.MediaFailed("a", "stream_failed")) == []
