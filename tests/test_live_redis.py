"""The live-leg counts in Redis (engine/admission/live_redis.py), on the machine's real Redis.

Two registries on one key prefix are two nodes. Claims check the number's ``channels_count``
and the organization's ``max_legs`` and count the leg in one step, across nodes; releases are
idempotent; a dialled leg takes its placeholder's slot in one step; a node whose liveness key
has expired loses its claims at the next sweep, except those another node adopted; a node
that finds its key gone counts its legs again; without Redis a claim is refused while holds
and releases wait and are written once Redis answers; keys stay under ``callbridge:{prefix}:``.
Through the app: ``serve`` does not start without Redis; a running engine cut from Redis refuses
new calls and keeps the live one; a restarted process takes the claims of the calls it adopts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import pytest
from aiohttp import web
from redis.asyncio import Redis
from structlog.testing import capture_logs

from adapters.simulators import CallState, ToneSource
from engine.admission.live import Claim, Limit, LiveLegIndex, LiveLegs, LiveLegsUnavailable, Place
from engine.admission.live_redis import RedisLiveLegs, redacted
from engine.api.keys import LIVE_LEGS, METRICS
from engine.app import create_app
from engine.cli import main
from engine.config import Settings
from engine.errors import ValidationError
from tests.call_fakes import Harness
from tests.platform_client import BRIDGES
from tests.redis_server import REDIS_URL, TcpRelay, keys_of, redis_prefix
from tests.telnyx_harness import caller, telnyx_stack

NUMBER, OTHER = "+14155550100", "+14155550101"
ROOM = Place(7, NUMBER)
TTL_S = 30.0  # long: expiry is made by deleting a node's key, never waited for


class Nodes(Protocol):
    async def __call__(self, name: str, url: str = REDIS_URL) -> RedisLiveLegs:
        """A started registry (a node) on the test's prefix, closed when the test ends."""


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    async with redis_prefix() as name:
        yield name


@pytest.fixture
async def nodes(prefix: str) -> AsyncIterator[Nodes]:
    async with AsyncExitStack() as stack:

        async def node(name: str, url: str = REDIS_URL) -> RedisLiveLegs:
            live = RedisLiveLegs.from_url(url, prefix=prefix, node_id=name, ttl_s=TTL_S)
            await live.start()
            stack.push_async_callback(live.close)
            return live

        yield node


async def test_claims_hold_the_number_and_organization_limits_across_nodes(nodes: Nodes) -> None:
    a, b = await nodes("a"), await nodes("b")
    assert await a.claim("l1", Claim(1, 3, ROOM, 2)) is None
    assert await b.claim("l2", Claim(1, 3, ROOM, 2)) is None
    assert await a.claim("l3", Claim(1, 3, ROOM, 2)) is Limit.NUMBER
    assert await b.claim("l3", Claim(1, 3, ROOM, 2)) is Limit.NUMBER
    assert await a.claim("l3", Claim(1, 3, Place(7, OTHER), 5)) is None
    # The organization has 3 live legs now: its max_legs, whatever number is dialled.
    assert await b.claim("l4", Claim(1, 3)) is Limit.ORGANIZATION
    assert await b.claim("l4", Claim(2, 3)) is None, "another organization's own"
    assert await a.claim("l1", Claim(1, 3, ROOM, 2)) is None, "again"
    for live in (a, b):
        assert await live.count_for_number(NUMBER) == 2
        assert await live.count_for_bridge(7) == 3
        assert await live.count_for_org(1) == 3


async def test_simultaneous_claims_on_two_nodes_take_exactly_the_free_slots(nodes: Nodes) -> None:
    a, b = await nodes("a"), await nodes("b")
    claims = [
        node.claim(f"{name}{n}", Claim(1, 100, ROOM, 3))
        for n in range(15)
        for name, node in (("a", a), ("b", b))
    ]
    results = await asyncio.gather(*claims)
    assert results.count(None) == 3 and results.count(Limit.NUMBER) == 27
    assert await a.count_for_number(NUMBER) == 3


async def test_a_release_frees_the_slot_and_releasing_again_does_nothing(nodes: Nodes) -> None:
    a, b = await nodes("a"), await nodes("b")
    assert await a.claim("l1", Claim(1, 5, ROOM, 1)) is None
    a.release("l1")
    a.release("l1")
    a.release("never-counted")
    await a.flush()  # written in the background: the runtime's settle waits for it too
    assert await b.claim("l2", Claim(1, 5, ROOM, 1)) is None
    a.release("l1")
    await a.flush()
    assert await b.count_for_number(NUMBER) == 1 and await b.count_for_org(1) == 1


