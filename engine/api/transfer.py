"""``POST /v2/calls/{id}/actions/transfer``: the leg is connected to a new party, dialled through
the leg's own bridge (its provider), and bridged with it when that party answers.

Call Control v2's transfer (its SDK's ``actions.transfer`` and ``ActionTransferParams``): "If the
transfer is unsuccessful, a call.hangup webhook for the other call (Leg B) will be sent ... The
original call will remain active and may be issued additional commands". Expected webhooks:
``call.initiated`` (B), ``call.answered`` or ``call.hangup`` (B), ``call.bridged``. callbridge
carries it out as the dial it is: ``POST /v2/calls`` of ``to`` with ``link_to`` the leg and
``bridge_on_answer`` (engine/machine/legs.py), so B has every event and limit a dialled leg has
(the organization's ``max_legs`` included) and the leg stays as it was until B answers. ``from``
defaults to the leg's ``to``, as Call Control documents; ``target_leg_client_state`` is B's
client_state and ``webhook_url`` B's webhook URL; the command's own ``client_state`` is the
leg's, from now on, as for every command.

What callbridge cannot do is refused, naming the field (422), never accepted and ignored:
answering machine detection, SIP-level settings, a recording or DTMF muting of the new bridge,
audio played to B before bridging, and the destination's early media (a provider stream starts
at answer, so ``early_media`` may only be false).
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from engine.api.keys import RUNTIME
from engine.api.rate_limit import dial_within_limit
from engine.errors import InvalidState
from engine.machine.command_body import Body, ParameterError
from engine.machine.commands import ClientStateUpdate, Dial, parse_number
from engine.machine.model import DEFAULT_TIME_LIMIT_SECS, Leg, LegState

__all__ = ["transfer"]
#: Answered, in a room or not: a leg whose call is up. A leg still ringing has nothing to move.
TRANSFERABLE = frozenset(
    {LegState.ANSWERED, LegState.BRIDGING, LegState.BRIDGED, LegState.PARKED, LegState.HELD}
)


def parse_transfer(
    body: Mapping[str, object], leg: Leg, *, allow_private_urls: bool
) -> tuple[Dial, str | None]:
    """The dial that carries the transfer out, and the leg's new client_state (if any)."""
    b = Body(body, allow_private_urls=allow_private_urls)
    if b.flag("early_media", default=False):
        raise ParameterError(
            "'early_media' must be false: callbridge has no early media of the destination "
            "(a provider's media stream starts at answer)",
            field="early_media",
        )
    common = b.common()
    to = parse_number(b, "to", ("sip:", "sips:"))
    dial = Dial(
        connection_id=leg.connection_id,
        from_=parse_number(b, "from", ("sip:", "sips:")) if b.has("from") else leg.to,
        to=to,
        link_to=leg.call_control_id,
        bridge_on_answer=True,
        timeout_secs=b.req_integer("timeout_secs", 5, 600, 30),
        time_limit_secs=b.req_integer("time_limit_secs", 30, 14400, DEFAULT_TIME_LIMIT_SECS),
        webhook_url=b.url("webhook_url", ("http://", "https://")),
        client_state=b.base64("target_leg_client_state"),
        command_id=common["command_id"],
    )
    b.refuse_unread()  # a field read above is carried out; any other is refused, named
    return dial, common["client_state"]


async def transfer(
    request: web.Request,
    org_id: int,
    leg_id: str,
    body: Mapping[str, object],
    *,
    allow_private_urls: bool,
) -> None:
    runtime = request.app[RUNTIME]
    leg = runtime.machine.leg(leg_id, org_id)  # NotFound: unknown, or another organization's
    dial, client_state = parse_transfer(body, leg, allow_private_urls=allow_private_urls)
    if leg.state not in TRANSFERABLE:
        raise InvalidState(
            f"a leg that is {leg.state.value} cannot be transferred: answer it first"
        )
    if client_state is not None:
        await runtime.command(org_id, leg_id, ClientStateUpdate(client_state=client_state))
    await dial_within_limit(request, org_id, dial, default_webhook_url=None)
