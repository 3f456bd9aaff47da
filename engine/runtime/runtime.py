"""The asyncio shell around the call machine: it feeds inputs in and carries effects out.

Inputs (provider events from adapters, commands from the API, timers, media-stream news) are
handled one at a time under a lock, and the local effects of each input (webhooks into the
outbox, mixer membership, overlays, timers) are carried out in emission order before the next
input is taken, so each leg's webhooks leave in order. Provider calls (answer, hang up, reject,
dial) go into a lane per leg: in order for that leg, without holding up other legs. Transient
provider faults are retried (``engine.providers.calls``); a provider call that still fails ends its
leg through the machine (``ProviderFailed``), never leaving it dangling, and a hangup is retried
until the provider confirms it, the leg's gateway and channel kept until then. A reconciliation
task (``engine.providers.reconcile``) asks the providers about quiet or stuck legs.

An input the machine fails to apply (a bug, not a typed refusal) is rolled back by the machine,
logged here with its traceback under a fault id, and raised to the caller as ``InputFailed``
(the API answers 500 naming the fault id, a provider webhook 5xx so the provider retries or
uses its failover URL); inputs of the engine's own (timers, media ticks, provider-call
failures, saved recordings) are only logged. Either way every other call carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from engine.admission.live import LiveLegs
from engine.cluster.owners import LegOwners, SoleNode
from engine.errors import CallbridgeError, InputFailed, InputNotStored
from engine.logs import get_logger
from engine.machine import effects as fx
from engine.machine import events as ev
from engine.machine.commands import AnyCommand, Dial
from engine.machine.core import Checkpoint
from engine.machine.live_changes import changes_between
from engine.machine.machine import CallMachine, DialResult
from engine.machine.model import DtmfSource, TimerKey, TimerKind
from engine.media_plane.outputs import MediaOutput
from engine.media_plane.plane import MediaPlane
from engine.media_plane.tick import MediaTick
from engine.providers.calls import ProviderCalls
from engine.providers.gateway import GatewayResolver, ProviderGateway
from engine.providers.lanes import ProviderLanes
from engine.providers.reconcile import Reconciler, ReconcileSettings
from engine.recordings import RecordingCatalog
from engine.runtime.adoption import Adoption, Parts
from engine.runtime.app_streams import AppStreamRunner
from engine.runtime.ids import new_leg_ids
from engine.runtime.recording_lifecycle import RecordingLifecycle
from engine.runtime.timers import LoopTimers, Timers
from engine.store.base import QueuedWebhook, Store
from engine.store.live import LegsFenced
from engine.webhooks.outbox import WebhookOutbox
from media.codecs import AudioFormat

log = get_logger("callbridge.runtime")
T = TypeVar("T")
ENDED_LEG_RETENTION_S = 3600.0
TIMER_RETRY_S = 5.0  # a timer whose firing failed fires again after this long
PRUNE_EVERY_TICKS = 3000  # once a minute on the 20 ms media tick
_SOLE = SoleNode()  # one node: every stored call is this process's to adopt


class CallRuntime:
    def __init__(
        self,
        *,
        machine: CallMachine,
        plane: MediaPlane,
        outbox: WebhookOutbox,
        store: Store,
        live: LiveLegs,
        resolver: GatewayResolver,
        recordings: RecordingCatalog,
        clock: Callable[[], float] = time.time,
        timers: Timers | None = None,
        provider_calls: ProviderCalls | None = None,
        reconcile: ReconcileSettings | None = None,
        tick: MediaTick | None = None,
        observe_commit: Callable[[float], None] | None = None,
        allow_private_urls: bool = False,  # application streams' websockets (the URL policy)
    ) -> None:
        self.machine = machine
        self.plane = plane
        self.recordings = recordings
        self.outbox = outbox
        self.store = store
        self.live = live
        self._resolver = resolver
        self._clock = clock
        # Told how many seconds each input's store commit took (the operators' metrics).
        self._observe_commit = observe_commit or (lambda seconds: None)
        self.timers: Timers = timers if timers is not None else LoopTimers()
        self._lock = asyncio.Lock()
        # Whether a media stream of the leg is here, bound or being bound (the adapters' stream
        # registry, put in by their wiring; none without adapters).
        self.has_stream: Callable[[str], bool] = lambda leg_id: False
        self._gateways: dict[str, ProviderGateway] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.tick = tick if tick is not None else MediaTick()
        self.tick.drive(self._on_tick)
        self.app_streams = AppStreamRunner(plane, self._own_event, allow_private_urls)
        self.provider_calls = provider_calls if provider_calls is not None else ProviderCalls()
        self.reconciler = Reconciler(
            reconcile if reconcile is not None else ReconcileSettings(),
            legs=lambda: self.machine.snapshot().legs,
            gateway_of=self._gateways.get,
            calls=self.provider_calls,
            report=self._own_event,
            clock=self._clock,
        )
        self.lanes = ProviderLanes(
            gateways=self._gateways,
            calls=self.provider_calls,
            live=self.live,
            report=self._own_event,
            track=self._track,
        )
        self.recording_files = RecordingLifecycle(
            plane=plane,
            store=store,
            catalog=recordings,
            machine=self.machine,
            report=self._own_event,
            spawn=self._spawn,
            clock=self._clock,
        )
        self.adoption = Adoption(
            Parts(
                machine=self.machine,
                plane=plane,
                store=store,
                live=live,
                resolver=resolver,
                gateways=self._gateways,
                # Looked up at each call: tests put their own timers in after construction.
                start_timer=lambda key, delay: self.timers.start(key, delay, self._timer_fired),
                cancel_timer=lambda key: self.timers.cancel(key),
                recording_files=self.recording_files,
                reconciler=self.reconciler,
                lock=self._lock,
                clock=self._clock,
                own_event=self._own_event,
                spawn=self._spawn,
            )
        )

    def now(self) -> float:
        return self._clock()

    # ---- inputs -------------------------------------------------------------------------
    def bind(self, call_control_id: str, gateway: ProviderGateway) -> None:
        """Say which gateway carries a leg (an inbound one counted by admission already)."""
        self._gateways[call_control_id] = gateway

    def unbind(self, call_control_id: str) -> None:
        """Undo ``bind`` for a leg whose first event failed: the provider's retry of that event
        (or its failover delivery) starts the leg afresh."""
        self._gateways.pop(call_control_id, None)
        self.live.release(call_control_id)

    async def event(self, event: ev.Event) -> None:
        """Raises ``InputFailed`` (logged) if the machine fails on it; an event is never refused,
        so any exception here is a fault."""
        async with self._lock:
            if self._stream_came_meanwhile(event):
                return
            before = self.machine.checkpoint()
            effects = self._guarded(
                type(event).__name__,
                event.key.call_control_id
                if isinstance(event, ev.TimerFired)
                else event.call_control_id,
                lambda: self.machine.handle_event(event, self._clock()),
                passthrough=(),
            )
            await self._commit(before, effects, type(event).__name__)
            await self._apply(effects)
            if not isinstance(event, ev.TimerFired):
                self.reconciler.heard(event.call_control_id)  # news of the leg: not quiet
            if isinstance(event, ev.LegHungUp):
                # The far end's hangup needs no provider call, and a leg with no webhook URL
                # (default routing) has no call.hangup to publish: free its channel here.
                self.live.release(event.call_control_id)
            if isinstance(event, ev.LegHungUp | ev.MediaStopped):
                self._media_summary(event.call_control_id)

    def _stream_came_meanwhile(self, event: ev.Event) -> bool:
        """A media wait that ran out, with a stream of its leg here by the time the machine can
        hear of it: that stream's start waits for this lock behind the timer (an engine busy
        with a burst of calls takes seconds to get to either). Judged now, the wait would ask
        the provider for a new stream and have it refused while this one holds the leg. So the
        wait is judged again TIMER_RETRY_S later: by then the start has been taken (which
        cancels it) or refused (MediaFailed: the machine's problem at once), or the stream has
        gone (its MediaStopped arms the wait anew)."""
        if not isinstance(event, ev.TimerFired) or event.key.kind is not TimerKind.MEDIA_WAIT:
            return False
        if not self.has_stream(event.key.call_control_id):
            return False
        self.timers.start(event.key, TIMER_RETRY_S, self._timer_fired)
        return True

    async def command(self, org_id: int, call_control_id: str, command: AnyCommand) -> None:
        """Carry out an API command (on a leg, or a conference: then ``call_control_id`` is
        the conference's id); typed errors propagate having changed nothing."""
        async with self._lock:
            before = self.machine.checkpoint()
            effects = self._guarded(
                type(command).__name__,
                call_control_id,
                lambda: self.machine.handle_command(
                    call_control_id, org_id, command, self._clock()
                ),
            )
            await self._commit(before, effects, type(command).__name__)
            await self._apply(effects)

    async def dial(
        self, org_id: int, command: Dial, *, default_webhook_url: str | None = None
    ) -> DialResult:
        gateway = await self._resolver.for_dial(org_id, command.connection_id, command.to)
        ids = new_leg_ids()
        async with self._lock:
            before = self.machine.checkpoint()
            result = self._guarded(
                "Dial",
                ids.call_control_id,
                lambda: self.machine.dial(
                    ids, org_id, command, self._clock(), default_webhook_url=default_webhook_url
                ),
            )
            await self._commit(before, result.effects, "Dial")
            if not result.duplicate:
                self._gateways[ids.call_control_id] = gateway
            await self._apply(result.effects)
        return result

    @staticmethod
    def _guarded(
        name: str,
        leg_id: str | None,
        apply: Callable[[], T],
        *,
        passthrough: tuple[type[Exception], ...] = (CallbridgeError,),
    ) -> T:
        """Run one machine input; turn an unexpected exception into a logged ``InputFailed``.
        The machine has already rolled the input back, so only this input fails."""
        try:
            return apply()
        except passthrough:
            raise  # a typed refusal: the API answers it in its envelope
        except Exception as exc:
            fault_id = str(uuid.uuid4())
            log.exception(
                "input failed and was rolled back", fault_id=fault_id, input=name, leg_id=leg_id
            )
            raise InputFailed(fault_id) from exc

    async def _commit(self, before: Checkpoint, effects: list[fx.Effect], name: str) -> None:
        """Store what the input changed and the webhooks it produced, in one transaction,
        before anything is carried out or acknowledged. If that fails the machine goes back to
        ``before`` and the input fails (``InputNotStored``): it never runs ahead of the store."""
        now = self._clock()
        webhooks = [self._queued(e) for e in effects if isinstance(e, fx.EmitWebhook)]
        changes = changes_between(before, self.machine.checkpoint(), effects, now)
        started = time.perf_counter()
        try:
            await self.store.commit_input(changes, webhooks, now)
        except CallbridgeError as exc:
            self.machine.restore(before)
            if isinstance(exc, LegsFenced):  # another node took them over: theirs now
                self._spawn(self.adoption.lose(exc.legs))
            fault_id = str(uuid.uuid4())
            log.error(
                "input not stored and rolled back", fault_id=fault_id, input=name, error=str(exc)
            )
            raise InputNotStored(fault_id) from exc
        self._observe_commit(time.perf_counter() - started)
        if webhooks:
            self.outbox.wake()

    def _queued(self, effect: fx.EmitWebhook) -> QueuedWebhook:
        return self.outbox.prepare(
            org_id=effect.org_id,
            leg_id=effect.order_key or effect.call_control_id,
            url=effect.webhook_url,
            event_type=effect.event_type,
            payload=effect.payload,
        )

    async def adopt(self, owners: LegOwners = _SOLE) -> list[str]:
        """The calls an earlier process on this store left (engine/runtime/adoption.py); call
        it before serving, and ``resume`` once the app listens."""
        return await self.adoption.adopt(owners)

    async def resume(self) -> None:
        await self.adoption.resume()

    async def _own_event(self, event: ev.Event) -> None:
        """An input of the engine's own (timer, tick, provider-call failure, recording): nobody
        to answer, and ``event`` has logged the fault already."""
        with contextlib.suppress(InputFailed):
            await self.event(event)

    # ---- media streams (called by the adapters' stream handlers) ------------------------
    async def media_started(
        self,
        call_control_id: str,
        fmt: AudioFormat,
        output: MediaOutput,
        stream_url: str | None = None,
        *,
        out_fmt: AudioFormat | None = None,
        label: str | None = None,
    ) -> None:
        """The leg's stream is live: it sends ``fmt`` and decodes ``out_fmt`` (``fmt`` when
        None); ``label`` names the format as the provider announced it (e.g. "G722/16000")."""
        async with self._lock:
            self.plane.attach(call_control_id, fmt, output, out_fmt)
        label = label or f"{fmt.encoding.value}/{fmt.sample_rate}"
        await self._until_taken(ev.MediaStarted(call_control_id, label, stream_url))

    async def media_failed(self, call_control_id: str, reason: str, detail: str = "") -> None:
        """The leg's stream failed or cannot be used; the machine retries or ends the leg."""
        await self._own_event(ev.MediaFailed(call_control_id, reason, detail))

    def media_frame(self, call_control_id: str, payload: bytes) -> None:
        """Hot path: no lock, no await; the mixer takes or forwards the frame."""
        self.plane.frame_in(call_control_id, payload)

    async def media_dtmf(self, call_control_id: str, digit: str) -> None:
        # A digit the machine fails on is lost (logged), not the stream that carried it.
        await self._own_event(ev.DtmfReceived(call_control_id, digit, DtmfSource.OUT_OF_BAND))

    async def media_stopped(self, call_control_id: str) -> None:
        async with self._lock:
            self.plane.detach(call_control_id)
        await self._until_taken(ev.MediaStopped(call_control_id))

    def _media_summary(self, leg_id: str) -> None:
        """One log line of what a leg's media carried, once it has hung up and lost its stream."""
        if self.plane.is_attached(leg_id) or self.machine.is_alive(leg_id):
            return
        media = self.plane.stats.summary_once(leg_id)
        if media is not None:
            log.info("leg media summary", leg_id=leg_id, **media)

    async def _until_taken(self, event: ev.MediaStarted | ev.MediaStopped) -> None:
        """A stream's news, which the media plane has acted on already: a stream has nobody to
        answer an error to, and the machine must not stay believing the opposite of the plane,
        so a fault (logged, rolled back) is followed by the same event again a little later."""
        try:
            await self.event(event)
        except InputFailed:
            loop = asyncio.get_running_loop()
            loop.call_later(TIMER_RETRY_S, lambda: self._spawn(self._until_taken(event)))

    # ---- effects ------------------------------------------------------------------------
    async def _apply(self, effects: list[fx.Effect]) -> None:
        for effect in effects:
            try:
                await self._apply_one(effect)
            except Exception:
                # One effect failing must not strand the ones after it (e.g. a webhook).
                log.exception("effect failed", effect=type(effect).__name__)

    async def _apply_one(self, effect: fx.Effect) -> None:
        match effect:
            case fx.EmitWebhook():
                await self._publish(effect)
            case fx.JoinRoom(leg_id, room_id):
                self.plane.join(leg_id, room_id)
            case fx.LeaveRoom(leg_id, _room):
                self.plane.leave(leg_id)
            case fx.SetOverlay(leg_id, tag, source, loop):
                self.plane.set_overlay(leg_id, tag, source, loop)
            case fx.ClearOverlay(leg_id, tag):
                self.plane.clear_overlay(leg_id, tag)
            case fx.SendDtmf(leg_id, digits, duration):
                self.plane.play_dtmf(leg_id, digits, duration)
            case fx.RelayDtmf(leg_id, digit, source):
                self.plane.relay_dtmf(leg_id, digit, source)
            case fx.SetDtmfMute(leg_id, muted):
                self.plane.set_dtmf_mute(leg_id, muted)
            case fx.SetAudience(leg_id, heard_by, deaf):
                self.plane.set_audience(leg_id, heard_by, deaf=deaf)
            case fx.StartRecording() | fx.StopRecording() | fx.PauseRecording():
                self.recording_files.apply(effect)
            case fx.StartAppStream() | fx.StopAppStream() | fx.StreamDtmf():
                self.app_streams.apply(effect)
            case fx.StartTimer(key, delay):
                self.timers.start(key, delay, self._timer_fired)
            case fx.CancelTimer(key):
                self.timers.cancel(key)
            case fx.AnswerCall(leg_id):
                self.lanes.run(leg_id, "answer", lambda g: g.answer(leg_id))
            case fx.RestartMedia(leg_id):
                self.lanes.run(leg_id, "restart_media", lambda g: g.restart_media(leg_id))
            case fx.HangupCall(leg_id):
                self.lanes.run(leg_id, "hangup", lambda g: g.hangup(leg_id), final=True)
            case fx.RejectCall(leg_id, cause):
                self.lanes.run(leg_id, "reject", lambda g: g.reject(leg_id, cause), final=True)
            case fx.DialCall():
                dial = effect
                self.lanes.run(
                    dial.call_control_id, "dial", lambda g: self._place(g, dial), is_dial=True
                )

    async def _place(self, gateway: ProviderGateway, dial: fx.DialCall) -> None:
        """Dial, and keep the provider's name for the call with the leg (stored with it), so a
        restarted process can reach the call again."""
        # The leg's hold (held by the dial's caller before this task runs) written first: the
        # provider may call back about the new call at another node, which finds this one
        # the owner by it (engine/cluster/webhooks.py). Nothing to wait for on one node.
        await self.live.flush()
        carrier = await gateway.dial(dial)
        if carrier is not None:
            await self._own_event(ev.CarrierAssigned(dial.call_control_id, carrier))

    async def _publish(self, effect: fx.EmitWebhook) -> None:
        """The webhook is in the outbox already (``_commit``); only its bookkeeping is left."""
        if effect.event_type == "call.hangup" and effect.call_control_id not in self.lanes.ending:
            # A leg still being hung up at its provider keeps its channel until that is done.
            self.live.release(effect.call_control_id)

    def _timer_fired(self, key: TimerKey) -> None:
        self._spawn(self._fire(key))

    async def _fire(self, key: TimerKey) -> None:
        try:
            await self.event(ev.TimerFired(key))
        except InputFailed:
            # Rolled back, the machine still counts on this timer: fire it again later rather
            # than leave a time limit or media wait that never comes.
            self.timers.start(key, TIMER_RETRY_S, self._timer_fired)

    def _spawn(self, coro: Awaitable[None]) -> None:
        self._track(asyncio.ensure_future(coro))

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- background work ----------------------------------------------------------------
    def _on_tick(self, tick: int) -> None:
        for event in self.plane.tick():
            self._spawn(self._own_event(event))
            if isinstance(event, ev.RecordingFailed):
                self._spawn(self.recording_files.forget(event.recording_id))
        for opened in self.plane.recordings.opened():
            self._spawn(self.recording_files.store(opened))
        if tick % PRUNE_EVERY_TICKS == PRUNE_EVERY_TICKS - 1:
            self._spawn(self._prune_quietly())

    async def prune(self, retention_s: float = ENDED_LEG_RETENTION_S) -> list[str]:
        """Forget legs that ended more than ``retention_s`` ago (until then a command on one
        gets 90018, after it 404), and their stored rows in the same step (``InputNotStored``
        if they cannot: then nothing is forgotten)."""
        async with self._lock:
            before = self.machine.checkpoint()
            gone = self.machine.prune(self._clock(), retention_s)
            if gone:
                await self._commit(before, [], "Prune")
        for leg_id in gone:
            self._gateways.pop(leg_id, None)
            self.plane.stats.forget(leg_id)
        return gone

    async def _prune_quietly(self) -> None:
        with contextlib.suppress(InputFailed):  # logged; the next pass tries again
            await self.prune()

    async def run_media(self, stop: asyncio.Event) -> None:
        await self.tick.run(stop)

    async def run_reconciliation(self, stop: asyncio.Event) -> None:
        await self.reconciler.run(stop)  # asks the providers about quiet or stuck legs

    async def settle(self) -> None:
        """Wait until every provider call and follow-up started so far has finished."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self.live.flush()  # the live-leg counts' writes too (Redis: in the background)

    async def close(self) -> None:
        self.timers.cancel_all()
        self.provider_calls.close()  # calls still retrying give up now
        await self.app_streams.close()
        await self.settle()