async def test_a_leg_adopted_by_another_node_moves_there_and_ends_there(nodes: Nodes) -> None:
    a, b = await nodes("a"), await nodes("b")
    assert await a.claim("l1", Claim(1, 5, ROOM, 2)) is None
    b.hold("l1", org_id=1, place=ROOM)  # b adopted it (a restart on the same store)
    await b.flush()
    assert await a.count_for_number(NUMBER) == 1, "counted once"
    b.release("l1")
    await b.flush()
    assert await a.count_for_number(NUMBER) == 0
    a.release("l1")  # the old owner ending it too changes nothing
    await a.flush()
    assert await b.count_for_org(1) == 0


async def test_a_dialled_leg_takes_its_placeholders_slot_in_one_step(nodes: Nodes) -> None:
    a, b = await nodes("a"), await nodes("b")
    assert await a.claim("dialling:1", Claim(1, 1)) is None
    assert await b.claim("dialling:2", Claim(1, 1)) is Limit.ORGANIZATION
    a.hold("v3:leg", org_id=1, replaces="dialling:1")
    await a.flush()
    assert await b.count_for_org(1) == 1
    assert await b.claim("dialling:2", Claim(1, 1)) is Limit.ORGANIZATION
    a.release("v3:leg")
    await a.flush()
    assert await b.claim("dialling:2", Claim(1, 1)) is None


async def test_an_expired_nodes_claims_are_dropped_but_not_those_adopted(
    nodes: Nodes, prefix: str
) -> None:
    a, b = await nodes("a"), await nodes("b")
    for leg in ("a1", "a2", "a3"):
        assert await a.claim(leg, Claim(1, 9, ROOM, 9)) is None
    assert await b.claim("b1", Claim(1, 9, ROOM, 9)) is None
    b.hold("a3", org_id=1, place=ROOM)  # adopted by b before a died
    await b.flush()
    alive = b.key(f"node:{a.node}:alive")
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        assert 0 < await redis.pttl(alive) <= TTL_S * 1000, "a node's key lives one TTL"
        await redis.delete(alive)  # what its TTL does when the node stops refreshing it
        await b.refresh()  # every node sweeps at each refresh
        assert await b.count_for_number(NUMBER) == 2, "b's own leg and the one it adopted"
        assert a.node not in await redis.smembers(b.key("nodes"))
    finally:
        await redis.aclose()
    keys = await keys_of(prefix)
    assert all(key.startswith(f"callbridge:{{{prefix}}}:") for key in keys)
    # Each key's name past the prefix: the prefix itself is random hex, which may hold "a1".
    names = [key.removeprefix(f"callbridge:{{{prefix}}}:") for key in keys]
    assert "leg:a1" not in names and not any(a.node in name for name in names)


async def test_a_node_that_finds_its_key_gone_counts_its_legs_again(nodes: Nodes) -> None:
    a, b = await nodes("a"), await nodes("b")
    assert await a.claim("a1", Claim(1, 9, ROOM, 9)) is None
    a.hold("a2", org_id=1)
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await redis.delete(a.key(f"node:{a.node}:alive"))  # a cut off longer than its TTL
        await b.refresh()
        assert await b.count_for_org(1) == 0, "swept"
        await a.refresh()  # a's next refresh: its key is gone, so it registers again
        assert await b.count_for_org(1) == 2 and await b.count_for_number(NUMBER) == 1
        await redis.delete(a.key(f"node:{a.node}:alive"))
        await b.refresh()
        # A claim finds the key gone too: a registers (its legs counted again), then claims.
        assert await a.claim("a3", Claim(1, 3, ROOM, 9)) is None
        assert await a.claim("a4", Claim(1, 3, ROOM, 9)) is Limit.ORGANIZATION
    finally:
        await redis.aclose()


async def test_without_redis_claims_are_refused_and_live_legs_catch_up_after(nodes: Nodes) -> None:
    relay = await TcpRelay().start()
    try:
        a, b = await nodes("a", relay.url), await nodes("b")
        assert await a.claim("a1", Claim(1, 9, ROOM, 9)) is None
        assert await a.claim("a2", Claim(1, 9, ROOM, 9)) is None
        relay.cut()
        for _ in range(2):  # the second refused at once: Redis is known to be away
            with pytest.raises(LiveLegsUnavailable, match="live-leg counts unavailable"):
                await a.claim("a3", Claim(1, 9, ROOM, 9))
        a.release("a1")  # a live call's end never waits on Redis, nor fails
        a.hold("a4", org_id=1, place=ROOM)
        await a.flush()  # nothing written, nothing raised
        assert await b.count_for_number(NUMBER) == 2, "not written yet"
        relay.mend()
        await a.flush()
        assert await b.count_for_number(NUMBER) == 2
        assert await b.count_for_org(1) == 2 and await a.count_for_org(1) == 2
        assert await a.claim("a3", Claim(1, 9, ROOM, 9)) is None
    finally:
        await relay.close()


