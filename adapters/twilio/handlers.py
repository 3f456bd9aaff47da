"""Twilio's three endpoints: the voice webhook, status callbacks and the media websocket.

Every webhook is verified before it changes anything: ``X-Twilio-Signature`` over the URL built
from ``CALLBRIDGE_PUBLIC_URL`` (plus the request's query string) with the auth token of the
configuration that owns the call, and ``AccountSid`` must be that configuration's. A missing or
bad signature is a 403 and nothing happens.

- ``POST /webhooks/twilio/voice``. An inbound call is routed by the bridge of its ``To`` number
  (``engine.admission.inbound.admit``): no bridge -> ``<Reject reason="rejected"/>``, refused (DRAFT
  or INACTIVE bridge, ``channels_count`` reached) -> ``<Reject reason="busy"/>``. Otherwise a leg is
  created and the response is held until the engine decides (see ``adapters.twilio.gateway``):
  answer -> ``<Connect><Stream>`` with the leg token as a ``<Parameter>``, and ``LegAnswered``;
  reject -> ``<Reject>``; hangup -> ``<Hangup/>``. If nobody decides within
  ``TwilioKit.decision_timeout_s`` (default 10 s, under Twilio's own 15 s webhook timeout) the
  call is rejected busy and the leg ends with hangup_cause ``timeout`` (sip 486, source callee):
  a caller hearing busy can redial, a silent ring cannot be told apart from a dead line.
  An outbound call's voice webhook (the callee answered) gets ``<Connect><Stream>`` at once.
  A webhook the engine fails on (rolled back, logged with a fault id) is answered 500, with
  nothing of it left in the adapter: Twilio then fetches the number's ``VoiceFallbackUrl``
  (callbridge's voice webhook, set at connect), which handles the call afresh.
- ``POST /webhooks/twilio/status``. Terminal statuses end the leg (``LegHungUp``); the others are
  information only (the answer comes from the voice webhook, with the stream). A callback for a
  call callbridge does not track is acknowledged and logged. Callbacks can arrive out of order:
  each leg keeps the newest one seen (``CallbackOrder``, by ``SequenceNumber``), and an older
  non-terminal one (a ``ringing`` after ``in-progress``) is ignored and logged, never moving the
  leg backwards. A terminal status ends the leg whatever its order: a call reports exactly one,
  after every other, so a terminal callback that seems older than the newest one seen still
  means the call is over (a leg kept up for it would be a leg with no call behind it); the
  first end the engine hears wins, as the engine ignores events for an ended leg.
- With Redis (several nodes), a webhook for a call another node holds is carried out there
  (``locate``, engine/cluster/webhooks.py): the owner verifies it, as above.
- ``GET /media/twilio``. Media Streams, served by the provider-neutral ``StreamSessions``; the
  leg is found from the ``leg_token`` custom parameter of ``start``, which must name a live
  Twilio leg whose ``CallSid`` is the stream's; a signed upgrade must carry a valid signature.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from aiohttp import web

from adapters.carrier import Carrier
from adapters.context import AdapterContext
from adapters.leg_tokens import InvalidLegToken
from adapters.stream_session import MediaBinding
from adapters.streams import StreamStart
from adapters.transport import AiohttpMediaSocket
from adapters.twilio import twiml
from adapters.twilio.gateway import (
    LEG_QUERY,
    LEG_TOKEN_PARAMETER,
    MEDIA_PATH,
    STATUS_PATH,
    VOICE_PATH,
    Decision,
    TwilioLeg,
    stream_twiml,
)
from adapters.twilio.locating import FormParams, first_values, form_params, known_leg, locate
from adapters.twilio.signature import SIGNATURE_HEADER, validate_signature
from adapters.twilio.stream import TwilioStreamCodec
from adapters.twilio.webhooks import TwilioStatus, parse_status, parse_voice_call
from engine.admission.inbound import Refusal, TakenElsewhere, admit
from engine.admission.live import provider_call
from engine.admission.routes import DATABASE_UNAVAILABLE, RouteLookup
from engine.cluster.webhooks import WebhookTarget, to_owner
from engine.errors import InputFailed, NotFound
from engine.logs import get_logger
from engine.machine import events as ev
from engine.machine.model import HangupCause, HangupSource, RejectCause
from engine.runtime.ids import new_leg_ids
from engine.store.base import ProviderConfigRecord

if TYPE_CHECKING:
    from adapters.twilio.kit import TwilioKit

__all__ = ["TwilioHandlers", "hangup_of"]

log = get_logger("callbridge.twilio")


# Terminal CallStatus -> hangup_cause and who ended it (None: the far end of the leg).
_HANGUPS: Final[dict[str, tuple[HangupCause, HangupSource | None]]] = {
    "completed": (HangupCause.NORMAL_CLEARING, None),
    "canceled": (HangupCause.ORIGINATOR_CANCEL, HangupSource.CALLER),
    "busy": (HangupCause.USER_BUSY, HangupSource.CALLEE),
    "no-answer": (HangupCause.TIMEOUT, HangupSource.CALLEE),
    "failed": (HangupCause.UNSPECIFIED, HangupSource.UNKNOWN),
}
# A failed call says more through its SIP response code.
_FAILED_SIP: Final[dict[int, HangupCause]] = {
    404: HangupCause.NOT_FOUND,
    484: HangupCause.NOT_FOUND,
    604: HangupCause.NOT_FOUND,
    486: HangupCause.USER_BUSY,
    600: HangupCause.USER_BUSY,
    603: HangupCause.CALL_REJECTED,
}


def hangup_of(call_control_id: str, status: TwilioStatus, outbound: bool) -> ev.LegHungUp | None:
    """The leg's end a status callback reports, or None for a call still in progress.

    ``completed`` is normal_clearing from the far end (the callee of an outbound leg, the caller
    of an inbound one: our own hangups end the leg before Twilio reports them); ``canceled`` is
    originator_cancel (caller); ``busy`` user_busy and ``no-answer`` timeout (callee); ``failed``
    unspecified, or not_found / user_busy / call_rejected by its SipResponseCode.
    """
    mapped = _HANGUPS.get(status.call_status)
    if mapped is None:
        return None
    cause, source = mapped
    if source is None:
        source = HangupSource.CALLEE if outbound else HangupSource.CALLER
    sip = status.sip_response_code
    if status.call_status == "failed" and sip is not None:
        cause = _FAILED_SIP.get(sip, cause)
    return ev.LegHungUp(
        call_control_id, cause, source, sip_hangup_cause=str(sip) if sip is not None else None
    )


def _xml(document: str) -> web.Response:
    return web.Response(text=document, content_type="text/xml")


class TwilioHandlers:
    def __init__(self, kit: TwilioKit) -> None:
        self._kit = kit
        self._context: AdapterContext = kit.context
        # Admission and bind happen under one lock, so two calls racing for a number's last
        # channel cannot both be admitted.
        self._admission = asyncio.Lock()

    def add_routes(self, app: web.Application) -> None:
        # A webhook for a call another node holds is that node's (engine/cluster/webhooks.py).
        app.router.add_post(VOICE_PATH, to_owner(self.voice, self.locate, (SIGNATURE_HEADER,)))
        app.router.add_post(STATUS_PATH, to_owner(self.status, self.locate, (SIGNATURE_HEADER,)))
        app.router.add_get(MEDIA_PATH, self.media)
        self._context.media_bindings[MEDIA_PATH] = self.media_binding

    # --- verification ------------------------------------------------------------------------

    def _signed_url(self, path: str, request: web.Request) -> str:
        query = request.rel_url.raw_query_string
        return self._context.public_url(path) + (f"?{query}" if query else "")

    def _verified(
        self,
        config: ProviderConfigRecord,
        request: web.Request,
        path: str,
        params: FormParams,
        body: bytes,
    ) -> bool:
        signature = request.headers.get(SIGNATURE_HEADER)
        url = self._signed_url(path, request)
        token = self._context.auth_token(config)
        if not validate_signature(token, url, params, signature, body):
            return False
        return first_values(params).get("AccountSid") == config.account_sid

    @staticmethod
    def _forbidden(request: web.Request, reason: str, **details: object) -> web.Response:
        log.warning(
            "twilio webhook refused", path=request.path, reason=reason, remote=request.remote,
            **details,
        )  # fmt: skip
        return web.Response(status=403, text=reason)

    async def _config_of(self, leg: TwilioLeg) -> ProviderConfigRecord:
        """The leg's configuration as stored now (its auth token may have been rotated)."""
        current = await self._context.store.get_provider_config(leg.org_id, leg.config.id)
        return current if current is not None else leg.config

    async def locate(self, request: web.Request) -> WebhookTarget | None:
        return await locate(self._kit.legs, request)

    async def voice(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._voice(request)
        except InputFailed as exc:
            return self._failed(request, exc)

    @staticmethod
    def _failed(request: web.Request, exc: InputFailed) -> web.Response:
        """The engine failed on the webhook and rolled it back (logged under the fault id): a 5xx
        makes Twilio fetch the number's VoiceFallbackUrl, callbridge's too, afresh."""
        log.warning("twilio webhook failed; answered 500", path=request.path, fault_id=exc.fault_id)
        return web.Response(status=500, text=f"failed (fault id {exc.fault_id})")

    async def _voice(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        params = form_params((await request.post()).items())
        fields = first_values(params)
        if not request.headers.get(SIGNATURE_HEADER):
            return self._forbidden(request, "missing X-Twilio-Signature")
        leg = known_leg(self._kit.legs, request, fields)
        if leg is not None:
            config = await self._config_of(leg)
            if not self._verified(config, request, VOICE_PATH, params, body):
                leg_id = leg.call_control_id
                return self._forbidden(request, "bad X-Twilio-Signature", leg_id=leg_id)
            return await self._known_call(request, leg, fields)
        if request.query.get(LEG_QUERY):
            # An outbound call whose leg has ended meanwhile (or was never ours): end it.
            call_sid = fields.get("CallSid")
            log.info("twilio voice webhook for a leg no longer tracked", call_sid=call_sid)
            return _xml(twiml.hangup())
        return await self._inbound(request, params, body)

    async def _known_call(
        self, request: web.Request, leg: TwilioLeg, fields: Mapping[str, str]
    ) -> web.StreamResponse:
        call_sid = fields.get("CallSid", "")
        if leg.call_sid is None:
            self._kit.legs.set_sid(leg, call_sid)
        elif leg.call_sid != call_sid:
            return self._forbidden(
                request, "CallSid is not the leg's call", leg_id=leg.call_control_id
            )
        if leg.decision is not None and not leg.answered:
            # A retried inbound webhook: it gets whatever the held one gets.
            await asyncio.wait({leg.decision}, timeout=self._kit.decision_timeout_s)
            if not leg.decision.done():
                return _xml(twiml.reject("busy"))
            return await self._respond(leg, leg.decision.result())
        return await self._respond(leg, Decision(answer=True))

    async def _inbound(
        self, request: web.Request, params: FormParams, body: bytes
    ) -> web.StreamResponse:
        context, fields = self._context, first_values(params)
        to = fields.get("To", "")
        found = await context.route_for(to) if to else RouteLookup(None)
        route = found.route
        if route is None:
            log.warning(
                "twilio call to a number on no bridge rejected",
                to=to, from_=fields.get("From"), call_sid=fields.get("CallSid"),
            )  # fmt: skip
            return _xml(twiml.reject("rejected"))
        config = route.provider_config
        if config.provider != "twilio":
            return self._forbidden(request, f"{to} is connected through {config.provider}")
        if not self._verified(config, request, VOICE_PATH, params, body):
            return self._forbidden(request, "bad X-Twilio-Signature", to=to)
        if not found.fresh:  # verified with the number's last configuration: refused busy
            return self._refuse(fields.get("CallSid", ""), DATABASE_UNAVAILABLE)
        try:
            call = parse_voice_call(fields)
        except ValueError as exc:
            return web.Response(status=400, text=str(exc))
        runtime = context.require_runtime()
        async with self._admission:
            ids = new_leg_ids()
            verdict = await admit(
                context.store,
                context.live,
                call.to,
                context.settings,
                context.admission,
                ids.call_control_id,
                provider_call("twilio", call.call_sid),
            )
            if isinstance(verdict, TakenElsewhere):
                # Another node took this call's webhook at the same instant: a 5xx makes
                # Twilio fetch the fallback URL, which reaches that node (engine/cluster/).
                log.info("twilio call taken by another node", call_sid=call.call_sid)
                return web.Response(status=503, text="the call is another node's")
            if isinstance(verdict, Refusal):
                return self._refuse(call.call_sid, verdict)
            bridge = verdict.bridge
            gateway = self._kit.gateway(verdict.provider_config)
            leg = gateway.hold(ids.call_control_id, bridge.org_id, call.call_sid)
            runtime.bind(ids.call_control_id, gateway)  # counted by admit: released by the runtime
        log.info(
            "twilio call admitted",
            leg_id=ids.call_control_id, call_sid=call.call_sid, bridge=bridge.slug,
            routing="webhook" if bridge.webhook_url else "conference",
        )  # fmt: skip
        initiated = ev.LegInitiated(
            call_control_id=ids.call_control_id,
            call_leg_id=ids.call_leg_id,
            call_session_id=ids.call_session_id,
            org_id=bridge.org_id,
            connection_id=bridge.slug,
            from_=call.from_,
            to=call.to,
            webhook_url=bridge.webhook_url,
            default_conference=bridge.id if bridge.webhook_url is None else None,
            carrier=Carrier(
                "twilio",
                verdict.provider_config.id,
                call.call_sid,
                bridge.id,
                verdict.number.number,
            ).dumps(),
        )
        try:
            await runtime.event(initiated)
        except InputFailed:
            # The machine has no leg: neither may the adapter, so the retry (to the fallback
            # URL, with the same CallSid) is admitted as the new call it is for the machine.
            self._kit.legs.forget(ids.call_control_id)
            runtime.unbind(ids.call_control_id)
            await self._context.live.flush()  # released in Redis before Twilio retries
            raise
        return await self._respond(leg, await self._decide(leg))

    @staticmethod
    def _refuse(call_sid: str, refusal: Refusal) -> web.Response:
        reason: twiml.RejectReason = (
            "busy" if refusal.cause is RejectCause.USER_BUSY else "rejected"
        )
        log.info("twilio call refused", call_sid=call_sid, reason=refusal.reason, reject=reason)
        return _xml(twiml.reject(reason))

    async def _decide(self, leg: TwilioLeg) -> Decision:
        """Wait for the engine's decision on a held call; reject it busy if none comes."""
        assert leg.decision is not None
        timeout = self._kit.decision_timeout_s
        await asyncio.wait({leg.decision}, timeout=timeout)
        if leg.decide(Decision(False, twiml.reject("busy"))):
            log.warning(
                "no answer or reject for the twilio call in time; rejected busy",
                leg_id=leg.call_control_id, timeout_s=timeout,
            )  # fmt: skip
            hangup = ev.LegHungUp(
                leg.call_control_id,
                HangupCause.TIMEOUT,
                HangupSource.CALLEE,
                sip_hangup_cause="486",
            )
            await self._context.require_runtime().event(hangup)
            self._ended(leg.call_control_id)
        return leg.decision.result()

    async def _respond(self, leg: TwilioLeg, decision: Decision) -> web.Response:
        if not decision.answer:
            return _xml(decision.document)
        runtime = self._context.require_runtime()
        if not leg.answered:
            leg.answered = True
            try:
                await runtime.event(ev.LegAnswered(leg.call_control_id))
            except InputFailed:
                leg.answered = False  # Twilio's retry of this webhook answers it again
                raise
        if not self._alive(leg.call_control_id):
            return _xml(twiml.hangup())
        return _xml(stream_twiml(self._context, leg.call_control_id))

    def _alive(self, call_control_id: str) -> bool:
        try:
            return self._context.require_runtime().machine.leg(call_control_id).is_alive
        except NotFound:
            return False

    def _ended(self, call_control_id: str) -> None:
        """The provider ended the leg (the runtime frees its channel on ``LegHungUp``, and calls
        ``forget`` itself only for the legs it ends): drop it from the adapter's maps."""
        self._kit.legs.forget(call_control_id)

    # --- status callbacks --------------------------------------------------------------------

    async def status(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._status(request)
        except InputFailed as exc:
            return self._failed(request, exc)

    async def _status(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        params = form_params((await request.post()).items())
        fields = first_values(params)
        if not request.headers.get(SIGNATURE_HEADER):
            return self._forbidden(request, "missing X-Twilio-Signature")
        leg = known_leg(self._kit.legs, request, fields)
        if leg is None:
            log.info(
                "twilio status callback for a call callbridge does not track",
                call_sid=fields.get("CallSid"), call_status=fields.get("CallStatus"),
            )  # fmt: skip
            return web.Response()
        if not self._verified(await self._config_of(leg), request, STATUS_PATH, params, body):
            return self._forbidden(request, "bad X-Twilio-Signature", leg_id=leg.call_control_id)
        try:
            status = parse_status(fields)
        except ValueError as exc:
            return web.Response(status=400, text=str(exc))
        if leg.call_sid is None:
            self._kit.legs.set_sid(leg, status.call_sid)
        elif leg.call_sid != status.call_sid:
            return self._forbidden(
                request, "CallSid is not the leg's call", leg_id=leg.call_control_id
            )
        latest = leg.callbacks.status
        newest = leg.callbacks.admit(status)
        hangup = hangup_of(leg.call_control_id, status, leg.outbound)
        if hangup is None:
            if not newest:
                log.info(
                    "late twilio status callback ignored",
                    leg_id=leg.call_control_id, call_status=status.call_status,
                    sequence_number=status.sequence_number, latest_status=latest,
                )  # fmt: skip
            return web.Response()
        log.info(
            "twilio call ended",
            leg_id=leg.call_control_id, call_status=status.call_status,
            hangup_cause=hangup.cause.value, sip=hangup.sip_hangup_cause,
        )  # fmt: skip
        await self._context.require_runtime().event(hangup)
        self._ended(leg.call_control_id)
        return web.Response()

    # --- media -------------------------------------------------------------------------------

    async def media(self, request: web.Request) -> web.StreamResponse:
        binding = self.media_binding(request.query, request.headers)
        socket = await AiohttpMediaSocket.accept(request)
        await self._context.require_sessions().serve(socket, *binding[:2], context=binding[2])
        return socket.response

    def media_binding(self, query: Mapping[str, str], headers: Mapping[str, str]) -> MediaBinding:
        """How a stream opened with these headers finds its leg, for any websocket server
        (aiohttp's here, the media port's: ``adapters/picows_media.py``)."""
        signature = headers.get(SIGNATURE_HEADER)

        def find_leg(start: StreamStart, connected_token: str | None) -> str:
            # Twilio's connected frame carries no token: the request's signature identifies it.
            return self._stream_leg(start, signature)

        return TwilioStreamCodec(), find_leg, {"provider": "twilio"}

    def _stream_leg(self, start: StreamStart, signature: str | None) -> str:
        token = start.custom_parameters.get(LEG_TOKEN_PARAMETER)
        if not token:
            raise InvalidLegToken("the stream carries no leg_token parameter")
        leg_id = self._context.tokens.leg_of(token)
        leg = self._kit.legs.by_id(leg_id)
        if leg is None:
            if not self._alive(leg_id):
                raise InvalidLegToken("the leg has ended")
            raise InvalidLegToken("the token names no Twilio leg")
        if leg.call_sid is not None and start.call_id != leg.call_sid:
            raise InvalidLegToken("the stream's callSid is not the leg's call")
        if signature is not None and not self._stream_signed(leg.config, signature):
            raise InvalidLegToken("bad X-Twilio-Signature on the stream")
        return leg_id

    def _stream_signed(self, config: ProviderConfigRecord, signature: str) -> bool:
        # Twilio signs the upgrade over the wss:// stream URL; validate_signature also takes
        # its https:// form, and a plain-http deployment's ws:// URL is tried as http:// too.
        token = self._context.auth_token(config)
        return any(
            validate_signature(token, url, None, signature)
            for url in (
                self._context.public_media_url(MEDIA_PATH),
                self._context.public_media_url(MEDIA_PATH, http=True),
            )
        )
