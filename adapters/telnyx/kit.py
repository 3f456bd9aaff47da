"""The Telnyx adapter as the app sees it: its ``ProviderKit`` and its routes.

``install`` registers the kit under ``"telnyx"`` (the provider directory finds it for every
configuration of that provider) and the two endpoints, ``POST /webhooks/telnyx`` and
``GET /media/telnyx``. The kit owns what lives as long as the app: the map between callbridge's
legs and Telnyx's calls, shared by every configuration's gateway and the webhook handler.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from adapters.carrier import Carrier
from adapters.context import AdapterContext
from adapters.telnyx import provisioning
from adapters.telnyx.gateway import MEDIA_PATH, WEBHOOK_PATH, TelnyxGateway, TelnyxLegs, TelnyxRest
from adapters.telnyx.handlers import TelnyxHandlers
from adapters.telnyx.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER
from adapters.telnyx.stream import AUTH_TOKEN_HEADER
from engine.api.ops import OPENAPI_DOC
from engine.cluster.webhooks import to_owner
from engine.machine.model import Leg
from engine.store.base import BridgeRecord, ProviderConfigRecord

__all__ = ["TELNYX_KIT", "TelnyxKit", "install"]


class TelnyxKit:
    def __init__(self, context: AdapterContext) -> None:
        self.context = context
        self.legs = TelnyxLegs()
        self.handlers = TelnyxHandlers(self)

    def gateway(self, config: ProviderConfigRecord) -> TelnyxGateway:
        return TelnyxGateway(self.context, config, self.legs)

    def adopt(self, leg: Leg, carrier: Carrier, config: ProviderConfigRecord) -> None:
        """A leg an earlier process carried: its Telnyx call is known again by its id."""
        assert carrier.call is not None  # the directory adopts only legs with a call
        self.legs.add(leg.call_control_id, carrier.call, config)

    def _rest(self, config: ProviderConfigRecord, auth_token: str) -> TelnyxRest:
        return TelnyxRest(self.context, config.api_base_url, auth_token)

    async def attach_number(
        self, config: ProviderConfigRecord, auth_token: str, number: str, bridge: BridgeRecord
    ) -> None:
        await provisioning.attach_number(
            self._rest(config, auth_token), config, number, self.context.public_url(WEBHOOK_PATH)
        )

    async def detach_number(
        self, config: ProviderConfigRecord, auth_token: str, number: str
    ) -> None:
        await provisioning.detach_number(self._rest(config, auth_token), config, number)


TELNYX_KIT = web.AppKey("telnyx_kit", TelnyxKit)


def install(app: web.Application, context: AdapterContext) -> None:
    kit = TelnyxKit(context)
    context.kits["telnyx"] = kit
    app[TELNYX_KIT] = kit
    # A webhook for a call another node holds is that node's (engine/cluster/webhooks.py).
    routed = to_owner(
        kit.handlers.webhook, kit.handlers.locate, (SIGNATURE_HEADER, TIMESTAMP_HEADER)
    )
    app.router.add_post(WEBHOOK_PATH, routed)
    app.router.add_get(MEDIA_PATH, kit.handlers.media)
    context.media_bindings[MEDIA_PATH] = kit.handlers.media_binding
    app.cleanup_ctx.append(_settle_on_shutdown)
    app.on_startup.append(_describe)


async def _describe(app: web.Application) -> None:
    # The document is built after the adapters are installed: add this adapter's endpoints.
    if OPENAPI_DOC in app:
        app[OPENAPI_DOC]["paths"].update(openapi_paths())


def _header(name: str, description: str, required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "description": description,
        "schema": {"type": "string"},
    }


def openapi_paths() -> dict[str, Any]:
    text = {"text/plain": {"schema": {"type": "string"}}}
    return {
        WEBHOOK_PATH: {
            "post": {
                "summary": "Telnyx Call Control webhook (provider side)",
                "description": "Verified with the Ed25519 public key of the configuration that "
                "owns the call (the dialled number's, or the leg's), over `timestamp|raw body`, "
                "within 300 s; deduplicated on `data.id`; out-of-order deliveries tolerated.",
                "parameters": [
                    _header(SIGNATURE_HEADER, "base64 Ed25519 signature", True),
                    _header(TIMESTAMP_HEADER, "Unix time in seconds", True),
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "responses": {
                    "200": {
                        "description": "Handled, a duplicate, or for no known call",
                        "content": text,
                    },
                    "400": {"description": "Not a Telnyx webhook body", "content": text},
                    "403": {"description": "Signature refused", "content": text},
                    "500": {"description": "Handling failed: Telnyx retries", "content": text},
                    "503": {
                        "description": "The call's node (with Redis) is gone or unreachable: "
                        "Telnyx retries",
                        "content": text,
                    },
                },
            }
        },
        MEDIA_PATH: {
            "get": {
                "summary": "Telnyx media stream (websocket, bidirectional rtp mode)",
                "description": "The leg token comes in the `token` query parameter (callbridge "
                "puts it in the `stream_url` it gives Telnyx), else in the streaming auth token "
                "header or the `connected` frame. A stream without a valid token for its call is "
                "closed with code 1008 and a reason; a malformed frame, with 1007.",
                "parameters": [
                    {
                        "name": "token",
                        "in": "query",
                        "required": False,
                        "description": "Short-lived leg token",
                        "schema": {"type": "string"},
                    },
                    _header(AUTH_TOKEN_HEADER, "Leg token, when given as stream_auth_token"),
                ],
                "responses": {"101": {"description": "Switching Protocols (websocket)"}},
            }
        },
    }


async def _settle_on_shutdown(app: web.Application) -> AsyncIterator[None]:
    yield
    # Rejects still in flight finish (or fail) before the HTTP session closes.
    await app[TELNYX_KIT].handlers.settle()
