"""Every row of the transition table, every refused command, every ignored event.

For each state a scripted path brings leg "x" there; for each trigger a driver makes exactly that
trigger happen to "x". Rows of ``TRANSITIONS`` must land in their target state; pairs missing
from the table must be refused (commands) or ignored (events) with the machine unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from engine.errors import CallbridgeError, InvalidState
from engine.machine import commands as cmd
from engine.machine import events as ev
from engine.machine.model import (
    CallEnded,
    HangupCause,
    HangupSource,
    LegState,
    RecordingOptions,
    RejectCause,
    TimerKind,
)
from engine.machine.transitions import TRANSITIONS, Trigger
from tests.test_machine_harness import Harness, key

S, T = LegState, Trigger
X = "x"


def reach(h: Harness, state: LegState, **policy: object) -> None:
    """Bring leg X to `state`. `policy` goes into the bridge command that X sends, if any."""
    if state is S.INITIATED:
        h.incoming(X, answer=False, media=False)
    elif state is S.DIALING:
        h.dial(X)
    elif state is S.ANSWERING:
        h.incoming(X, answer=False, media=False)
        h.command(X, cmd.Answer())
    elif state is S.ANSWERED:
        h.incoming(X)
    elif state is S.BRIDGING:
        h.incoming(X)
        h.dial("ring")
        h.command(X, cmd.Bridge(call_control_id="ring", **policy))  # type: ignore[arg-type]
    elif state is S.BRIDGED:
        h.incoming(X)
        h.incoming("peer")
        h.command(X, cmd.Bridge(call_control_id="peer", **policy))  # type: ignore[arg-type]
    elif state is S.PARKED:
        reach(h, S.BRIDGED)
        h.command(X, cmd.Unbridge())
    elif state is S.HELD:
        reach(h, S.BRIDGED, hold_after_unbridge=True)
        h.command("peer", cmd.Hangup())
    elif state is S.QUEUED:
        h.incoming(X)
        h.command(X, cmd.Enqueue(queue_name="q", max_wait_time_secs=60))
    elif state is S.HANGUP:
        h.incoming(X)
        h.command(X, cmd.Hangup())
    assert h.state(X) is state


Action = Callable[[], object]


def _other_bridges_x(h: Harness) -> Action:
    h.incoming("other")
    return lambda: h.command("other", cmd.Bridge(call_control_id=X))


def _x_bridges(h: Harness, *, ringing: bool) -> Action:
    h.dial("other") if ringing else h.incoming("other")
    return lambda: h.command(X, cmd.Bridge(call_control_id="other"))


def _peer_leaves(h: Harness) -> Action:
    peer = "peer" if h.has("peer") else "ring"
    return lambda: h.event(ev.LegHungUp(peer, HangupCause.NORMAL_CLEARING, HangupSource.CALLER))


def _fire(h: Harness, kind: TimerKind) -> Action:
    return lambda: h.event(ev.TimerFired(key(X, kind)))


def prepare(h: Harness, trigger: Trigger) -> Action:
    """Set up what `trigger` needs and return the action that makes it happen to X."""
    commands: dict[Trigger, cmd.Command] = {
        T.ANSWER: cmd.Answer(),
        T.REJECT: cmd.Reject(cause=RejectCause.USER_BUSY),
        T.HANGUP: cmd.Hangup(),
        T.UNBRIDGE: cmd.Unbridge(),
        T.ENQUEUE: cmd.Enqueue(queue_name="q2"),
        T.LEAVE_QUEUE: cmd.LeaveQueue(),
        T.JOIN_CONFERENCE: cmd.JoinConference(room_id="conf"),
        T.MEDIA_COMMAND: cmd.SendDtmf(digits="1"),
        T.CLIENT_STATE_UPDATE: cmd.ClientStateUpdate(client_state="aGk="),
    }
    if trigger in commands:
        return lambda: h.command(X, commands[trigger])
    hung_up = ev.LegHungUp(X, HangupCause.NORMAL_CLEARING, HangupSource.CALLER)
    drivers: dict[Trigger, Callable[[], Action]] = {
        T.BRIDGE: lambda: _x_bridges(h, ringing=False),
        T.BRIDGE_TO_RINGING: lambda: _x_bridges(h, ringing=True),
        T.BRIDGE_TARGET: lambda: _other_bridges_x(h),
        T.LEG_ANSWERED: lambda: lambda: h.event(ev.LegAnswered(X)),
        T.LEG_HUNG_UP: lambda: lambda: h.event(hung_up),
        T.PROVIDER_FAILED: lambda: lambda: h.event(ev.ProviderFailed(X, "answer", "boom")),
        T.RING_TIMEOUT: lambda: _fire(h, TimerKind.RING_TIMEOUT),
        T.TIME_LIMIT: lambda: _fire(h, TimerKind.TIME_LIMIT),
        T.QUEUE_TIMEOUT: lambda: _fire(h, TimerKind.QUEUE_WAIT),
        T.SETUP_TIMEOUT: lambda: _fire(h, TimerKind.SETUP_TIMEOUT),
        T.PEER_ANSWERED: lambda: lambda: h.event(ev.LegAnswered("ring")),
        T.PARK_AFTER_UNBRIDGE: lambda: _peer_leaves(h),
        T.HOLD_AFTER_UNBRIDGE: lambda: _peer_leaves(h),
        T.HANGUP_AFTER_UNBRIDGE: lambda: _peer_leaves(h),
    }
    return drivers[trigger]()


POLICY = {
    T.PARK_AFTER_UNBRIDGE: {"park_after_unbridge": True},
    T.HOLD_AFTER_UNBRIDGE: {"hold_after_unbridge": True},
}
ROWS = [(s, t, target) for (s, t), target in TRANSITIONS.items() if s is not None]


def _real_timer_fire(h: Harness, trigger: Trigger) -> Action | None:
    """Timers in the rows must be the leg's own pending timer, not a made-up key."""
    kinds = {
        T.RING_TIMEOUT: TimerKind.RING_TIMEOUT,
        T.TIME_LIMIT: TimerKind.TIME_LIMIT,
        T.QUEUE_TIMEOUT: TimerKind.QUEUE_WAIT,
        T.SETUP_TIMEOUT: TimerKind.SETUP_TIMEOUT,
    }
    if trigger not in kinds:
        return None
    return lambda: h.fire(X, kinds[trigger])


