"""No answered leg without media: the machine's watch over each leg's media stream.

An answered leg whose audio never reaches callbridge is worse than a failed call: the caller
sits in silence, billed, for up to the leg's time limit. So from the moment a leg is answered,
and again whenever its stream stops while the leg lives on, the machine expects media within
``media_wait_s`` (a ``MEDIA_WAIT`` timer). The stream failing outright (a provider's
``streaming.failed``, a ``start`` in a codec callbridge cannot decode: ``MediaFailed``) counts
the same as the wait running out.

- A problem: ask the provider for a new stream (``RestartMedia``) and wait again. A stream that
  drops and reconnects by itself within the wait costs nothing.
- Another problem within ``RESTART_WINDOW_S`` of that request, whether the new stream never came
  or came and failed again: hang the leg up at the provider and tell the application with
  ``call.hangup`` (``hangup_cause`` ``unspecified``: the API's closed set has nothing closer; the
  reason in the ``callbridge_reason`` extension field). A stream that flaps is not restarted
  forever, while one that drops once an hour gets its retry each time.
- Media starting clears the timer.
"""

from __future__ import annotations

from engine.machine import legs
from engine.machine.core import Core
from engine.machine.effects import HangupCall, RestartMedia
from engine.machine.events import MediaFailed
from engine.machine.model import HangupCause, HangupSource, Leg, LegState, TimerKind
from engine.machine.transitions import Trigger, next_state

# States in which a leg has been answered and is still up: it should be hearing and heard.
_ANSWERED = frozenset(
    {
        LegState.ANSWERED,
        LegState.BRIDGING,
        LegState.BRIDGED,
        LegState.PARKED,
        LegState.HELD,
        LegState.QUEUED,
    }
)
MEDIA_TIMEOUT = "media_timeout"
RESTART_WINDOW_S = 60.0


def expect_media(core: Core, leg: Leg) -> Leg:
    """The leg is answered, or lost its stream: start waiting for media unless it is flowing."""
    if leg.media_started or leg.state not in _ANSWERED:
        return leg
    leg = core.cancel_timers(leg, TimerKind.MEDIA_WAIT)
    return core.start_timer(leg, TimerKind.MEDIA_WAIT, core.media_wait_s)


def adopted(core: Core, leg: Leg) -> None:
    """A restarted process took the leg over: whatever stream it had went with the old process.
    An answered leg gets a new stream asked for at once (not after the media wait: nobody has
    heard anything since the restart) and the usual wait for it; this request does not count
    against the leg's next problem, which gets its own restart."""
    if leg.state not in _ANSWERED:
        return
    leg = core.cancel_timers(leg, TimerKind.MEDIA_WAIT)
    leg = core.update(leg, media_started=False, media_restarted_at=None)
    core.emit(RestartMedia(leg.call_control_id))
    core.start_timer(leg, TimerKind.MEDIA_WAIT, core.media_wait_s)


def media_flowing(core: Core, leg: Leg) -> Leg:
    """The stream started: nothing to wait for."""
    return core.cancel_timers(leg, TimerKind.MEDIA_WAIT)


def wait_expired(core: Core, leg: Leg) -> None:
    if leg.media_started:
        return
    _problem(core, leg, MEDIA_TIMEOUT, f"no media stream within {core.media_wait_s:g} s")


def media_failed(core: Core, leg: Leg, event: MediaFailed) -> None:
    if leg.state not in _ANSWERED and leg.state is not LegState.ANSWERING:
        return  # not answered yet (the answer will start the wait) or already ending
    _problem(core, leg, event.reason, event.detail)


def _problem(core: Core, leg: Leg, reason: str, detail: str) -> None:
    leg = core.cancel_timers(leg, TimerKind.MEDIA_WAIT)
    last = leg.media_restarted_at
    if last is None or core.now - last > RESTART_WINDOW_S:
        core.emit(RestartMedia(leg.call_control_id))
        leg = core.update(leg, media_restarted_at=core.now)
        core.start_timer(leg, TimerKind.MEDIA_WAIT, core.media_wait_s)
        return
    if next_state(leg.state, Trigger.PROVIDER_FAILED) is None:
        return
    legs.end_leg(
        core,
        leg,
        Trigger.PROVIDER_FAILED,
        HangupCause.UNSPECIFIED,
        HangupSource.UNKNOWN,
        provider=HangupCall(leg.call_control_id),
        reason=reason,
        detail=detail,
    )