async def test_a_registry_without_redis_does_not_start(prefix: str) -> None:
    relay = await TcpRelay().start()
    relay.cut()
    live = RedisLiveLegs.from_url(
        relay.url.replace("redis://", "redis://user:hunter2@"), prefix=prefix, node_id="a",
        ttl_s=TTL_S,
    )  # fmt: skip
    try:
        with pytest.raises(LiveLegsUnavailable, match="CALLBRIDGE_REDIS_URL") as caught:
            await live.start()
        assert "hunter2" not in caught.value.detail and relay.url in caught.value.detail
    finally:
        await live.close()
        await relay.close()


def test_serve_without_redis_stops_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CALLBRIDGE_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens
    monkeypatch.setenv("CALLBRIDGE_SECRET_KEY", "k" * 40)
    monkeypatch.setenv("CALLBRIDGE_DATABASE_URL", f"sqlite:///{tmp_path / 'cb.db'}")
    assert main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "callbridge: CALLBRIDGE_REDIS_URL: Redis at redis://127.0.0.1:1/0 does not answer" in err


async def test_the_composition_root_picks_redis_only_when_configured(
    tmp_path: Path, prefix: str
) -> None:
    base = Settings(database_url=f"sqlite:///{tmp_path / 'cb.db'}", secret_key="k" * 40)
    assert isinstance(live_of(create_app(base)), LiveLegIndex)
    app = create_app(replace(base, redis_url=REDIS_URL, redis_prefix=prefix))
    assert isinstance(live_of(app), RedisLiveLegs)