@pytest.mark.parametrize(
    ("state", "trigger", "target"), ROWS, ids=[f"{s.value}-{t.name}" for s, t, _ in ROWS]
)
def test_every_row_of_the_table(state: LegState, trigger: Trigger, target: LegState) -> None:
    h = Harness()
    reach(h, state, **POLICY.get(trigger, {}))
    action = _real_timer_fire(h, trigger) or prepare(h, trigger)
    action()
    assert h.state(X) is target


def test_creation_rows() -> None:
    h = Harness()
    h.incoming("in", answer=False, media=False)
    h.dial("out")
    assert h.state("in") is TRANSITIONS[(None, T.LEG_INITIATED)]
    assert h.state("out") is TRANSITIONS[(None, T.DIAL)]


COMMAND_TRIGGERS = (
    T.ANSWER,
    T.REJECT,
    T.HANGUP,
    T.BRIDGE,
    T.BRIDGE_TO_RINGING,
    T.BRIDGE_TARGET,
    T.UNBRIDGE,
    T.ENQUEUE,
    T.LEAVE_QUEUE,
    T.JOIN_CONFERENCE,
    T.MEDIA_COMMAND,
    T.CLIENT_STATE_UPDATE,
)
REFUSED = [(s, t) for s in S for t in COMMAND_TRIGGERS if (s, t) not in TRANSITIONS]


@pytest.mark.parametrize(
    ("state", "trigger"), REFUSED, ids=[f"{s.value}-{t.name}" for s, t in REFUSED]
)
def test_every_illegal_command_is_refused_and_changes_nothing(
    state: LegState, trigger: Trigger
) -> None:
    h = Harness()
    reach(h, state)
    action = prepare(h, trigger)
    before = h.m.snapshot()
    expected = CallEnded if state is S.HANGUP else InvalidState
    with pytest.raises(expected) as refused:
        action()
    assert h.m.snapshot() == before
    if state is S.HANGUP:
        assert (refused.value.status, refused.value.code) == (422, "90018")


MEDIA_COMMANDS: list[cmd.Command] = [
    cmd.SendDtmf(digits="1"),
    cmd.PlaybackStart(audio_url="file:///tmp/a.wav"),
    cmd.PlaybackStop(),
    cmd.RecordStart(options=RecordingOptions()),
    cmd.RecordStop(),
]
MEDIA_REFUSED = [
    (s, c) for s in S for c in MEDIA_COMMANDS if (s, T.MEDIA_COMMAND) not in TRANSITIONS
]


@pytest.mark.parametrize(
    ("state", "command"),
    MEDIA_REFUSED,
    ids=[f"{s.value}-{type(c).__name__}" for s, c in MEDIA_REFUSED],
)
def test_every_media_command_is_refused_where_media_commands_are(
    state: LegState, command: cmd.Command
) -> None:
    h = Harness()
    reach(h, state)
    before = h.m.snapshot()
    with pytest.raises(InvalidState):
        h.command(X, command)
    assert h.m.snapshot() == before


EVENT_TRIGGERS = (
    T.LEG_ANSWERED,
    T.LEG_HUNG_UP,
    T.PROVIDER_FAILED,
    T.RING_TIMEOUT,
    T.TIME_LIMIT,
    T.QUEUE_TIMEOUT,
    T.SETUP_TIMEOUT,
)
IGNORED = [(s, t) for s in S for t in EVENT_TRIGGERS if (s, t) not in TRANSITIONS]


@pytest.mark.parametrize(
    ("state", "trigger"), IGNORED, ids=[f"{s.value}-{t.name}" for s, t in IGNORED]
)
def test_events_that_do_not_fit_are_ignored(state: LegState, trigger: Trigger) -> None:
    h = Harness()
    reach(h, state)
    action = prepare(h, trigger)
    before = h.m.snapshot()
    assert action() == []
    assert h.m.snapshot() == before


def test_every_trigger_is_used_and_every_state_reachable() -> None:
    used = {t for _, t in TRANSITIONS}
    assert used == set(Trigger)
    targets = set(TRANSITIONS.values())
    assert targets == set(LegState)
    assert not [t for (s, t) in TRANSITIONS if s is S.HANGUP], "hangup is final"


def test_an_unknown_leg_is_not_found() -> None:
    h = Harness()
    with pytest.raises(CallbridgeError) as refused:
        h.command("nobody", cmd.Hangup())
    assert refused.value.status == 404
