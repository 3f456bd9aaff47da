"""The Telnyx endpoints: ``POST /webhooks/telnyx`` and the ``GET /media/telnyx`` websocket.

Webhook, in this order, nothing changing until the signature holds:

1. parse the raw body (malformed -> 400);
2. find the configuration that must have signed it: an incoming ``call.initiated`` by the route
   of its ``to`` number, any other event by the leg its Telnyx ``call_control_id`` belongs to
   (unknown call -> 200, logged: there is nothing to verify it with, and nothing to change;
   an unknown call's ``call.hangup`` is remembered ten minutes, so that call's late
   ``call.initiated`` starts no leg - forging one would need a Telnyx call id not yet issued);
3. verify ``telnyx-signature-ed25519`` over ``timestamp|raw body`` with that configuration's
   public key, 300 s either way (missing headers, bad signature, stale or future timestamp, a
   configuration without a public key -> 403, logged);
4. drop a delivery whose ``data.id`` was already handled (200): Telnyx retries and duplicates;
5. translate: ``call.initiated`` (incoming) -> admission, then ``LegInitiated`` or a REST
   reject; ``call.answered`` -> ``LegAnswered``; ``call.hangup`` -> ``LegHungUp``; the rest is
   logged. Events out of order are facts the machine ignores when they do not fit.
   An event the engine fails on (rolled back, logged with a fault id) is answered 500 and its
   id forgotten, with nothing of it left in the adapter: Telnyx sends it again to the
   connection's ``webhook_event_failover_url`` (callbridge's webhook, set at connect).

With Redis (several nodes), a webhook for a call another node holds is carried out there
(``locate``, engine/cluster/webhooks.py): the owner runs these steps, signature first.

Media: the socket is accepted and handed to the provider-neutral ``StreamSessions``; the leg is
the one named by the token (query string ``token``, else the ``x-telnyx-streaming-auth-token``
header, else the ``connected`` frame), and the ``start`` frame must be for that leg's Telnyx call.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from adapters.carrier import Carrier
from adapters.leg_tokens import InvalidLegToken
from adapters.stream_session import MediaBinding
from adapters.streams import StreamStart
from adapters.telnyx.gateway import LEG_QUERY, TelnyxLeg
from adapters.telnyx.signature import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    verify_webhook,
)
from adapters.telnyx.stream import AUTH_TOKEN_HEADER, TelnyxStreamCodec
from adapters.telnyx.webhooks import TelnyxEvent, parse_event
from adapters.transport import AiohttpMediaSocket
from engine.admission.inbound import Refusal, TakenElsewhere, admit
from engine.admission.live import provider_call
from engine.admission.routes import DATABASE_UNAVAILABLE, RouteLookup
from engine.cluster.webhooks import WebhookTarget
from engine.errors import InputFailed
from engine.logs import get_logger
from engine.machine import events as ev
from engine.machine.model import HangupCause, HangupSource
from engine.store.base import ProviderConfigRecord, Route

if TYPE_CHECKING:
    from adapters.telnyx.kit import TelnyxKit

__all__ = ["RecentEvents", "TelnyxHandlers"]

log = get_logger("callbridge.telnyx")

# Telnyx retries for at most 60 s and a replay older than 300 s fails the signature check, so
# ten minutes of event ids is enough memory; the count cap bounds it under a flood.
DEDUPE_TTL_S = 600.0
DEDUPE_MAX_IDS = 100_000

_HANGUP_CAUSES = {cause.value: cause for cause in HangupCause}
_HANGUP_SOURCES = {source.value: source for source in HangupSource}


class RecentEvents:
    """Webhook event ids seen lately: bounded in count and in age."""

    def __init__(
        self,
        clock: Callable[[], float],
        ttl_s: float = DEDUPE_TTL_S,
        max_ids: int = DEDUPE_MAX_IDS,
    ) -> None:
        self._clock = clock
        self._ttl_s = ttl_s
        self._max_ids = max_ids
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def claim(self, event_id: str) -> bool:
        """True the first time ``event_id`` is seen (within the memory), False after."""
        now = self._clock()
        seen = self._seen
        while seen:
            oldest, at = next(iter(seen.items()))
            if now - at < self._ttl_s and len(seen) < self._max_ids:
                break
            del seen[oldest]
        if event_id in seen:
            return False
        seen[event_id] = now
        return True

    def __contains__(self, event_id: str) -> bool:
        at = self._seen.get(event_id)
        return at is not None and self._clock() - at < self._ttl_s

    def release(self, event_id: str) -> None:
        """Forget a claim whose handling failed, so Telnyx's retry is handled."""
        self._seen.pop(event_id, None)


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text)


