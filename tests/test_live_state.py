"""The machine's live state as the store keeps it (issue 12, point 1).

The property test drives the same random interleavings as ``test_machine_atomic`` and, after
every input, applies what ``changes_between`` says changed, through the JSON codec, to a mirror
of the store: the mirror must always be the machine's state exactly, timers included. Then the
codec on its own (versions, damage) and the store's tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.errors import CallbridgeError
from engine.machine import effects as fx
from engine.machine.core import Checkpoint
from engine.machine.live_changes import LiveChanges, changes_between
from engine.machine.model import (
    Conference,
    Gather,
    GatherAudio,
    GatherRules,
    Leg,
    Queue,
    Room,
    TimerKey,
)
from engine.store import live_codec
from engine.store.base import QueuedWebhook
from engine.store.connect import open_engine
from engine.store.live_codec import LiveStateError
from engine.store.live_records import LiveSnapshot
from engine.store.sql import SqlStore
from tests.postgres import both_databases, database_url
from tests.test_machine_atomic import (
    Step,
    World,
    fault_st,
    faulty_machine,
    run_step,
    steps_st,
)

K = TypeVar("K")


@dataclass
class Mirror:
    """What the store holds, as the runtime would write it: JSON per row."""

    legs: dict[str, bytes] = field(default_factory=dict)
    rooms: dict[str, bytes] = field(default_factory=dict)
    queues: dict[tuple[int, str], bytes] = field(default_factory=dict)
    conferences: dict[tuple[int, int], str] = field(default_factory=dict)
    timers: dict[TimerKey, float] = field(default_factory=dict)
    records: dict[str, bytes] = field(default_factory=dict)

    def apply(self, changes: LiveChanges) -> None:
        for leg in changes.legs:
            self.legs[leg.call_control_id] = live_codec.dumps(leg)
        for room in changes.rooms:
            self.rooms[room.room_id] = live_codec.dumps(room)
        for queue in changes.queues:
            self.queues[(queue.org_id, queue.name)] = live_codec.dumps(queue)
        for record in changes.records:
            self.records[record.conference_id] = live_codec.dumps(record)
        self.conferences.update(changes.conferences)
        self.timers.update(changes.timers)
        _drop(self.legs, changes.legs_gone)
        _drop(self.rooms, changes.rooms_gone)
        _drop(self.queues, changes.queues_gone)
        _drop(self.conferences, changes.conferences_gone)
        _drop(self.timers, changes.timers_gone)
        _drop(self.records, changes.records_gone)

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(
            {k: live_codec.loads(Leg, v) for k, v in self.legs.items()},
            {k: live_codec.loads(Room, v) for k, v in self.rooms.items()},
            {k: live_codec.loads(Queue, v) for k, v in self.queues.items()},
            dict(self.conferences),
            {k: live_codec.loads(Conference, v) for k, v in self.records.items()},
        )


def _drop(table: dict[K, Any], keys: tuple[K, ...]) -> None:
    for key in keys:
        del table[key]  # a key written before: KeyError if the changes say otherwise


@dataclass
class StoredWorld(World):
    mirror: Mirror = field(default_factory=Mirror)
    deadlines: dict[TimerKey, float] = field(default_factory=dict)

    def _input(self, apply: Any, fault_at: int | None) -> None:
        before = self.core.checkpoint()
        captured: list[fx.Effect] = []

        def applying() -> list[fx.Effect]:
            effects: list[fx.Effect] = apply()
            captured.extend(effects)
            return effects

        super()._input(applying, fault_at)
        after = self.core.checkpoint()
        self.mirror.apply(changes_between(before, after, captured, self.now))
        for effect in captured:
            if isinstance(effect, fx.StartTimer):
                self.deadlines[effect.key] = self.now + effect.delay_s


def check_mirror(world: StoredWorld) -> None:
    assert world.mirror.checkpoint() == world.core.checkpoint()
    armed = {key for leg in world.core.legs.values() for key in leg.timers}
    assert set(world.mirror.timers) == armed
    for key in armed:
        assert world.mirror.timers[key] == world.deadlines[key]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(steps_st, fault_st), min_size=1, max_size=60))
# Found by a longer search: a stream's start answers an incoming leg, which arms MEDIA_WAIT and
# cancels it again in the same input; the timer was stored as armed all the same.
@example(
    steps=[
        (("up", (1, 0), None), None),
        (("incoming", (2, 2), 1), None),
        (("media_start", (2, 2)), None),
    ]
)
def test_the_stored_state_is_the_machines_after_every_input(
    steps: list[tuple[Step, int | None]],
) -> None:
    machine, core = faulty_machine()
    world = StoredWorld(machine, core)
    for step, fault_at in steps:
        run_step(world, step, fault_at)
        check_mirror(world)


def test_a_failed_input_writes_nothing() -> None:
    machine, core = faulty_machine()
    world = StoredWorld(machine, core)
    run_step(world, ("up", (1, 0), None), None)
    written = dict(world.mirror.legs)
    run_step(world, ("hangup", (1, 0)), 1)  # fails half-way: rolled back
    assert world.faults == 1 and world.mirror.legs == written


# ---- the codec ---------------------------------------------------------------------------------
def some_leg() -> Leg:
    machine, core = faulty_machine()
    world = StoredWorld(machine, core)
    run_step(world, ("up", (1, 0), None), None)
    return next(iter(core.legs.values()))


def test_a_newer_version_is_refused_and_damage_is_named() -> None:
    raw = live_codec.dumps(some_leg())
    newer = raw.replace(
        f'"v":{live_codec.LIVE_SCHEMA_VERSION}'.encode(),
        f'"v":{live_codec.LIVE_SCHEMA_VERSION + 1}'.encode(),
    )
    with pytest.raises(LiveStateError, match="run the newer version"):
        live_codec.loads(Leg, newer)
    with pytest.raises(LiveStateError, match="damaged"):
        live_codec.loads(Leg, b"{not json")
    with pytest.raises(LiveStateError, match="cannot be read"):
        live_codec.loads(Leg, raw.replace(b'"state":"', b'"state":"nonsense-'))


def test_a_field_added_since_takes_its_default() -> None:
    leg = some_leg()
    record: dict[str, Any] = {"v": 1, "state": live_codec.to_plain(leg)}
    del record["state"]["dtmf_muted"]  # as if written before the field existed
    assert live_codec.from_plain(Leg, record["state"]) == leg


def test_a_gather_in_progress_is_stored_and_a_leg_stored_before_gathers_loads() -> None:
    rules = GatherRules(minimum_digits=2, terminating_digit="", initial_timeout_millis=900)
    prompt = GatherAudio(audio_url="https://example.com/menu.mp3")
    gather = Gather(tag="a/gather/1", rules=rules, prompt=prompt, digits="1#", playing="a/p/2")
    leg = replace(some_leg(), gather=gather)
    assert live_codec.loads(Leg, live_codec.dumps(leg)) == leg
    older = live_codec.to_plain(some_leg())
    del older["gather"]  # written before gathers existed
    assert live_codec.from_plain(Leg, older).gather is None


# ---- the store ---------------------------------------------------------------------------------
@dataclass
class RecordingWorld(StoredWorld):
    """Keeps each input's changes, to commit them to a real store afterwards."""

    committed: list[LiveChanges] = field(default_factory=list)

    def _input(self, apply: Any, fault_at: int | None) -> None:
        before = self.core.checkpoint()
        captured: list[fx.Effect] = []

        def applying() -> list[fx.Effect]:
            effects: list[fx.Effect] = apply()
            captured.extend(effects)
            return effects

        World._input(self, applying, fault_at)
        self.committed.append(changes_between(before, self.core.checkpoint(), captured, self.now))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    both_databases(metafunc)


