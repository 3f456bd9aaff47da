"""What every provider adapter gets from the composition root, and the directory of gateways.

``AdapterContext`` carries the shared pieces (settings, store, secrets, live legs, leg tokens,
media stream sessions, an HTTP client session, the runtime once built). ``ProviderDirectory``
is the one dispatch point on provider: each adapter registers a ``ProviderKit`` under its
catalog slug (``"twilio"``, ``"telnyx"``), and the directory finds the kit for a configuration
when the engine dials out or connects a number, or adopts a leg an earlier process carried
(``adopt``: the leg's stored ``adapters.carrier.Carrier`` names its kit and configuration).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

from adapters.carrier import BadCarrier, Carrier
from adapters.leg_tokens import LegTokens
from adapters.media_session import StreamSessions
from adapters.stream_session import BindingFactory
from engine.admission.gate import Admission
from engine.admission.live import LiveLegs, provider_call
from engine.admission.routes import RouteLookup, RouteMemory
from engine.config import Settings
from engine.crypto import SecretBox
from engine.errors import ValidationError
from engine.logs import get_logger
from engine.machine.model import Leg
from engine.providers.gateway import AdoptedLeg, ProviderGateway
from engine.runtime.runtime import CallRuntime
from engine.store.base import BridgeRecord, ProviderConfigRecord, Store

log = get_logger("callbridge.adapters")


class ProviderKit(Protocol):
    """One provider's adapter, as the directory uses it."""

    def gateway(self, config: ProviderConfigRecord) -> ProviderGateway:
        """The gateway that places and controls calls through this configuration."""

    async def attach_number(
        self, config: ProviderConfigRecord, auth_token: str, number: str, bridge: BridgeRecord
    ) -> None: ...

    async def detach_number(
        self, config: ProviderConfigRecord, auth_token: str, number: str
    ) -> None: ...

    def adopt(self, leg: Leg, carrier: Carrier, config: ProviderConfigRecord) -> None:
        """Know the leg again, as its earlier process knew it (its provider call)."""


@dataclass
class AdapterContext:
    settings: Settings
    store: Store
    secret_box: SecretBox
    live: LiveLegs
    tokens: LegTokens
    clock: Callable[[], float]
    runtime: CallRuntime | None = None
    sessions: StreamSessions | None = None
    # Each provider's media path and how a stream opened there is bound (its kit registers
    # it), for the media port's server (adapters/picows_media.py).
    media_bindings: dict[str, BindingFactory] = field(default_factory=dict)
    http: aiohttp.ClientSession | None = None
    kits: dict[str, ProviderKit] = field(default_factory=dict)
    websocket_kit: Callable[[], ProviderGateway] | None = None
    # Closed when the process begins to stop: inbound calls are then rejected busy.
    admission: Admission = field(default_factory=Admission)
    # Numbers' last routes: an incoming call is refused busy while the database is unreachable.
    routes: RouteMemory = field(default_factory=RouteMemory)

    async def route_for(self, number: str) -> RouteLookup:
        """The number's route for an incoming call (``engine.admission.routes``); a remembered
        one while the database cannot be reached, counted as the refusal it leads to."""
        found = await self.routes.lookup(self.store, number)
        if not found.fresh:
            self.admission.refused("database_unavailable")
        return found

    def require_runtime(self) -> CallRuntime:
        if self.runtime is None:
            raise RuntimeError("the runtime is not wired yet")
        return self.runtime

    def require_sessions(self) -> StreamSessions:
        if self.sessions is None:
            raise RuntimeError("the media sessions are not wired yet")
        return self.sessions

    def require_http(self) -> aiohttp.ClientSession:
        if self.http is None:
            raise RuntimeError("the HTTP client session is not open (the app is not running)")
        return self.http

    def auth_token(self, config: ProviderConfigRecord) -> str:
        return self.secret_box.decrypt(config.auth_token_ciphertext)

    def public_url(self, path: str) -> str:
        return self.settings.public_url.rstrip("/") + path

    def public_media_url(self, path: str, *, http: bool = False) -> str:
        """Where providers open the media websocket ``path``: CALLBRIDGE_PUBLIC_MEDIA_URL, else
        the media port on the host, else the API's public URL (engine/config.py). ``http``:
        the same URL as http(s)://, the form Twilio's signature may also be computed over."""
        settings = self.settings
        if settings.public_media_url is not None:
            base = settings.public_media_url
        elif settings.media_port is not None:
            base = f"ws://{settings.host}:{settings.media_port}"
        else:
            base = settings.public_url
        url = _as_ws(base.rstrip("/")) + path
        if http:
            return "http" + url.removeprefix("ws")
        return url


def _as_ws(base: str) -> str:
    """A base URL in its websocket form (http -> ws, https -> wss; ws and wss as they are)."""
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://")
    if base.startswith("http://"):
        return "ws://" + base.removeprefix("http://")
    return base


class ProviderDirectory:
    """The engine's ``GatewayResolver`` and ``NumberProvisioner``, dispatching on provider."""

    def __init__(self, context: AdapterContext) -> None:
        self._context = context

    def kit(self, config: ProviderConfigRecord) -> ProviderKit:
        kit = self._context.kits.get(config.provider)
        if kit is None:
            raise ValidationError(f"provider {config.provider!r} has no adapter", field="provider")
        return kit

    async def for_dial(self, org_id: int, connection_id: str, to: str) -> ProviderGateway:
        if to.startswith(("ws://", "wss://")):
            if self._context.websocket_kit is None:
                raise ValidationError("websocket agent legs are not available", field="to")
            return self._context.websocket_kit()
        bridge = await self._context.store.get_bridge(org_id, connection_id)
        if bridge is None:
            raise ValidationError(
                f"connection_id {connection_id!r} names no bridge of this organization",
                field="connection_id",
            )
        if bridge.provider_config_id is None:
            raise ValidationError(
                f"bridge {bridge.slug} has no provider configuration connected",
                field="connection_id",
            )
        config = await self._context.store.get_provider_config(org_id, bridge.provider_config_id)
        if config is None or not config.active:
            raise ValidationError(
                f"the provider configuration of bridge {bridge.slug} is not active",
                field="connection_id",
            )
        return self.kit(config).gateway(config)

    async def adopt(self, leg: Leg) -> AdoptedLeg | None:
        if leg.carrier is None:
            return None  # a leg whose call was never placed (or a websocket agent's)
        try:
            found = Carrier.loads(leg.carrier)
        except BadCarrier as exc:
            log.error("stored leg has an unreadable carrier", leg_id=leg.call_control_id,
                      error=str(exc))  # fmt: skip
            return None
        kit = self._context.kits.get(found.provider)
        config = await self._context.store.get_provider_config(leg.org_id, found.config_id)
        if kit is None or config is None or found.call is None:
            log.warning(
                "stored leg cannot be reached again", leg_id=leg.call_control_id,
                provider=found.provider, config_id=found.config_id, has_call=found.call is not None,
            )  # fmt: skip
            return None
        kit.adopt(leg, found, config)
        call = provider_call(found.provider, found.call)
        return AdoptedLeg(kit.gateway(config), found.bridge_id, found.number, call)

    async def attach(
        self, config: ProviderConfigRecord, auth_token: str, number: str, bridge: BridgeRecord
    ) -> None:
        await self.kit(config).attach_number(config, auth_token, number, bridge)

    async def detach(self, config: ProviderConfigRecord, auth_token: str, number: str) -> None:
        await self.kit(config).detach_number(config, auth_token, number)
