"""The Twilio adapter as the composition root sees it: one ``TwilioKit`` and its routes.

``install`` registers the kit under the catalog slug ``"twilio"`` (the ``ProviderDirectory``
finds it there for dials and for connecting numbers) and adds the voice webhook, the status
callback and the media websocket routes. The kit owns the process's Twilio legs
(``TwilioLegs``) and hands out one ``TwilioGateway`` per provider configuration over them.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from adapters.carrier import Carrier
from adapters.context import AdapterContext
from adapters.twilio import provisioning
from adapters.twilio.gateway import (
    MEDIA_PATH,
    STATUS_PATH,
    VOICE_PATH,
    TwilioGateway,
    TwilioLeg,
    TwilioLegs,
    TwilioRest,
)
from adapters.twilio.handlers import TwilioHandlers
from adapters.twilio.signature import SIGNATURE_HEADER
from engine.api.ops import OPENAPI_DOC
from engine.machine.model import Leg
from engine.store.base import BridgeRecord, ProviderConfigRecord

__all__ = ["DEFAULT_DECISION_TIMEOUT_S", "TwilioKit", "install"]

# How long a held inbound voice webhook waits for the engine to answer or reject the call.
# Twilio gives up on a webhook after 15 s; 10 s leaves room for the answer to travel.
DEFAULT_DECISION_TIMEOUT_S = 10.0


class TwilioKit:
    def __init__(
        self, context: AdapterContext, *, decision_timeout_s: float = DEFAULT_DECISION_TIMEOUT_S
    ) -> None:
        self.context = context
        self.legs = TwilioLegs()
        self.decision_timeout_s = decision_timeout_s

    def gateway(self, config: ProviderConfigRecord) -> TwilioGateway:
        return TwilioGateway(self.context, config, self.legs)

    def adopt(self, leg: Leg, carrier: Carrier, config: ProviderConfigRecord) -> None:
        """A leg an earlier process carried: known again by its CallSid. Its voice webhook was
        answered long ago (or never will be: its call is asked about when adopted)."""
        adopted = TwilioLeg(
            leg.call_control_id,
            leg.org_id,
            config,
            outbound=carrier.outbound,
            call_sid=carrier.call,
            answered=leg.answered_at is not None,
        )
        self.legs.add(adopted)

    def rest(self, config: ProviderConfigRecord, auth_token: str) -> TwilioRest:
        return TwilioRest(
            self.context.require_http(), config.account_sid, auth_token, config.api_base_url
        )

    async def attach_number(
        self, config: ProviderConfigRecord, auth_token: str, number: str, bridge: BridgeRecord
    ) -> None:
        await provisioning.attach(
            self.rest(config, auth_token),
            number,
            voice_url=self.context.public_url(VOICE_PATH),
            status_url=self.context.public_url(STATUS_PATH),
        )

    async def detach_number(
        self, config: ProviderConfigRecord, auth_token: str, number: str
    ) -> None:
        await provisioning.detach(
            self.rest(config, auth_token), number, voice_url=self.context.public_url(VOICE_PATH)
        )


def install(app: web.Application, context: AdapterContext) -> TwilioKit:
    kit = TwilioKit(context)
    context.kits["twilio"] = kit
    TwilioHandlers(kit).add_routes(app)
    app.on_startup.append(_describe)
    return kit


async def _describe(app: web.Application) -> None:
    # The document is built after the adapters are installed: add this adapter's endpoints.
    if OPENAPI_DOC in app:
        app[OPENAPI_DOC]["paths"].update(openapi_paths())


def openapi_paths() -> dict[str, Any]:
    signature = {
        "name": SIGNATURE_HEADER,
        "in": "header",
        "required": True,
        "description": "HMAC-SHA1 of the URL and sorted form fields with the account's auth "
        "token (base64)",
        "schema": {"type": "string"},
    }
    form = {
        "required": True,
        "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}},
    }
    text = {"text/plain": {"schema": {"type": "string"}}}
    xml = {"text/xml": {"schema": {"type": "string"}}}
    refused = {"description": "Missing or bad signature, or another account", "content": text}
    gone = {"description": "The call's node (with Redis) is gone or unreachable", "content": text}
    return {
        VOICE_PATH: {
            "post": {
                "summary": "Twilio voice webhook (provider side)",
                "description": "An inbound call is routed by the bridge of its `To` number; the "
                "response is held until the engine answers (`<Connect><Stream>` with the leg "
                "token as a `<Parameter>`), rejects (`<Reject>`) or hangs up (`<Hangup/>`), or "
                "rejected busy after the decision timeout. An outbound call's webhook (the "
                "callee answered) gets `<Connect><Stream>` at once.",
                "parameters": [signature],
                "requestBody": form,
                "responses": {
                    "200": {"description": "TwiML", "content": xml},
                    "400": {"description": "Not a Twilio voice webhook", "content": text},
                    "403": refused,
                    "503": gone,
                },
            }
        },
        STATUS_PATH: {
            "post": {
                "summary": "Twilio call status callback (provider side)",
                "description": "Terminal statuses end the leg; others are acknowledged. A "
                "callback for a call callbridge does not track is acknowledged and logged.",
                "parameters": [signature],
                "requestBody": form,
                "responses": {
                    "200": {"description": "Acknowledged"},
                    "400": {"description": "Not a Twilio status callback", "content": text},
                    "403": refused,
                    "503": gone,
                },
            }
        },
        MEDIA_PATH: {
            "get": {
                "summary": "Twilio Media Streams (websocket, bidirectional)",
                "description": "The leg token comes in `start.customParameters.leg_token`; a "
                "signed upgrade is checked against the `wss://` stream URL. A stream without a "
                "valid token for a live leg, or a second stream for a leg, is closed with code "
                "1008 and a reason; a malformed frame, with 1007.",
                "parameters": [{**signature, "required": False}],
                "responses": {"101": {"description": "Switching Protocols (websocket)"}},
            }
        },
    }