async def refuse_webhooks_to(database: str, url: str) -> None:
    """A write failure planted in the database itself: inserting a webhook for ``url`` aborts
    the transaction it is in, after whatever that transaction wrote before it."""
    planter = open_engine(database)
    async with planter.begin() as conn:
        if conn.dialect.name == "sqlite":
            await conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON webhook_outbox"
                f" WHEN NEW.url = '{url}' BEGIN SELECT RAISE(ABORT, 'planted write failure'); END"
            )
        else:
            await conn.exec_driver_sql(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                f" IF NEW.url = '{url}' THEN RAISE EXCEPTION 'planted write failure'; END IF;"
                " RETURN NEW; END $$"
            )
            await conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON webhook_outbox"
                " FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
    await planter.dispose()


SCENARIO: list[Step] = [
    ("up", (1, 0), None),
    ("up", (1, 1), None),
    ("bridge", (1, 0), (1, 1)),
    ("up", (2, 0), 1),  # org 2's default conference of bridge 1
    ("up", (2, 1), 1),
    ("up", (1, 2), None),
    ("enqueue", (1, 2), "q1", True),
    ("hangup", (2, 1)),
]


async def test_the_store_gives_back_what_was_committed(database_kind: str, tmp_path: Path) -> None:
    world = RecordingWorld(*faulty_machine())
    for step in SCENARIO:
        run_step(world, step, None)
    async with database_url(database_kind, str(tmp_path / "live.db")) as url:
        store = SqlStore(url)
        await store.start()
        try:
            await given_back(store, world)
        finally:
            await store.close()


async def given_back(store: SqlStore, world: RecordingWorld) -> None:
    for changes in world.committed:
        await store.commit_input(changes, [], world.now)
    snapshot = await store.load_live()
    expected = world.core.checkpoint()
    assert {leg.call_control_id: leg for leg in snapshot.legs} == expected.legs
    assert {room.room_id: room for room in snapshot.rooms} == expected.rooms
    assert {(q.org_id, q.name): q for q in snapshot.queues} == expected.queues
    assert dict(snapshot.conferences) == expected.conferences and expected.conferences
    armed = {key for leg in expected.legs.values() for key in leg.timers}
    assert {key for key, _ in snapshot.timers} == armed and armed


async def test_state_and_webhooks_commit_together_or_not_at_all(
    database_kind: str, tmp_path: Path
) -> None:
    world = RecordingWorld(*faulty_machine())
    run_step(world, ("up", (1, 0), None), None)
    async with database_url(database_kind, str(tmp_path / "live.db")) as url:
        store = SqlStore(url)
        await store.start()
        try:
            await refuse_webhooks_to(url, "https://refused.example/h")
            await together_or_not_at_all(store, world)
        finally:
            await store.close()


async def together_or_not_at_all(store: SqlStore, world: RecordingWorld) -> None:
    good = QueuedWebhook(1, "o1-0", "https://app.example.com/h", '{"event_type":"x"}')
    broken = QueuedWebhook(1, "o1-0", "https://refused.example/h", '{"event_type":"y"}')
    with pytest.raises(CallbridgeError):
        await store.commit_input(world.committed[0], [good, broken], world.now)
    assert await store.load_live() == LiveSnapshot()
    assert await store.due_webhooks(world.now + 1, 10) == []
    await store.commit_input(world.committed[0], [good], world.now)
    assert len((await store.load_live()).legs) == 1
    assert len(await store.due_webhooks(world.now + 1, 10)) == 1
