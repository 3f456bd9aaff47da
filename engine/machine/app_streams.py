"""Application streams: ``streaming_start`` / ``streaming_stop`` on the machine.

A stream sends the leg's audio to the application's websocket and, in bidirectional mode, plays
what the application sends back to its listeners (``stream_bidirectional_target_legs``
resolved when it starts: the leg for ``self``, its room peers then for ``opposite``, both for
``both``; a leg in no room has no ``opposite``, and what is sent to it reaches nobody, as on a
Call Control leg with no other leg). The leg keeps each stream (``Leg.app_streams``) from the
command until it stops or fails; the runtime opens the websocket (``StartAppStream``) and
reports what became of it (``AppStreamChanged``).

Webhooks (Call Control v2's, its SDK's ``CallStreamingStarted``, ``CallStreamingStopped`` and
``CallStreamingFailed`` payloads, plus ``stream_id`` on the first two, callbridge's addition so
that an application can stop one stream of several):

- ``streaming.started`` once the application's websocket took the start frame;
- ``streaming.stopped`` on ``streaming_stop``, when the application closes its websocket, and
  when the leg ends (before its ``call.hangup``);
- ``streaming.failed`` when the websocket cannot be opened or breaks: ``failure_reason``,
  ``stream_id``, ``stream_type`` "websocket", ``stream_params`` {``stream_url``, ``track``}. The
  call goes on either way.

A stream does not survive a restart of callbridge (its websocket went with the old process): an
adopted leg's streams end with ``streaming.stopped``, and the application may start new ones.
"""

from __future__ import annotations

from engine.errors import InvalidState
from engine.machine import effects as fx
from engine.machine.core import Core
from engine.machine.events import AppStreamChanged
from engine.machine.model import INVALID_STATE_CODE, AppStream, Leg
from engine.machine.streaming_commands import StreamingStart, StreamingStop

#: Streams one leg may have at once: each is a websocket and a per-tick encoding.
MAX_STREAMS_PER_LEG = 4


def check_start(leg: Leg) -> None:
    if len(leg.app_streams) >= MAX_STREAMS_PER_LEG:
        raise InvalidState(
            f"the leg has {MAX_STREAMS_PER_LEG} streams already (callbridge's limit)",
            code=INVALID_STATE_CODE,
        )


def check_stop(leg: Leg, command: StreamingStop) -> None:
    if not leg.app_streams:
        raise InvalidState("no stream is in progress", code=INVALID_STATE_CODE)
    if command.stream_id is not None and _find(leg, command.stream_id) is None:
        raise InvalidState("no such stream in progress", field="stream_id", code=INVALID_STATE_CODE)


def _find(leg: Leg, stream_id: str) -> AppStream | None:
    return next((s for s in leg.app_streams if s.stream_id == stream_id), None)


def start(core: Core, leg: Leg, command: StreamingStart) -> Leg:
    spec = command.spec
    stream_id = core.new_uuid()
    listeners = core.listeners(leg, spec.target_legs) if spec.bidirectional else ()
    stream = AppStream(stream_id, spec.url, spec.track, listeners)
    leg = core.update(leg, app_streams=(*leg.app_streams, stream))
    start_fields: dict[str, str | None] = {
        "call_control_id": leg.call_control_id,
        "call_session_id": leg.call_session_id,
        "from": leg.from_,
        "to": leg.to,
        "client_state": leg.client_state,
    }
    core.emit(
        fx.StartAppStream(
            call_control_id=leg.call_control_id,
            stream_id=stream_id,
            spec=spec,
            listeners=listeners,
            start=start_fields,
        )
    )
    return leg


def stop(core: Core, leg: Leg, command: StreamingStop) -> Leg:
    for stream in leg.app_streams:
        if command.stream_id in (None, stream.stream_id):
            leg = _stopped(core, leg, stream, close=True)
    return leg


def _stopped(core: Core, leg: Leg, stream: AppStream, *, close: bool) -> Leg:
    if close:
        core.emit(fx.StopAppStream(leg.call_control_id, stream.stream_id))
    leg = _without(core, leg, stream)
    core.webhook(leg, "streaming.stopped", stream_url=stream.url, stream_id=stream.stream_id)
    return leg


def _without(core: Core, leg: Leg, stream: AppStream) -> Leg:
    kept = tuple(s for s in leg.app_streams if s.stream_id != stream.stream_id)
    return core.update(leg, app_streams=kept)


def changed(core: Core, leg: Leg, event: AppStreamChanged) -> None:
    """The runtime's news of one stream; news of a stream the leg no longer has is stale."""
    stream = _find(leg, event.stream_id)
    if stream is None:
        return
    if event.status == "started" and not stream.started:
        started = AppStream(stream.stream_id, stream.url, stream.track, stream.listeners, True)
        kept = tuple(started if s is stream else s for s in leg.app_streams)
        leg = core.update(leg, app_streams=kept)
        core.webhook(leg, "streaming.started", stream_url=stream.url, stream_id=stream.stream_id)
    elif event.status == "stopped":
        _stopped(core, leg, stream, close=False)
    elif event.status == "failed":
        leg = _without(core, leg, stream)
        core.webhook(
            leg,
            "streaming.failed",
            failure_reason=event.reason,
            stream_id=stream.stream_id,
            stream_type="websocket",
            stream_params={"stream_url": stream.url, "track": stream.track},
        )


def hung_up(core: Core, leg: Leg) -> Leg:
    """The leg is ending: each stream sends its stop frame and closes."""
    for stream in leg.app_streams:
        leg = _stopped(core, leg, stream, close=True)
    return leg


def adopted(core: Core, leg: Leg) -> Leg:
    """A restarted process took the leg over: its streams' websockets are gone."""
    for stream in leg.app_streams:
        leg = _stopped(core, leg, stream, close=False)
    return leg
