"""Which leg or call a Twilio webhook is about: read from its form (``CallSid``) or its URL (a
dialled call's names its leg, ``?leg=``), for the handlers and for the routing of a webhook to
the node that holds its call (engine/cluster/webhooks.py)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aiohttp import web

from adapters.twilio.gateway import LEG_QUERY, TwilioLeg, TwilioLegs
from engine.admission.live import provider_call
from engine.cluster.webhooks import WebhookTarget

FormParams = dict[str, list[str]]


def form_params(fields: Iterable[tuple[str, object]]) -> FormParams:
    """Every form field with all its values, as text (what the signature covers)."""
    params: FormParams = {}
    for name, value in fields:
        params.setdefault(name, []).append(value if isinstance(value, str) else "")
    return params


def first_values(params: FormParams) -> dict[str, str]:
    return {name: values[0] for name, values in params.items()}


def known_leg(
    legs: TwilioLegs, request: web.Request, fields: Mapping[str, str]
) -> TwilioLeg | None:
    leg_id = request.query.get(LEG_QUERY)
    if leg_id:
        return legs.by_id(leg_id)
    call_sid = fields.get("CallSid")
    return legs.by_sid(call_sid) if call_sid else None


async def locate(legs: TwilioLegs, request: web.Request) -> WebhookTarget | None:
    """The leg (a dialled call's URL names it) or the call (``CallSid``) a webhook is for,
    when this node does not hold it: another node may. Unverified: only the owner's answer
    counts, and it verifies the signature itself."""
    await request.read()  # kept by aiohttp: the handler, or the forwarder, reads it again
    fields = first_values(form_params((await request.post()).items()))
    if known_leg(legs, request, fields) is not None:
        return None
    leg_id = request.query.get(LEG_QUERY)
    if leg_id:
        return WebhookTarget(leg_id=leg_id)
    call_sid = fields.get("CallSid")
    if not call_sid:
        return None
    # A voice webhook may start a call, which may belong where its bridge's conference is.
    new = request.path.endswith("/voice") and fields.get("Direction") == "inbound"
    return WebhookTarget(
        call=provider_call("twilio", call_sid), number=fields.get("To") if new else None
    )