class TelnyxHandlers:
    def __init__(self, kit: TelnyxKit) -> None:
        self._kit = kit
        self._context = kit.context
        self._seen = RecentEvents(kit.context.clock)
        # Telnyx calls known to be over, so a call.initiated that arrives after its own
        # call.hangup (delivery order is not guaranteed) does not start a leg nobody will end.
        self._ended = RecentEvents(kit.context.clock)
        # Admission counts a number's live legs and then binds the new one: one at a time.
        self._admission = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    # --- webhooks ------------------------------------------------------------------------

    async def locate(self, request: web.Request) -> WebhookTarget | None:
        """The leg (a dialled call's webhook URL names it) or the Telnyx call a webhook is for,
        when this node does not hold it: another node may (engine/cluster/webhooks.py). None
        for a malformed body (answered here). Unverified: the owner verifies it."""
        leg_id = request.query.get(LEG_QUERY)
        if leg_id:
            return None if self._kit.legs.of_leg(leg_id) is not None else WebhookTarget(leg_id)
        try:
            event = parse_event(await request.read())
        except ValueError:
            return None
        telnyx_id = event.call_control_id
        if telnyx_id is None or self._kit.legs.of_telnyx(telnyx_id) is not None:
            return None
        # A new incoming call may belong where its bridge's conference is.
        new = event.event_type == "call.initiated" and event.direction == "incoming"
        return WebhookTarget(
            call=provider_call("telnyx", telnyx_id), number=event.to if new else None
        )

    async def webhook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            event = parse_event(raw)
        except ValueError as exc:
            log.warning("telnyx webhook refused: malformed", reason=str(exc), remote=request.remote)
            return _text(400, "malformed webhook")
        owner = await self._owner(event)
        if isinstance(owner, web.Response):
            return owner
        config, found, leg = owner
        refusal = self._verify(request, raw, config, event)
        if refusal is not None:
            log.warning(
                "telnyx webhook refused",
                reason=refusal,
                event_type=event.event_type,
                event_id=event.event_id,
                config_id=config.id,
                remote=request.remote,
            )
            return _text(403, "signature refused")
        if not self._seen.claim(event.event_id):
            log.info(
                "telnyx webhook duplicate ignored",
                event_type=event.event_type,
                event_id=event.event_id,
                attempt=event.attempt,
            )
            return _text(200, "duplicate")
        try:
            if found is not None and found.route is not None:
                if found.fresh:
                    await self._incoming(event, found.route)
                else:
                    self._refuse_unrouted(event, found.route)
            elif leg is not None:
                await self._leg_event(event, leg)
        except InputFailed as exc:
            # Rolled back and logged with its traceback by the runtime. A 5xx makes Telnyx
            # retry, to the connection's webhook_event_failover_url (callbridge too) after the
            # first failure: forget the claim so that retry is handled.
            self._seen.release(event.event_id)
            log.warning(
                "telnyx webhook failed; answered 500 for Telnyx to retry",
                event_type=event.event_type,
                event_id=event.event_id,
                fault_id=exc.fault_id,
            )
            return _text(500, f"failed (fault id {exc.fault_id})")
        except Exception:
            self._seen.release(event.event_id)
            log.exception("telnyx webhook failed", event_type=event.event_type)
            return _text(500, "failed")
        return _text(200, "ok")

    async def _owner(
        self, event: TelnyxEvent
    ) -> tuple[ProviderConfigRecord, RouteLookup | None, TelnyxLeg | None] | web.Response:
        """The configuration that must have signed ``event``, with the route of an incoming
        call or the leg of any other event; a response when there is none."""
        if event.event_type == "call.initiated" and event.direction == "incoming":
            found = await self._context.route_for(event.to) if event.to else RouteLookup(None)
            route = found.route
            if route is None:
                # No configuration owns the number: nothing can verify or reject the call.
                log.warning(
                    "telnyx call to a number on no bridge ignored",
                    to=event.to,
                    telnyx_id=event.call_control_id,
                )
                return _text(200, "ignored: number on no bridge")
            return route.provider_config, found, None
        leg = await self._kit.legs.find(event.call_control_id)
        if leg is None:
            if event.event_type == "call.hangup" and event.call_control_id is not None:
                self._ended.claim(event.call_control_id)
            log.info(
                "telnyx webhook for an unknown call ignored",
                event_type=event.event_type,
                telnyx_id=event.call_control_id,
            )
            return _text(200, "ignored: unknown call")
        return leg.config, None, leg

    def _verify(
        self, request: web.Request, raw: bytes, config: ProviderConfigRecord, event: TelnyxEvent
    ) -> str | None:
        if config.provider != "telnyx":
            return f"the number's configuration is {config.provider}, not telnyx"
        if not config.public_key:
            return "the configuration has no public_key to verify Telnyx webhooks with"
        try:
            verify_webhook(
                config.public_key,
                raw,
                request.headers.get(SIGNATURE_HEADER),
                request.headers.get(TIMESTAMP_HEADER),
                now=self._context.clock(),
            )
        except SignatureError as exc:
            return exc.reason
        return None

    async def _incoming(self, event: TelnyxEvent, route: Route) -> None:
        telnyx_id = event.call_control_id
        number = event.to
        if telnyx_id is None or number is None:
            log.warning("telnyx call.initiated without call_control_id or to ignored")
            return
        runtime = self._context.require_runtime()
        gateway = self._kit.gateway(route.provider_config)
        async with self._admission:
            if self._kit.legs.of_telnyx(telnyx_id) is not None or telnyx_id in self._ended:
                # The same call again under another event id, or one that has ended already.
                log.info("telnyx call.initiated for a known call ignored", telnyx_id=telnyx_id)
                return
            context = self._context
            leg_id = "v3:" + uuid.uuid4().hex
            decision = await admit(
                context.store,
                context.live,
                number,
                context.settings,
                context.admission,
                leg_id,
                provider_call("telnyx", telnyx_id),
            )
            if isinstance(decision, TakenElsewhere):
                log.info("telnyx call.initiated taken by another node ignored", telnyx_id=telnyx_id)
                return
            if isinstance(decision, Refusal):
                log.info(
                    "telnyx call refused",
                    to=number,
                    reason=decision.reason,
                    cause=decision.cause.value,
                    telnyx_id=telnyx_id,
                )
                self._spawn(gateway.reject_call(telnyx_id, decision.cause), "reject")
                return
            bridge = decision.bridge
            self._kit.legs.add(leg_id, telnyx_id, decision.provider_config)
            runtime.bind(leg_id, gateway)  # counted by admit: released by the runtime
        log.info("telnyx call admitted", leg_id=leg_id, telnyx_id=telnyx_id, bridge=bridge.slug)
        initiated = ev.LegInitiated(
            call_control_id=leg_id,
            call_leg_id=str(uuid.uuid4()),
            call_session_id=str(uuid.uuid4()),
            org_id=bridge.org_id,
            connection_id=bridge.slug,
            from_=event.from_ or "",
            to=number,
            webhook_url=bridge.webhook_url,
            default_conference=None if bridge.webhook_url else bridge.id,
            carrier=Carrier(
                "telnyx", decision.provider_config.id, telnyx_id, bridge.id, number
            ).dumps(),
        )
        try:
            await runtime.event(initiated)
        except InputFailed:
            # The machine has no leg: neither may the adapter, or the retry would be taken for
            # a call already known and ignored.
            self._kit.legs.forget(leg_id)
            runtime.unbind(leg_id)
            await self._context.live.flush()  # released in Redis before Telnyx retries
            raise

    def _refuse_unrouted(self, event: TelnyxEvent, route: Route) -> None:
        """The database cannot be reached: the call, verified with the number's last
        configuration, is rejected busy through it (``engine.admission.routes``)."""
        if event.call_control_id is None:
            return
        log.warning(
            "telnyx call refused", to=event.to, reason=DATABASE_UNAVAILABLE.reason,
            cause=DATABASE_UNAVAILABLE.cause.value, telnyx_id=event.call_control_id,
        )  # fmt: skip
        gateway = self._kit.gateway(route.provider_config)
        self._spawn(
            gateway.reject_call(event.call_control_id, DATABASE_UNAVAILABLE.cause), "reject"
        )

    async def _leg_event(self, event: TelnyxEvent, leg: TelnyxLeg) -> None:
        runtime = self._context.require_runtime()
        kind = event.event_type
        if kind == "call.answered":
            await runtime.event(ev.LegAnswered(leg.leg_id))
        elif kind == "call.hangup":
            await runtime.event(
                ev.LegHungUp(
                    leg.leg_id,
                    _HANGUP_CAUSES.get(event.hangup_cause or "", HangupCause.UNSPECIFIED),
                    _HANGUP_SOURCES.get(event.hangup_source or "", HangupSource.UNKNOWN),
                    _sip_cause(event.payload.get("sip_hangup_cause")),
                )
            )
            # The call is over at Telnyx: later webhooks for it are for an unknown call. Only
            # once the machine has taken the hangup, so a retry of a failed one finds the leg.
            self._kit.legs.forget(leg.leg_id)
            self._ended.claim(leg.telnyx_id)
        elif kind == "streaming.failed":
            # The stream could not be established (SDK ``StreamingFailedWebhookEvent``:
            # ``failure_reason``); the call itself stays up, so the machine asks for a new
            # stream once and otherwise ends the leg: never an answered leg in silence.
            reason = event.payload.get("failure_reason")
            detail = reason[:200] if isinstance(reason, str) else "streaming.failed"
            log.warning("telnyx media stream failed", leg_id=leg.leg_id, failure_reason=detail)
            await runtime.media_failed(leg.leg_id, "stream_failed", detail)
        else:
            # call.initiated (outgoing: the leg exists since the dial), streaming.started and
            # .stopped (the media socket says the same), call.dtmf.received (the stream carries
            # the digits), and anything else Telnyx sends.
            log.info("telnyx webhook", event_type=kind, leg_id=leg.leg_id)

    def _spawn(self, coro: Coroutine[Any, Any, None], operation: str) -> None:
        async def run() -> None:
            try:
                await coro
            except Exception as exc:
                log.warning("telnyx call failed", operation=operation, error=str(exc))

        task = asyncio.ensure_future(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        """Wait for the background REST calls (rejects) started so far."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- media ---------------------------------------------------------------------------

    async def media(self, request: web.Request) -> web.StreamResponse:
        binding = self.media_binding(request.query, request.headers)
        socket = await AiohttpMediaSocket.accept(request)
        await self._context.require_sessions().serve(socket, *binding[:2], context=binding[2])
        return socket.response

    def media_binding(self, query: Mapping[str, str], headers: Mapping[str, str]) -> MediaBinding:
        """How a stream opened with this query and these headers finds its leg, for any
        websocket server (aiohttp's here, the media port's: ``adapters/picows_media.py``)."""
        query_token = query.get("token")
        header_token = headers.get(AUTH_TOKEN_HEADER)

        def find_leg(start: StreamStart, connected_token: str | None) -> str:
            token = query_token or header_token or connected_token
            if not token:
                raise InvalidLegToken("missing media token")
            leg_id = self._context.tokens.leg_of(token)
            leg = self._kit.legs.of_leg(leg_id)
            if leg is None or leg.telnyx_id != start.call_id:
                raise InvalidLegToken("the media token is not for this call")
            return leg_id

        return TelnyxStreamCodec(), find_leg, {"provider": "telnyx"}


def _sip_cause(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
