"""A driver for CallMachine tests: builds legs in any state with a fake clock, no event loop.

The other test_machine_* modules import ``Harness``; the tests here check the driver itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

from engine.machine import commands as cmd
from engine.machine import effects as fx
from engine.machine import events as ev
from engine.machine.machine import CallMachine
from engine.machine.model import LegState, NewLegIds, TimerKey, TimerKind

ORG = 1
OTHER_ORG = 2
HOOK = "https://app.example.com/hooks"
T0 = 1_700_000_000.0

E = TypeVar("E")


def of_type(effects: Iterable[fx.Effect], kind: type[E]) -> list[E]:
    return [e for e in effects if isinstance(e, kind)]


def hooks(effects: Iterable[fx.Effect], leg: str | None = None) -> list[str]:
    """Event types of the webhooks in `effects` (of one leg when given), in order."""
    return [
        e.event_type
        for e in of_type(effects, fx.EmitWebhook)
        if leg is None or e.call_control_id == leg
    ]


def hook(effects: Iterable[fx.Effect], leg: str, event_type: str) -> dict[str, object]:
    """The payload of the one `event_type` webhook of `leg`."""
    found = [
        e.payload
        for e in of_type(effects, fx.EmitWebhook)
        if e.call_control_id == leg and e.event_type == event_type
    ]
    assert len(found) == 1, f"{event_type} for {leg}: {len(found)} found"
    return found[0]


class Harness:
    def __init__(self) -> None:
        self.m = CallMachine()
        self.now = T0
        self.log: list[fx.Effect] = []

    def tick(self, seconds: float) -> None:
        self.now += seconds

    def event(self, event: ev.Event) -> list[fx.Effect]:
        out = self.m.handle_event(event, self.now)
        self.log += out
        return out

    def command(self, leg: str, command: cmd.Command, org: int = ORG) -> list[fx.Effect]:
        out = self.m.handle_command(leg, org, command, self.now)
        self.log += out
        return out

    def has(self, leg: str) -> bool:
        return any(known.call_control_id == leg for known in self.m.snapshot().legs)

    def state(self, leg: str) -> LegState:
        return self.m.leg(leg).state

    def fire(self, leg: str, kind: TimerKind) -> list[fx.Effect]:
        """Fire the leg's pending timer of `kind` (it must exist)."""
        (key,) = [k for k in self.m.leg(leg).timers if k.kind is kind]
        return self.event(ev.TimerFired(key))

    def timers(self, leg: str) -> set[TimerKind]:
        return {k.kind for k in self.m.leg(leg).timers}

    # Building legs.
    def incoming(
        self,
        leg: str,
        *,
        answer: bool = True,
        media: bool = True,
        webhook_url: str | None = HOOK,
        org: int = ORG,
        default_conference: int | None = None,
    ) -> str:
        self.event(
            ev.LegInitiated(
                call_control_id=leg,
                call_leg_id=f"leg-{leg}",
                call_session_id=f"session-{leg}",
                org_id=org,
                connection_id="conn-1",
                from_="+15550001111",
                to="+15550002222",
                webhook_url=webhook_url,
                default_conference=default_conference,
            )
        )
        if answer:
            self.command(leg, cmd.Answer(), org)
            self.event(ev.LegAnswered(leg))
        if media:
            self.event(ev.MediaStarted(leg, "PCMU/8000"))
        return leg

    def dial(
        self,
        leg: str,
        *,
        answer: bool = False,
        media: bool = False,
        org: int = ORG,
        **fields: object,
    ) -> str:
        body: dict[str, object] = {"connection_id": "conn-1", "from": "+15550003333"}
        body |= {"to": "+15550004444"} | fields
        self.log += self.m.dial(
            NewLegIds(leg, f"leg-{leg}", f"session-{leg}"),
            org,
            cmd.parse_dial(body),
            self.now,
            default_webhook_url=HOOK,
        ).effects
        if answer:
            self.event(ev.LegAnswered(leg))
        if media:
            self.event(ev.MediaStarted(leg, "PCMU/8000"))
        return leg

    def bridged_pair(self, a: str = "a", b: str = "b", **fields: object) -> tuple[str, str]:
        """Two answered legs with media, A bridged with B by a bridge command with `fields`."""
        self.incoming(a)
        self.incoming(b)
        self.command(a, cmd.parse_command("bridge", {"call_control_id": b, **fields}))
        return a, b


def key(leg: str, kind: TimerKind, tag: str = "") -> TimerKey:
    return TimerKey(leg, kind, tag)


def webhook_order(effects: Sequence[fx.Effect]) -> list[tuple[str, str]]:
    return [(e.call_control_id, e.event_type) for e in of_type(effects, fx.EmitWebhook)]


def test_incoming_leg_is_answered_with_media() -> None:
    h = Harness()
    h.incoming("a")
    assert h.state("a") is LegState.ANSWERED
    assert h.m.leg("a").media_started
    assert hooks(h.log, "a") == ["call.initiated", "call.answered", "streaming.started"]


def test_dialled_leg_rings_until_answered() -> None:
    h = Harness()
    h.dial("b")
    assert h.state("b") is LegState.DIALING
    assert h.timers("b") == {TimerKind.RING_TIMEOUT}
    h.event(ev.LegAnswered("b"))
    assert h.state("b") is LegState.ANSWERED
    # Answered, no media yet: the leg also waits for its stream (engine/machine/streams.py).
    assert h.timers("b") == {TimerKind.TIME_LIMIT, TimerKind.MEDIA_WAIT}
