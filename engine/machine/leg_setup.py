"""Legs that never get going, and legs whose provider no longer has their call.

- **Setup timeout.** An incoming leg waits in ``initiated`` (for the application's answer or
  reject) and then ``answering`` (for the provider's confirmation) at most ``setup_timeout_s``
  from its arrival, one ``SETUP_TIMEOUT`` timer for both. When it fires the leg is hung up at
  the provider and the application gets ``call.hangup`` (``hangup_cause`` ``timeout``, the
  closest in Call Control's closed set; ``callbridge_reason`` ``setup_timeout``). Without it a
  leg whose application never answers, or whose answer the provider never confirms, would stay
  in callbridge (counted against its bridge's channels) for as long as the process lives.
- **Answered.** The provider confirms the answer (``LegAnswered``), or the stream callbridge
  asked for in its answer starts while the leg still waits for that confirmation: a stream flows
  only on an answered call, so its start stands for a confirmation that was lost (a webhook
  refused while the store was unreachable, and not sent again) or is late (then ignored).
- **Provider call gone.** The runtime's reconciliation asks the provider about quiet or stuck
  legs; when the provider says the call is over (``ProviderCallGone``), the leg ends with
  ``call.hangup`` (``unspecified``: nobody told us why; ``callbridge_reason``
  ``provider_call_gone``) and a best-effort provider hangup, which the provider answers with
  "already ended" when it is right.
"""

from __future__ import annotations

from engine.machine import legs, streams
from engine.machine.core import Core, iso
from engine.machine.effects import HangupCall
from engine.machine.events import ProviderCallGone
from engine.machine.model import HangupCause, HangupSource, Leg, LegState, TimerKind
from engine.machine.transitions import Trigger, next_state

DEFAULT_SETUP_TIMEOUT_S = 60.0
SETUP_TIMEOUT = "setup_timeout"
PROVIDER_CALL_GONE = "provider_call_gone"


def start_setup_timer(core: Core, leg: Leg) -> Leg:
    """An incoming leg arrived: it must be answered within the setup timeout."""
    if core.setup_timeout_s is None:
        return leg
    return core.start_timer(leg, TimerKind.SETUP_TIMEOUT, core.setup_timeout_s)


def answered(core: Core, leg: Leg) -> None:
    if next_state(leg.state, Trigger.LEG_ANSWERED) is None:
        return  # a duplicate or late answer
    leg = core.cancel_timers(leg, TimerKind.RING_TIMEOUT, TimerKind.SETUP_TIMEOUT)
    leg = core.move(leg, Trigger.LEG_ANSWERED, answered_at=core.now)
    leg = core.start_timer(leg, TimerKind.TIME_LIMIT, leg.time_limit_secs)
    leg = streams.expect_media(core, leg)
    core.webhook(leg, "call.answered", state="answered", start_time=iso(leg.start_time))
    legs.after_answer(core, leg)


def answered_by_stream(core: Core, leg: Leg) -> Leg:
    """The leg as its stream's start finds it: answered first if it was still ``answering``."""
    if leg.state is not LegState.ANSWERING:
        return leg
    answered(core, leg)
    return core.legs[leg.call_control_id]


def setup_expired(core: Core, leg: Leg) -> None:
    if next_state(leg.state, Trigger.SETUP_TIMEOUT) is None:
        return  # answered meanwhile (its timer is cancelled then; a late firing)
    legs.end_leg(
        core,
        leg,
        Trigger.SETUP_TIMEOUT,
        HangupCause.TIMEOUT,
        leg.our_side,
        provider=HangupCall(leg.call_control_id),
        reason=SETUP_TIMEOUT,
        detail=f"not answered within {core.setup_timeout_s:g} s (state {leg.state.value})",
    )


def provider_gone(core: Core, leg: Leg, event: ProviderCallGone) -> None:
    if next_state(leg.state, Trigger.LEG_HUNG_UP) is None:
        return
    legs.end_leg(
        core,
        leg,
        Trigger.LEG_HUNG_UP,
        HangupCause.UNSPECIFIED,
        HangupSource.UNKNOWN,
        provider=HangupCall(leg.call_control_id),
        reason=PROVIDER_CALL_GONE,
        detail=event.detail,
    )
