"""Leg owners in Redis (engine/cluster/owners_redis.py) and the part of the stored calls a
starting node adopts (``LiveSnapshot.without``); the node URL setting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
from redis.asyncio import Redis

from engine.admission.live import Claim, Limit, Place
from engine.admission.live_redis import RedisLiveLegs
from engine.cluster.owners import Owner, OwnersUnavailable, SoleNode
from engine.cluster.owners_redis import RedisLegOwners
from engine.config import Settings, node_url_of
from engine.errors import ValidationError
from engine.machine.model import (
    Conference,
    Direction,
    Leg,
    LegState,
    Queue,
    Room,
    RoomKind,
    TimerKey,
    TimerKind,
)
from engine.store.live_records import LiveSnapshot
from tests.redis_server import REDIS_URL, redis_prefix

TTL_S = 30.0  # expiry is made by deleting a node's key, never waited for


@pytest.fixture
async def stack() -> AsyncIterator[tuple[AsyncExitStack, str]]:
    async with redis_prefix() as prefix, AsyncExitStack() as exits:
        yield exits, prefix


async def node(
    stack: tuple[AsyncExitStack, str], name: str, url: str, redis_url: str = REDIS_URL
) -> RedisLiveLegs:
    exits, prefix = stack
    live = RedisLiveLegs.from_url(
        redis_url, prefix=prefix, node_id=name, ttl_s=TTL_S, node_url=url, ended_ttl_s=60
    )
    await live.start()
    exits.push_async_callback(live.close)
    return live


async def test_a_legs_owner_is_the_node_of_its_claim_and_its_url(
    stack: tuple[AsyncExitStack, str],
) -> None:
    a = await node(stack, "a", "http://10.0.0.1:8080")
    b = await node(stack, "b", "http://10.0.0.2:8080")
    owners = RedisLegOwners(b)
    assert await a.claim("leg-1", Claim(org_id=1, max_legs=10)) is None
    a.hold("leg-2", org_id=1)
    await a.flush()
    assert await owners.owner_of("leg-1") == Owner(a.node, "http://10.0.0.1:8080")
    assert await owners.owner_of("leg-2") == Owner(a.node, "http://10.0.0.1:8080")
    assert await owners.owner_of("unknown") is None
    assert await owners.held_elsewhere(["leg-1", "leg-2", "unknown"]) == {"leg-1", "leg-2"}
    assert await RedisLegOwners(a).held_elsewhere(["leg-1"]) == set(), "a's own"

    a.release("leg-1")  # ended: still a's, for as long as a keeps ended legs
    await a.flush()
    assert await owners.owner_of("leg-1") == Owner(a.node, "http://10.0.0.1:8080", ended=True)

    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await redis.delete(a.key(f"node:{a.node}:alive"))  # a's TTL lapsed
    finally:
        await redis.aclose()
    assert await owners.owner_of("leg-2") == Owner(a.node, None)
    assert await owners.held_elsewhere(["leg-1", "leg-2"]) == set(), "nobody alive holds them"


async def test_a_provider_call_names_its_leg_while_the_leg_is_known(
    stack: tuple[AsyncExitStack, str],
) -> None:
    a = await node(stack, "a", "http://10.0.0.1:8080")
    b = await node(stack, "b", "http://10.0.0.2:8080")
    owners = RedisLegOwners(b)
    at_a = Owner(a.node, "http://10.0.0.1:8080")
    assert await a.claim("leg-1", Claim(1, 10, call="telnyx:v3:abc")) is None  # with the claim
    assert await owners.owner_of_call("telnyx:v3:abc") == ("leg-1", at_a)
    assert await owners.owner_of_call("twilio:v3:abc") is None, "ids are per provider"
    assert await SoleNode().owner_of_call("telnyx:v3:abc") is None

    # Adopted by b (a hold naming the call): the call's leg is b's now.
    b.hold("leg-1", org_id=1, call="telnyx:v3:abc")
    await b.flush()
    assert await owners.owner_of_call("telnyx:v3:abc") == ("leg-1", Owner(b.node, b.url))
    b.hold("leg-1", org_id=1)  # a hold that does not name the call keeps it
    await b.flush()
    assert await owners.owner_of_call("telnyx:v3:abc") == ("leg-1", Owner(b.node, b.url))

    # Ended: still known, as the ended leg's node's (as long as it keeps ended legs).
    b.release("leg-1")
    await b.flush()
    ended = Owner(b.node, b.url, ended=True)
    assert await owners.owner_of_call("telnyx:v3:abc") == ("leg-1", ended)
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        assert 0 < await redis.pttl(a.key("call:telnyx:v3:abc")) <= 60_000, "ended_ttl_s"
        # A claim dropped without an end (its node's key expired and swept): the call goes too.
        a.hold("leg-2", org_id=1, call="twilio:CA1")
        await a.flush()
        await redis.delete(a.key(f"node:{a.node}:alive"))
        await b.refresh()
        assert await owners.owner_of_call("twilio:CA1") is None
        assert await redis.exists(a.key("call:twilio:CA1")) == 0
    finally:
        await redis.aclose()


async def test_a_provider_call_is_claimed_by_one_node_at_a_time() -> None:
    """Two nodes taking duplicates of one call's first webhook at the same instant: one leg."""
    async with redis_prefix() as prefix, AsyncExitStack() as exits:
        a = await node((exits, prefix), "a", "http://10.0.0.1:8080")
        b = await node((exits, prefix), "b", "http://10.0.0.2:8080")
        call = "telnyx:v3:dup"
        claims = await asyncio.gather(
            a.claim("leg-a", Claim(1, 10, call=call)), b.claim("leg-b", Claim(1, 10, call=call))
        )
        assert claims.count(None) == 1 and Limit.CALL in claims
        taken, other = (a, b) if claims[0] is None else (b, a)
        assert await other.count_for_org(1) == 1
        # On the node that holds it, the adapter decides (a leg whose first event failed is
        # claimed again for the provider's retry); once it ends, the call is free again.
        assert await taken.claim("leg-again", Claim(1, 10, call=call)) is None
        taken.release("leg-a")
        taken.release("leg-b")
        taken.release("leg-again")
        await taken.flush()
        assert await other.claim("leg-later", Claim(1, 10, call=call)) is None


