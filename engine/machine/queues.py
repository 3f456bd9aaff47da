"""Queues: enqueue, leave_queue, the wait limit, and taking a call out for any other reason.

A queue belongs to one organization and exists while it holds calls; its `max_size` is fixed
by the enqueue that creates it. Positions are 1-based. Every way out emits ``call.dequeued``
with the Call Control v2 reason: bridged, hangup, leave or timeout.
"""

from __future__ import annotations

from dataclasses import replace

from engine.errors import InvalidState
from engine.machine.commands import Enqueue
from engine.machine.core import Core
from engine.machine.model import INVALID_STATE_CODE, Leg, Queue, TimerKind
from engine.machine.transitions import Trigger, require

DEFAULT_MAX_SIZE = 100


def check_enqueue(core: Core, leg: Leg, command: Enqueue) -> None:
    require(leg.state, Trigger.ENQUEUE)
    queue = core.queues.get((leg.org_id, command.queue_name))
    if queue is not None and len(queue.members) >= queue.max_size:
        raise InvalidState(
            f"queue '{command.queue_name}' is full ({queue.max_size} calls)",
            field="queue_name",
            code=INVALID_STATE_CODE,
        )


def enqueue(core: Core, leg: Leg, command: Enqueue) -> Leg:
    """Put a checked leg at the tail of its queue. The caller detached it first."""
    key = (leg.org_id, command.queue_name)
    queue = core.queues.get(key) or Queue(
        leg.org_id, command.queue_name, command.max_size or DEFAULT_MAX_SIZE
    )
    queue = core.queues[key] = replace(queue, members=(*queue.members, leg.call_control_id))
    leg = core.move(leg, Trigger.ENQUEUE, queue_name=queue.name, enqueued_at=core.now)
    if command.max_wait_time_secs is not None:
        leg = core.start_timer(leg, TimerKind.QUEUE_WAIT, command.max_wait_time_secs)
    core.webhook(
        leg,
        "call.enqueued",
        queue=queue.name,
        current_position=len(queue.members),
        queue_avg_wait_time_secs=queue.avg_wait_secs,
    )
    return leg


def remove(core: Core, leg: Leg, reason: str) -> Leg:
    """Take a queued leg out of its queue (its state is the caller's business)."""
    if leg.queue_name is None:
        return leg
    key = (leg.org_id, leg.queue_name)
    queue = core.queues[key]
    position = queue.members.index(leg.call_control_id) + 1
    waited = core.now - (leg.enqueued_at if leg.enqueued_at is not None else core.now)
    members = tuple(m for m in queue.members if m != leg.call_control_id)
    if members:
        core.queues[key] = replace(
            queue,
            members=members,
            total_wait_secs=queue.total_wait_secs + waited,
            left_count=queue.left_count + 1,
        )
    else:
        del core.queues[key]
    leg = core.cancel_timers(leg, TimerKind.QUEUE_WAIT)
    core.webhook(
        leg,
        "call.dequeued",
        queue=queue.name,
        queue_position=position,
        reason=reason,
        wait_time_secs=int(waited),
    )
    return core.update(leg, queue_name=None, enqueued_at=None)


def leave_queue(core: Core, leg: Leg) -> Leg:
    return core.move(remove(core, leg, "leave"), Trigger.LEAVE_QUEUE)


def queue_timed_out(core: Core, leg: Leg) -> None:
    """max_wait_time_secs passed: the call leaves the queue and is parked."""
    if leg.queue_name is not None:
        core.move(remove(core, leg, "timeout"), Trigger.QUEUE_TIMEOUT)


def head(core: Core, org_id: int, name: str) -> str:
    """The first call of a queue, for bridge's `queue`; refused clearly when there is none."""
    queue = core.queues.get((org_id, name))
    if queue is None or not queue.members:
        raise InvalidState(f"queue '{name}' is empty", field="queue", code=INVALID_STATE_CODE)
    return queue.members[0]