def live_of(app: web.Application) -> LiveLegs:
    return app[LIVE_LEGS]


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"CALLBRIDGE_REDIS_URL": "http://127.0.0.1:6379"}, "CALLBRIDGE_REDIS_URL"),
        ({"CALLBRIDGE_REDIS_PREFIX": "a{b}"}, "CALLBRIDGE_REDIS_PREFIX"),
        ({"CALLBRIDGE_REDIS_PREFIX": ""}, "CALLBRIDGE_REDIS_PREFIX"),
        ({"CALLBRIDGE_NODE_ID": "node one"}, "CALLBRIDGE_NODE_ID"),
        ({"CALLBRIDGE_REDIS_NODE_TTL_S": "0.5"}, "CALLBRIDGE_REDIS_NODE_TTL_S"),
        ({"CALLBRIDGE_REDIS_NODE_TTL_S": "nan"}, "CALLBRIDGE_REDIS_NODE_TTL_S"),
    ],
)
def test_redis_settings_are_checked(env: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings.from_env(env)
    assert caught.value.field == field


def test_redis_settings_from_the_environment() -> None:
    assert Settings.from_env({}).redis_url is None, "no Redis: one node, counted in memory"
    settings = Settings.from_env(
        {
            "CALLBRIDGE_REDIS_URL": "rediss://cache.internal:6380/2",
            "CALLBRIDGE_REDIS_PREFIX": "prod-eu",
            "CALLBRIDGE_NODE_ID": "node-1",
            "CALLBRIDGE_REDIS_NODE_TTL_S": "20",
        }
    )
    assert (settings.redis_url, settings.redis_prefix) == (
        "rediss://cache.internal:6380/2",
        "prod-eu",
    )
    assert (settings.node_id, settings.redis_node_ttl_s) == ("node-1", 20.0)
    assert redacted("redis://u:secret@h:1/0") == "redis://h:1/0"


# --- Redis down under a running engine (RELIABILITY.md) -------------------------------------------


async def test_redis_down_refuses_new_calls_and_leaves_the_live_one_alone(
    tmp_path: Path, prefix: str
) -> None:
    relay = await TcpRelay().start()
    try:
        async with telnyx_stack(tmp_path, redis_url=relay.url, redis_prefix=prefix) as stack:
            slug = await stack.bridge(NUMBER)  # default routing: a caller is answered, streams
            live = await stack.sim.place_inbound_call(caller(), NUMBER, source=ToneSource(440))
            await live.wait_for(CallState.STREAMING)
            relay.cut()
            with capture_logs() as logs:
                refused = await stack.sim.place_inbound_call(caller(), NUMBER)
                await refused.wait_for(CallState.ENDED)
                dial = await stack.client.post(
                    "/v2/calls",
                    json={"connection_id": slug, "from": caller(), "to": caller()},
                    headers={"Authorization": f"Bearer {stack.org.token}"},
                )
                # Meanwhile the live call's media goes on: a second of frames from callbridge.
                heard = live.media_frames_received
                await live.wait_until(lambda c: c.media_frames_received >= heard + 50)
            # A bridge whose live legs cannot be counted is not deleted.
            kept = await stack.org.call("DELETE", f"{BRIDGES}{slug}/")
            assert (kept.status, kept.body["message"]) == (503, "Bridge deletion failed.")
            assert "live-leg counts unavailable" in kept.body["errors"]
            assert refused.hangup == ("user_busy", "callee", "486")
            (error,) = (await dial.json())["errors"]
            assert (dial.status, dial.headers["Retry-After"]) == (429, "1")
            assert "live-leg counts unavailable" in error["detail"]
            refusals = stack.app[METRICS].registry.get_sample_value(
                "callbridge_admission_refusals_total", {"reason": "live_legs_unavailable"}
            )
            assert refusals == 2  # the inbound call and the dial
            events = [(e["event"], e.get("reason", "")) for e in logs]
            assert any(event.startswith("Redis unreachable") for event, _ in events)
            assert any(
                event == "telnyx call refused" and "live-leg counts unavailable" in reason
                for event, reason in events
            )
            await live.hang_up()  # the end of a live call waits for nothing
            await stack.taken(live, "call.hangup")
            await stack.runtime.settle()
            relay.mend()
            await stack.runtime.settle()  # the release, kept while Redis was away, written now
            assert await stack.app[LIVE_LEGS].count_for_number(NUMBER) == 0
            again = await stack.sim.place_inbound_call(caller(), NUMBER)
            await again.wait_for(CallState.STREAMING)
    finally:
        await relay.close()


async def test_a_restarted_process_takes_the_claims_of_the_calls_it_adopts(
    aiohttp_client: Any, aiohttp_server: Any, settings: Settings, prefix: str
) -> None:
    settings = replace(settings, redis_url=REDIS_URL, redis_prefix=prefix)
    h = await Harness.start(aiohttp_client, aiohttp_server, settings)
    a, b = await h.up(), await h.up()
    before = live_of(h.client.app)
    assert isinstance(before, RedisLiveLegs) and await before.count_for_org(h.org.org_id) == 2
    h = await h.restarted(aiohttp_client, settings, unreachable={a})  # a's call is gone
    await h.runtime.settle()
    after = live_of(h.client.app)
    assert isinstance(after, RedisLiveLegs) and after.node != before.node, "a new node"
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        assert await redis.hget(after.key(f"leg:{b}"), "node") == after.node, "b moved"
        assert await redis.hget(after.key(f"leg:{a}"), "node") == before.node, "a did not"
        await redis.delete(after.key(f"node:{before.node}:alive"))  # the old process's TTL
        await after.refresh()
    finally:
        await redis.aclose()
    assert await after.count_for_org(h.org.org_id) == 1, "the adopted call, not the gone one"


async def test_an_expired_nodes_legs_are_taken_over_by_one_node_and_fenced_from_it(
    nodes: Nodes,
) -> None:
    a, b, c = await nodes("a"), await nodes("b"), await nodes("c")
    for leg in ("a1", "a2", "a3"):
        assert await a.claim(leg, Claim(1, 9, ROOM, 9)) is None
    offered: list[list[str]] = []

    async def adopt(legs: list[str]) -> set[str]:
        offered.append(sorted(legs))
        for leg in sorted(legs)[:2]:
            b.hold(leg, org_id=1, place=ROOM)  # as the runtime does for each leg it adopts
        return set(sorted(legs)[:2])

    lost: list[list[str]] = []

    async def let_go(legs: list[str]) -> None:
        lost.append(sorted(legs))

    b.on_taken_over, a.on_lost = adopt, let_go
    c.on_taken_over = adopt  # a second survivor: the first to sweep takes them all
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await redis.delete(a.key(f"node:{a.node}:alive"))  # a stopped refreshing: expired
        await b.refresh()
        await c.refresh()
        assert offered == [["a1", "a2", "a3"]], "one node takes them, once"
        owners = {leg: await redis.hget(b.key(f"leg:{leg}"), "node") for leg in ("a1", "a2")}
        assert owners == {"a1": b.node, "a2": b.node}
        assert await redis.exists(b.key("leg:a3")) == 0, "not adopted: its claim dropped"
        assert await c.count_for_number(NUMBER) == 2
        # a comes back (it was cut off, not dead): it registers, but takes nothing back.
        await a.refresh()
        assert lost == [["a1", "a2"]]
        assert await redis.hget(b.key("leg:a1"), "node") == b.node
        # a3, which nobody took, is counted as a's again.
        assert await redis.hget(b.key("leg:a3"), "node") == a.node
        assert await c.count_for_number(NUMBER) == 3
    finally:
        await redis.aclose()