async def test_a_bridges_room_is_where_its_legs_are_or_where_its_first_caller_was_taken(
    stack: tuple[AsyncExitStack, str],
) -> None:
    a = await node(stack, "a", "http://10.0.0.1:8080")
    b = await node(stack, "b", "http://10.0.0.2:8080")
    c = await node(stack, "c", "http://10.0.0.3:8080")
    on_a, on_b, on_c = RedisLegOwners(a), RedisLegOwners(b), RedisLegOwners(c)
    # No leg yet: the first node to ask takes the room; one asking at the same time goes there.
    assert await on_a.owner_of_bridge(7) is None
    assert await on_b.owner_of_bridge(7) == ("bridge 7's first call", Owner(a.node, a.url))
    assert await on_a.owner_of_bridge(7) is None, "its own claim"
    assert await on_b.owner_of_bridge(8) is None, "another bridge's room is claimed apart"
    # The claiming node died before its caller was counted: the room is claimed anew.
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await redis.delete(a.key(f"node:{a.node}:alive"))
    finally:
        await redis.aclose()
    assert await on_b.owner_of_bridge(7) is None
    assert await on_c.owner_of_bridge(7) == ("bridge 7's first call", Owner(b.node, b.url))
    # Once a leg is counted against the bridge, its node is the room's, whatever was claimed.
    assert await c.claim("leg-1", Claim(1, 10, Place(7, "+14155550100"), 5)) is None
    await c.flush()
    assert await on_b.owner_of_bridge(7) == ("leg-1", Owner(c.node, c.url))
    assert await on_c.owner_of_bridge(7) == ("leg-1", Owner(c.node, c.url)), "here: routed here"


async def test_a_new_queue_is_made_by_the_first_node_to_claim_it(
    stack: tuple[AsyncExitStack, str],
) -> None:
    a = await node(stack, "a", "http://10.0.0.1:8080")
    b = await node(stack, "b", "http://10.0.0.2:8080")
    on_a, on_b = RedisLegOwners(a), RedisLegOwners(b)
    assert await on_a.owner_of_new_queue(1, "support") is None  # claimed for a
    assert await on_b.owner_of_new_queue(1, "support") == Owner(a.node, a.url)
    assert await on_a.owner_of_new_queue(1, "support") is None, "its own claim"
    assert await on_b.owner_of_new_queue(2, "support") is None, "another organization's queue"
    assert await on_b.owner_of_new_queue(1, "sales") is None, "another queue"
    # A bridge's room and a queue are claimed apart, even with the same number in their names.
    assert await on_b.owner_of_bridge(1) is None
    await a.close()  # stopped: its claims name a node that is not alive
    assert await on_b.owner_of_new_queue(1, "support") is None


