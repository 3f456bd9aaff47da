"""Conferences on the machine (engine/machine/conferences.py, conference_events.py): records for
default-routed conferences too, mute as a derived mixer effect that each new stream gets again,
the end of a conference with its last member, pruning, and the record stored and read back."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.machine import commands as cmd
from engine.machine import effects as fx
from engine.machine import events as ev
from engine.machine.conference_commands import (
    CreateConference,
    EndConference,
    JoinParticipant,
    MuteParticipants,
)
from engine.machine.core import Checkpoint
from engine.machine.live_changes import changes_between
from engine.machine.model import HangupCause, HangupSource
from engine.store.sql import SqlStore
from tests.postgres import both_databases, database_url
from tests.test_machine_harness import ORG, Harness, of_type
from tests.test_machine_rooms import conference_caller


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    both_databases(metafunc)


def conference(h: Harness, *legs: str) -> str:
    for leg in legs:
        h.incoming(leg)
    h.m.handle_command(legs[0], ORG, CreateConference(call_control_id=legs[0], name="n"), h.now)
    (record,) = h.m.conferences_of(ORG)
    for leg in legs[1:]:
        h.m.handle_command(record.conference_id, ORG, JoinParticipant(call_control_id=leg), h.now)
    return record.conference_id


def test_a_bridges_default_conference_is_a_conference_that_ends_with_its_last_caller() -> None:
    h = Harness()
    conference_caller(h, "c1", org=ORG, bridge=7)
    conference_caller(h, "c2", org=ORG, bridge=7)
    (record,) = h.m.conferences_of(ORG)
    assert (record.name, record.status, record.webhook_url) == ("bridge-7", "in_progress", None)
    assert [leg.call_control_id for leg in h.m.participants(record)] == ["c1", "c2"]
    for leg in ("c1", "c2"):
        effects = h.event(ev.LegHungUp(leg, HangupCause.NORMAL_CLEARING, HangupSource.CALLER))
        assert of_type(effects, fx.EmitWebhook) == []  # a default conference: nobody listens
    (record,) = h.m.conferences_of(ORG)
    assert (record.status, record.end_reason) == ("completed", "all_left")
    assert h.m.conferences_of(ORG + 1) == []
    h.m.prune(h.now + 3600)
    assert h.m.conferences_of(ORG) == []


def test_mute_is_a_mixer_effect_given_again_to_each_new_stream() -> None:
    h = Harness()
    conference_id = conference(h, "a", "b", "c")
    out = h.m.handle_command(
        conference_id, ORG, MuteParticipants(call_control_ids=("b",), muted=True), h.now
    )
    assert of_type(out, fx.SetAudience) == [fx.SetAudience("b", frozenset())]
    assert h.event(ev.MediaStopped("b"))[:2] == [
        fx.LeaveRoom("b", h.m.leg("b").room_id or ""),
        fx.SetAudience("b", None),
    ]
    again = h.event(ev.MediaStarted("b", "PCMU/8000"))
    assert [e for e in again if isinstance(e, fx.JoinRoom | fx.SetAudience)] == [
        fx.JoinRoom("b", h.m.leg("b").room_id or ""),
        fx.SetAudience("b", frozenset()),
    ]
    # No ids: everyone.
    out = h.m.handle_command(
        conference_id, ORG, MuteParticipants(call_control_ids=(), muted=False), h.now
    )
    assert of_type(out, fx.SetAudience) == [fx.SetAudience("b", None)]


def test_end_hangs_up_everyone_and_webhooks_go_in_one_order() -> None:
    h = Harness()
    conference_id = conference(h, "a", "b")
    out = h.m.handle_command(conference_id, ORG, EndConference(), h.now)
    assert {e.call_control_id for e in of_type(out, fx.HangupCall)} == {"a", "b"}
    conference_hooks = [e for e in of_type(out, fx.EmitWebhook) if e.order_key]
    assert [(e.event_type, e.call_control_id) for e in conference_hooks] == [
        ("conference.participant.left", "a"),
        ("conference.participant.left", "b"),
        ("conference.ended", "a"),
    ]
    assert {e.order_key for e in conference_hooks} == {"conf:" + conference_id.replace("-", "")}
    assert conference_hooks[-1].payload["reason"] == "ended_via_api"


async def test_the_record_is_stored_and_read_back(database_kind: str, tmp_path: Path) -> None:
    h = Harness()
    empty = h.m.checkpoint()
    conference(h, "a", "b")
    full = h.m.checkpoint()
    changes = changes_between(Checkpoint({}, {}, {}, {}, {}), full, h.log, h.now)
    assert changes.records and empty.records == {}
    async with database_url(database_kind, str(tmp_path / "live.db")) as url:
        store = SqlStore(url)
        await store.start()
        try:
            await store.commit_input(changes, [], h.now)
            stored = (await store.load_live()).checkpoint()
        finally:
            await store.close()
    assert stored.records == full.records


def _beeps(effects: list[fx.Effect]) -> list[str]:
    return sorted(e.call_control_id for e in of_type(effects, fx.SetOverlay) if "/beep/" in e.tag)


@pytest.mark.parametrize(
    ("setting", "on_join", "on_leave"),
    [("never", [], []), ("always", ["a", "b"], ["a"]), ("on_enter", ["a", "b"], []),
     ("on_exit", [], ["a"])],
)  # fmt: skip
def test_beep_enabled_beeps_to_the_room_as_participants_come_and_go(
    setting: str, on_join: list[str], on_leave: list[str]
) -> None:
    h = Harness()
    for leg in ("a", "b"):
        h.incoming(leg)
    create = CreateConference(call_control_id="a", name="n", beep_enabled=setting)
    h.m.handle_command("a", ORG, create, h.now)
    (record,) = h.m.conferences_of(ORG)
    join = JoinParticipant(call_control_id="b")
    assert _beeps(h.m.handle_command(record.conference_id, ORG, join, h.now)) == on_join
    assert _beeps(h.command("b", cmd.Hangup())) == on_leave  # the rest hear it leave


def test_a_participants_beep_enabled_overrides_the_conferences() -> None:
    h = Harness()
    for leg in ("a", "b", "c"):
        h.incoming(leg)
    create = CreateConference(call_control_id="a", name="n", beep_enabled="always")
    h.m.handle_command("a", ORG, create, h.now)
    (record,) = h.m.conferences_of(ORG)
    quiet = JoinParticipant(call_control_id="b", beep_enabled="never")
    assert _beeps(h.m.handle_command(record.conference_id, ORG, quiet, h.now)) == []
    loud = JoinParticipant(call_control_id="c")
    assert _beeps(h.m.handle_command(record.conference_id, ORG, loud, h.now)) == ["a", "b", "c"]
    assert _beeps(h.command("b", cmd.Hangup())) == []
