"""The console's feed: for each organization someone watches, what its page shows, pushed.

One loop serves every connected console. Each pass (ten a second, ``LEVELS_EVERY_S``) it points
the media plane's level meters at the live legs of the watched organizations only and sends each
organization its legs' levels; every ``LIVE_EVERY`` passes its live legs and rooms; every
``STORED_EVERY`` passes what the store holds (bridges and numbers, the newest webhooks, the
audit log), each only when it changed. An organization's messages go to its own subscribers and
no one else's. With no subscriber the loop sleeps and no level is measured.

A subscriber is a bounded queue: one that falls behind loses its oldest messages (every message
is a whole state, so the next one repairs it), never the engine's time.

Listeners (``listen``) subscribe to one room's audio instead: each pass, the level meters' pass
keeps the decoded samples of the members of every listened room, and each room's listeners get
the members' sum (``engine/console/listening.py``). A listened room counts as watched. A muted
conference participant reads silent on its meter and is left out of the sum: both show what its
room hears of it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any

import orjson

from engine.console.room_mix import audio_message, room_mix
from engine.console.views import audit_view, bridges_view, live_view, webhooks_view
from engine.errors import NotFound
from engine.logs import get_logger
from engine.machine.hearing import audience
from engine.machine.model import Room
from engine.media_plane.levels import SILENT_DBFS
from engine.store.base import DeliveryFilter, Store

if TYPE_CHECKING:
    from engine.runtime.runtime import CallRuntime

__all__ = ["LEVELS_EVERY_S", "ConsoleHub", "Message"]

log = get_logger("callbridge.console")

LEVELS_EVERY_S = 0.1  # ten level updates a second (the console promises at least five)
LIVE_EVERY = 5  # passes: legs and rooms twice a second
STORED_EVERY = 10  # passes: bridges, webhooks and the audit log once a second
WEBHOOKS_SHOWN = 50
AUDIT_SHOWN = 20
BRIDGES_SHOWN = 200
QUEUE_MESSAGES = 64

Message = tuple[str, bytes] | None  # (event name, JSON); None ends the stream


class ConsoleHub:
    def __init__(self, runtime: CallRuntime, store: Store, clock: Callable[[], float]) -> None:
        self._runtime = runtime
        self._store = store
        self._clock = clock
        self._subscribers: dict[int, set[asyncio.Queue[Message]]] = {}
        self._sent: dict[int, dict[str, bytes]] = {}  # each organization's latest of each kind
        self._fresh: set[int] = set()  # organizations with a new subscriber: everything now
        self._woken = asyncio.Event()
        self._stopped = False
        # Rooms someone listens to: room id -> (its organization, the listeners' queues).
        self._listeners: dict[str, tuple[int, set[asyncio.Queue[Message]]]] = {}

    def watched(self) -> frozenset[int]:
        return frozenset(self._subscribers) | {org for org, _ in self._listeners.values()}

    def listen(
        self, org_id: int, room_id: str
    ) -> contextlib.AbstractAsyncContextManager[asyncio.Queue[Message]]:
        """A queue of the room's audio, to enter; NotFound, at once, unless the room is live
        and the organization's."""
        rooms = self._runtime.machine.snapshot().rooms
        if not any(r.room_id == room_id and r.org_id == org_id for r in rooms):
            raise NotFound(f"no live room {room_id}", message="Room not found.")
        return self._listening(org_id, room_id)

    @contextlib.asynccontextmanager
    async def _listening(self, org_id: int, room_id: str) -> AsyncIterator[asyncio.Queue[Message]]:
        queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=QUEUE_MESSAGES)
        self._listeners.setdefault(room_id, (org_id, set()))[1].add(queue)
        self._woken.set()
        try:
            yield queue
        finally:
            _, queues = self._listeners.get(room_id, (org_id, set()))
            queues.discard(queue)
            if not queues:
                self._listeners.pop(room_id, None)

    @contextlib.asynccontextmanager
    async def subscribe(self, org_id: int) -> AsyncIterator[asyncio.Queue[Message]]:
        """A queue of the organization's messages, starting with the latest of each kind."""
        queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=QUEUE_MESSAGES)
        for event, data in self._sent.get(org_id, {}).items():
            queue.put_nowait((event, data))
        self._subscribers.setdefault(org_id, set()).add(queue)
        self._fresh.add(org_id)
        self._woken.set()
        try:
            yield queue
        finally:
            queues = self._subscribers.get(org_id, set())
            queues.discard(queue)
            if not queues:
                self._subscribers.pop(org_id, None)
                self._sent.pop(org_id, None)

    def refresh(self, org_id: int) -> None:
        """Send the organization everything at the next pass (after one of its controls)."""
        self._fresh.add(org_id)

    def end_streams(self) -> None:
        """The app is shutting down: every subscriber's stream ends."""
        for queues in [*self._subscribers.values(), *(q for _, q in self._listeners.values())]:
            for queue in queues:
                _put(queue, None)

    def stop(self) -> None:
        self._stopped = True
        self._woken.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        passes = 0
        due = loop.time()
        while not self._stopped:
            if not self.watched():
                self._runtime.plane.levels.watch(())  # nobody looks: nothing is measured
                self._woken.clear()
                await self._woken.wait()
                passes, due = 0, loop.time()
                continue
            try:
                await self._pass(passes)
            except Exception:
                log.exception("console feed pass failed")
            passes += 1
            # A fixed rate, not a fixed pause: a slow pass does not slow the meters down.
            due = max(due + LEVELS_EVERY_S, loop.time())
            await asyncio.sleep(due - loop.time())
        self._runtime.plane.levels.watch(())

    async def _pass(self, passes: int) -> None:
        orgs = self.watched()
        fresh, self._fresh = self._fresh & orgs, set()
        self._levels(orgs)
        now = self._clock()
        for org_id in orgs:
            if passes % LIVE_EVERY == 0 or org_id in fresh:
                self._publish(org_id, "live", live_view(self._runtime, org_id, now))
            if passes % STORED_EVERY == 0 or org_id in fresh:
                await self._stored(org_id)

    def _levels(self, orgs: frozenset[int]) -> None:
        plane = self._runtime.plane
        snapshot = self._runtime.machine.snapshot()  # one per pass, ten a second
        live = [
            leg
            for leg in snapshot.legs
            if leg.org_id in orgs and leg.is_alive and plane.is_attached(leg.call_control_id)
        ]
        owner = {leg.call_control_id: leg.org_id for leg in live}
        # A leg its room does not hear (muted, held, a monitoring supervisor: the machine's
        # audience) shows on its meter what the room hears of it: nothing.
        muted = {leg.call_control_id for leg in live if audience(leg) == frozenset()}
        plane.levels.watch(owner)
        members = self._listened_members(snapshot.rooms)
        heard = {leg for legs in members.values() for leg in legs}
        levels: dict[int, dict[str, float | None]] = {org_id: {} for org_id in orgs}
        for leg_id, level in plane.levels.take(plane.input_format, heard).items():
            levels[owner[leg_id]][leg_id] = SILENT_DBFS if leg_id in muted else level
        for org_id, of_org in levels.items():
            self._publish(org_id, "levels", of_org, always=True)
        for room_id, legs in members.items():
            kept = plane.levels.kept
            mix = room_mix(kept[leg] for leg in legs if leg in kept and leg not in muted)
            for queue in self._listeners[room_id][1]:
                _put(queue, ("audio", orjson.dumps(audio_message(mix))))

    def _listened_members(self, live_rooms: Iterable[Room]) -> dict[str, tuple[str, ...]]:
        """Each listened room's members now; a room that ended ends its listeners' streams."""
        rooms = {room.room_id: room for room in live_rooms}
        members: dict[str, tuple[str, ...]] = {}
        for room_id, (_, queues) in list(self._listeners.items()):
            room = rooms.get(room_id)
            if room is None:
                for queue in queues:
                    _put(queue, None)
                continue
            members[room_id] = tuple(room.members)
        return members

    async def _stored(self, org_id: int) -> None:
        store = self._store
        bridges, _ = await store.list_bridges(org_id, status=None, offset=0, limit=BRIDGES_SHOWN)
        self._publish(org_id, "bridges", bridges_view(bridges))
        webhooks, _ = await store.list_webhook_deliveries(
            org_id, DeliveryFilter(), offset=0, limit=WEBHOOKS_SHOWN
        )
        self._publish(org_id, "webhooks", webhooks_view(webhooks))
        self._publish(org_id, "audit", audit_view(await store.audit_entries(org_id, AUDIT_SHOWN)))

    def _publish(self, org_id: int, event: str, payload: Any, *, always: bool = False) -> None:
        queues = self._subscribers.get(org_id)
        if not queues:  # its last console left meanwhile
            return
        data = orjson.dumps(payload)
        sent = self._sent.setdefault(org_id, {})
        if not always and sent.get(event) == data:
            return
        sent[event] = data
        for queue in queues:
            _put(queue, (event, data))


def _put(queue: asyncio.Queue[Message], message: Message) -> None:
    """Queue without waiting; a full queue loses its oldest message."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(message)