async def test_a_stopped_node_or_one_at_this_nodes_url_is_not_alive(
    stack: tuple[AsyncExitStack, str],
) -> None:
    old = await node(stack, "old", "http://10.0.0.1:8080")
    other = await node(stack, "other", "http://10.0.0.3:8080")
    old.hold("leg-1", org_id=1)
    other.hold("leg-2", org_id=1)
    await old.flush()
    await other.flush()
    # A process started at old's address (a restart, even after a kill -9 that left old's key
    # alive): old's calls are its to adopt, other's are not.
    successor = await node(stack, "old", "http://10.0.0.1:8080")
    owners = RedisLegOwners(successor)
    assert (await owners.owner_of("leg-1")) == Owner(old.node, None)
    assert await owners.held_elsewhere(["leg-1", "leg-2"]) == {"leg-2"}
    await other.close()  # stopped (hands over): its URL cleared at once
    assert await owners.held_elsewhere(["leg-1", "leg-2"]) == set()
    assert await owners.owner_of("leg-2") == Owner(other.node, None)


async def test_owners_unreadable_without_redis(stack: tuple[AsyncExitStack, str]) -> None:
    live = RedisLiveLegs.from_url(
        "redis://127.0.0.1:1/0", prefix=stack[1], node_id="a", ttl_s=TTL_S, node_url="http://x"
    )
    try:
        with pytest.raises(OwnersUnavailable) as failed:
            await RedisLegOwners(live).owner_of("leg-1")
        assert failed.value.status == 503 and "Redis" in failed.value.detail
    finally:
        await live.client.aclose()
    assert await SoleNode().held_elsewhere(["leg-1"]) == set()


def leg(leg_id: str, *, alive: bool = True) -> Leg:
    return Leg(
        call_control_id=leg_id, call_leg_id=leg_id, call_session_id=leg_id, connection_id="s",
        direction=Direction.INCOMING, from_="+1", to="+2", start_time=1.0, org_id=1,
        state=LegState.ANSWERED if alive else LegState.HANGUP, ended_at=None if alive else 5.0,
    )  # fmt: skip


def test_the_calls_of_legs_held_elsewhere_are_left_out_whole() -> None:
    bridge = Room("room:1", 1, RoomKind.BRIDGE, members=("x1", "x2"))
    conference = Room("conf:1", 1, RoomKind.CONFERENCE, members=("y1",), bridge_id=9)
    record = Conference(
        conference_id="c-1", room_id="conf:1", org_id=1, name="n", created_at=1.0,
        updated_at=1.0, creator="y1", connection_id="s",
    )  # fmt: skip
    snapshot = LiveSnapshot(
        legs=(leg("x1"), leg("x2"), leg("y1"), leg("z1"), leg("ended", alive=False)),
        rooms=(bridge, conference),
        queues=(Queue(1, "q", 10, members=("z1",)), Queue(1, "r", 10, members=("x2",))),
        conferences=(((1, 9), "conf:1"),),
        timers=(
            (TimerKey("x1", TimerKind.TIME_LIMIT), 10.0),
            (TimerKey("y1", TimerKind.TIME_LIMIT), 10.0),
        ),
        records=(record,),
    )
    kept, left = snapshot.without({"x1"})
    assert [leg.call_control_id for leg in kept.legs] == ["y1", "z1", "ended"], "x1's room too"
    assert kept.rooms == (conference,) and kept.records == (record,)
    assert [queue.name for queue in kept.queues] == ["q"]
    assert [key.call_control_id for key, _ in kept.timers] == ["y1"]
    assert left == {"x1", "x2", "room:1"}

    kept, left = snapshot.without({"y1"})
    assert kept.rooms == (bridge,) and kept.records == () and kept.conferences == ()
    assert left == {"y1", "conf:1", "c-1"} and kept.mentions("x1") and not kept.mentions("c-1")
    assert snapshot.without(set()) == (snapshot, frozenset())


def test_the_node_url_setting() -> None:
    assert node_url_of(Settings(host="10.1.2.3", port=9000)) == "http://10.1.2.3:9000"
    assert node_url_of(Settings(host="::1", port=9000)) == "http://[::1]:9000"
    assert "0.0.0.0" not in node_url_of(Settings(host="0.0.0.0"))
    given = Settings.from_env({"CALLBRIDGE_NODE_URL": "http://node-1.internal:8080/"})
    assert node_url_of(given) == "http://node-1.internal:8080"
    with pytest.raises(ValidationError) as refused:
        Settings.from_env({"CALLBRIDGE_NODE_URL": "node-1:8080"})
    assert refused.value.field == "CALLBRIDGE_NODE_URL"
