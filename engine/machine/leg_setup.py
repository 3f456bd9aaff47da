"""Legs that never get going, and legs whose provider no longer has their call.

- **Setup timeout.** An incoming leg waits in ``initiated`` (for the application's answer or
  reject) and then ``answering`` (for the provider's confirmation) at most ``setup_timeout_s``
  from its arrival, one ``SETUP_TIMEOUT`` timer for both. When it fires the leg is hung up at
  the provider and the application gets ``call.hangup`` (``hangup_cause`` ``timeout``, the
  closest in Call Control's closed set; ``callbridge_reason`` ``setup_timeout``). Without it a
  leg whose application never answers, or whose answer the provider never confirms, would stay
  in callbridge (counted against its bridge's channels) for as long as the process lives.
- **Provider call gone.** The runtime's reconciliation asks the provider about quiet or stuck
  legs; when the provider says the call is over (``ProviderCallGone``), the leg ends with
  ``call.hangup`` (``unspecified``: nobody told us why; ``callbridge_reason``
  ``provider_call_gone``) and a best-effort provider hangup, which the provider answers with
  "already ended" when it is right.
"""

from __future__ import annotations

from engine.machine import legs
from engine.machine.core import Core
from engine.machine.effects import HangupCall
from engine.machine.events import ProviderCallGone
from engine.machine.model import HangupCause, HangupSource, Leg, TimerKind
from engine.machine.transitions import Trigger, next_state

DEFAULT_SETUP_TIMEOUT_S = 60.0
SETUP_TIMEOUT = "setup_timeout"
PROVIDER_CALL_GONE = "provider_call_gone"


def start_setup_timer(core: Core, leg: Leg) -> Leg:
    """An incoming leg arrived: it must be answered within the setup timeout."""
    if core.setup_timeout_s is None:
        return leg
    return core.start_timer(leg, TimerKind.SETUP_TIMEOUT, core.setup_timeout_s)


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
