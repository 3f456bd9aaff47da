"""A leg's life outside bridges: answer, reject, hangup, timers, queues, command_id,
client_state, webhook payloads, status, organizations, and the core's purity."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from engine.errors import InvalidState, NotFound
from engine.machine import commands as cmd
from engine.machine import effects as fx
from engine.machine import events as ev
from engine.machine.model import (
    CallEnded,
    DtmfSource,
    HangupCause,
    HangupSource,
    LegState,
    NewLegIds,
    RejectCause,
    TimerKind,
)
from tests.test_machine_harness import (
    HOOK,
    ORG,
    OTHER_ORG,
    T0,
    Harness,
    hook,
    hooks,
    key,
    of_type,
    webhook_order,
)

S = LegState


def test_answer_is_only_for_a_ringing_incoming_leg() -> None:
    h = Harness()
    h.incoming("in", answer=False)
    out = h.command("in", cmd.Answer())
    assert out == [fx.AnswerCall("in")]
    assert h.state("in") is S.ANSWERING
    for leg in ("in", h.dial("out")):
        with pytest.raises(InvalidState):
            h.command(leg, cmd.Answer())
    out = h.event(ev.LegAnswered("in"))
    assert hooks(out) == ["call.answered"]
    assert h.event(ev.LegAnswered("in")) == []  # a duplicate webhook


def test_a_stream_on_a_leg_still_answering_means_it_was_answered() -> None:
    # The provider's answer confirmation can be lost (a webhook refused while the store was
    # unreachable, and not sent again): the stream callbridge asked for in its answer flows
    # only on an answered call, so its start stands for the confirmation.
    h = Harness()
    h.incoming("in", answer=False, media=False)
    h.command("in", cmd.Answer())
    out = h.event(ev.MediaStarted("in", "PCMU/8000", None))
    assert hooks(out) == ["call.answered", "streaming.started"]
    assert h.state("in") is S.ANSWERED
    assert TimerKind.SETUP_TIMEOUT not in h.timers("in")
    assert TimerKind.TIME_LIMIT in h.timers("in")
    assert h.event(ev.LegAnswered("in")) == []  # the late confirmation changes nothing


def test_answer_may_replace_the_webhook_url() -> None:
    h = Harness()
    h.incoming("in", answer=False)
    h.command("in", cmd.Answer(webhook_url="https://other.example/hook"))
    (answered,) = of_type(h.event(ev.LegAnswered("in")), fx.EmitWebhook)
    assert answered.webhook_url == "https://other.example/hook"


@pytest.mark.parametrize(
    ("cause", "hangup_cause", "sip"),
    [
        (RejectCause.CALL_REJECTED, "call_rejected", "603"),
        (RejectCause.USER_BUSY, "user_busy", "486"),
        (RejectCause.NOT_FOUND, "not_found", "404"),
        (RejectCause.TEMPORARILY_UNAVAILABLE, "unspecified", "480"),
    ],
)
def test_reject_before_answer(cause: RejectCause, hangup_cause: str, sip: str) -> None:
    h = Harness()
    h.incoming("in", answer=False)
    out = h.command("in", cmd.Reject(cause=cause))
    assert out[0] == fx.RejectCall("in", cause)
    payload = hook(out, "in", "call.hangup")
    assert (payload["hangup_cause"], payload["sip_hangup_cause"]) == (hangup_cause, sip)
    assert payload["hangup_source"] == "callee"
    assert fx.HangupCall("in") not in out


def test_hanging_up_an_ended_leg_is_90018() -> None:
    h = Harness()
    h.incoming("a")
    h.command("a", cmd.Hangup())
    with pytest.raises(CallEnded) as refused:
        h.command("a", cmd.Hangup())
    error = refused.value
    assert (error.status, error.code, error.title) == (422, "90018", "Call has already ended")


def test_hangup_payload_and_effects() -> None:
    h = Harness()
    h.incoming("a")
    h.tick(12.5)
    out = h.command("a", cmd.Hangup(client_state="Ynll"))
    assert out[0] == fx.HangupCall("a")
    assert fx.CancelTimer(key("a", TimerKind.TIME_LIMIT)) in out
    payload = hook(out, "a", "call.hangup")
    assert payload == {
        "call_control_id": "a",
        "call_leg_id": "leg-a",
        "call_session_id": "session-a",
        "connection_id": "conn-1",
        "client_state": "Ynll",
        "from": "+15550001111",
        "to": "+15550002222",
        "direction": "incoming",
        "state": "hangup",
        "start_time": "2023-11-14T22:13:20.000000Z",
        "hangup_cause": "normal_clearing",
        "hangup_source": "callee",
        "sip_hangup_cause": "unspecified",
    }
    (webhook,) = of_type(out, fx.EmitWebhook)
    assert (webhook.webhook_url, webhook.occurred_at) == (HOOK, T0 + 12.5)


def test_hanging_up_our_unanswered_outgoing_call_cancels_it() -> None:
    h = Harness()
    h.dial("b")
    payload = hook(h.command("b", cmd.Hangup()), "b", "call.hangup")
    assert (payload["hangup_cause"], payload["hangup_source"]) == ("originator_cancel", "caller")


def test_a_remote_hangup_reports_its_cause_and_source() -> None:
    h = Harness()
    h.incoming("a")
    event = ev.LegHungUp("a", HangupCause.NORMAL_CLEARING, HangupSource.CALLER, "200")
    out = h.event(event)
    assert fx.HangupCall("a") not in out  # the provider ended it already
    payload = hook(out, "a", "call.hangup")
    assert (payload["hangup_source"], payload["sip_hangup_cause"]) == ("caller", "200")
    assert h.event(event) == []  # a duplicate


def test_a_failed_provider_call_ends_the_leg_clearly() -> None:
    h = Harness()
    h.incoming("a", answer=False)
    h.command("a", cmd.Answer())
    out = h.event(ev.ProviderFailed("a", "answer", "HTTP 500"))
    assert out[0] == fx.HangupCall("a")
    payload = hook(out, "a", "call.hangup")
    assert (payload["hangup_cause"], payload["hangup_source"]) == ("unspecified", "unknown")
    assert not h.m.status("a", ORG, h.now).is_alive


@pytest.mark.parametrize(
    ("answered", "kind", "cause"),
    [(False, TimerKind.RING_TIMEOUT, "timeout"), (True, TimerKind.TIME_LIMIT, "time_limit")],
)
def test_dial_timers_end_legs(answered: bool, kind: TimerKind, cause: str) -> None:
    h = Harness()
    h.dial("b", answer=answered, timeout_secs=20, time_limit_secs=60)
    (started,) = [e for e in h.log if isinstance(e, fx.StartTimer) and e.key.kind is kind]
    assert started.delay_s == (60 if answered else 20)
    out = h.fire("b", kind)
    assert out[0] == fx.HangupCall("b")
    assert hook(out, "b", "call.hangup")["hangup_cause"] == cause


def test_answer_cancels_the_ring_timer_and_a_late_firing_is_ignored() -> None:
    h = Harness()
    h.dial("b")
    out = h.event(ev.LegAnswered("b"))
    assert fx.CancelTimer(key("b", TimerKind.RING_TIMEOUT)) in out
    before = h.m.snapshot()
    assert h.event(ev.TimerFired(key("b", TimerKind.RING_TIMEOUT))) == []
    assert h.m.snapshot() == before


def test_a_repeated_command_id_is_carried_out_once_within_60_seconds() -> None:
    h = Harness()
    h.incoming("a")
    h.incoming("b")
    dtmf = cmd.SendDtmf(digits="1", command_id="c-1")
    assert h.command("a", dtmf) != []
    h.tick(59.9)
    assert h.command("a", dtmf) == []
    assert h.command("b", dtmf) != []  # the window is per leg
    h.tick(0.1)
    assert h.command("a", dtmf) != []


def test_a_refused_command_id_is_not_remembered_and_a_repeated_hangup_is_quiet() -> None:
    h = Harness()
    h.incoming("a")
    with pytest.raises(InvalidState):
        h.command("a", cmd.LeaveQueue(command_id="x"))
    h.command("a", cmd.Enqueue(queue_name="q"))
    assert hooks(h.command("a", cmd.LeaveQueue(command_id="x"))) == ["call.dequeued"]
    hangup = cmd.Hangup(command_id="bye")
    assert hooks(h.command("a", hangup)) == ["call.hangup"]
    assert h.command("a", hangup) == []  # not 90018: it is the same command again


def test_a_repeated_dial_command_id_returns_the_first_leg() -> None:
    h = Harness()
    h.dial("b", command_id="d-1")
    body = {"connection_id": "c", "from": "+15550003333", "to": "+15550004444"}
    result = h.m.dial(
        NewLegIds("b2", "l", "s"),
        ORG,
        cmd.parse_dial(body | {"command_id": "d-1"}),
        h.now,
    )
    assert (result.duplicate, result.leg.call_control_id, result.effects) == (True, "b", [])
    assert not h.has("b2")


def test_client_state_is_echoed_on_every_later_webhook_until_updated() -> None:
    h = Harness()
    h.incoming("a", answer=False)
    h.command("a", cmd.Answer(client_state="b25l"))
    h.incoming("b")
    out = h.event(ev.LegAnswered("a"))
    assert hook(out, "a", "call.answered")["client_state"] == "b25l"
    out = h.command("a", cmd.Bridge(call_control_id="b", client_state="dHdv"))
    assert hook(out, "a", "call.bridged")["client_state"] == "dHdv"
    assert hook(out, "b", "call.bridged")["client_state"] is None  # B's own
    assert h.command("a", cmd.ClientStateUpdate(client_state="dGhyZWU=")) == []
    out = h.event(ev.DtmfReceived("a", "1", DtmfSource.IN_BAND))
    assert hook(out, "a", "call.dtmf.received")["client_state"] == "dGhyZWU="


def test_enqueue_positions_leave_timeout_and_hangup() -> None:
    h = Harness()
    for caller in ("q1", "q2", "q3"):
        h.incoming(caller)
    first = h.command("q1", cmd.Enqueue(queue_name="sales", max_wait_time_secs=30))
    second = h.command("q2", cmd.Enqueue(queue_name="sales"))
    h.command("q3", cmd.Enqueue(queue_name="sales"))
    assert hook(first, "q1", "call.enqueued")["current_position"] == 1
    assert hook(second, "q2", "call.enqueued")["current_position"] == 2
    h.tick(10)
    out = h.command("q2", cmd.LeaveQueue())
    dequeued = hook(out, "q2", "call.dequeued")
    assert (dequeued["reason"], dequeued["queue_position"], dequeued["wait_time_secs"]) == (
        "leave",
        2,
        10,
    )
    assert h.state("q2") is S.PARKED
    out = h.fire("q1", TimerKind.QUEUE_WAIT)
    assert hook(out, "q1", "call.dequeued")["reason"] == "timeout"
    assert h.state("q1") is S.PARKED
    out = h.event(ev.LegHungUp("q3", HangupCause.NORMAL_CLEARING, HangupSource.CALLER))
    assert webhook_order(out) == [("q3", "call.dequeued"), ("q3", "call.hangup")]
    assert h.m.queue(ORG, "sales") is None  # a queue exists while it holds calls


def test_a_full_queue_refuses_and_queues_are_per_organization() -> None:
    h = Harness()
    h.incoming("q1")
    h.command("q1", cmd.Enqueue(queue_name="tiny", max_size=1))
    h.incoming("q2")
    before = h.m.snapshot()
    with pytest.raises(InvalidState) as refused:
        h.command("q2", cmd.Enqueue(queue_name="tiny"))
    assert refused.value.field == "queue_name"
    assert h.m.snapshot() == before
    h.incoming("other", org=OTHER_ORG)
    h.command("other", cmd.Enqueue(queue_name="tiny"), org=OTHER_ORG)
    assert h.state("other") is S.QUEUED


def test_enqueueing_a_bridged_leg_leaves_its_peer_to_its_policy() -> None:
    h = Harness()
    h.bridged_pair("a", "b")
    h.command("b", cmd.Enqueue(queue_name="q"))
    assert (h.state("a"), h.state("b")) == (S.HANGUP, S.QUEUED)


def test_status_reports_life_and_duration() -> None:
    h = Harness()
    h.incoming("a")
    h.tick(42.7)
    status = h.m.status("a", ORG, h.now)
    assert (status.is_alive, status.call_duration, status.state) == (True, 42, "answered")
    h.command("a", cmd.Hangup())
    h.tick(100)
    status = h.m.status("a", ORG, h.now)
    assert (status.is_alive, status.call_duration, status.end_time) == (False, 42, T0 + 42.7)


def test_a_leg_of_another_organization_is_not_found() -> None:
    h = Harness()
    h.incoming("a")
    with pytest.raises(NotFound):
        h.command("a", cmd.Hangup(), org=OTHER_ORG)
    with pytest.raises(NotFound):
        h.m.status("a", OTHER_ORG, h.now)
    assert h.state("a") is S.ANSWERED


def test_ended_legs_are_forgotten_after_the_retention() -> None:
    h = Harness()
    h.incoming("a")
    h.command("a", cmd.Hangup())
    assert h.m.prune(h.now + 10, retention_s=60) == []
    assert h.m.prune(h.now + 60, retention_s=60) == ["a"]
    with pytest.raises(NotFound):
        h.command("a", cmd.Hangup())


def test_a_retried_initiated_webhook_is_ignored() -> None:
    h = Harness()
    h.incoming("a", answer=False)
    before = h.m.snapshot()
    assert (
        h.event(
            ev.LegInitiated(
                call_control_id="a",
                call_leg_id="x",
                call_session_id="y",
                org_id=ORG,
                connection_id="c",
                from_="+1",
                to="+2",
            )
        )
        == []
    )
    assert h.m.snapshot() == before


# The machine package's pure modules (engine/machine/; command_body.py checks URLs through
# engine/url_policy.py, and live_changes.py is the store's view of an input).
CORE = ["machine", "core", "actions", "legs", "media", "queues", "leg_setup", "streams"]
CORE += ["transitions", "model", "events", "effects", "commands", "diagram"]
CORE += ["conferences", "conference_events", "conference_commands", "conference_recording"]
CORE += ["app_streams", "streaming_commands", "playback_rooms"]
FORBIDDEN = {"asyncio", "aiohttp", "socket", "time", "random", "uuid", "secrets", "os", "threading"}


@pytest.mark.parametrize("module", CORE)
def test_the_core_does_no_io_and_names_no_provider(module: str) -> None:
    path = Path(__file__).parent.parent / "engine" / "machine" / f"{module}.py"
    source = path.read_text()
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    roots = {name.split(".")[0] for name in imported}
    assert not roots & FORBIDDEN
    assert not {name for name in imported if name.startswith(("adapters", "media"))}
    assert "telnyx" not in source.lower() and "twilio" not in source.lower()
    assert "datetime.now" not in source and "time.time" not in source
