"""The runtime's side of recordings: closing and cataloguing a finished one, and keeping one
in progress alive across a restart.

A recording's file is written by the media plane (``engine.media_plane.recordings``); this module
decides what happens around it. A finished recording is closed off the loop (waiting at most
``media.recorder.CLOSE_WAIT_S``), catalogued (``engine.recordings``) and reported to the
machine (``RecordingSaved``, or ``RecordingFailed``). Recordings outlive the process: each one
in progress is stored once its file is open (``store``) and forgotten only once its outcome is
reported (``forget``), so the process that adopts the calls (``resume``) continues it in the
same file, saves one the earlier process stopped but did not save, and fails one it cannot
continue (one started too shortly before the stop to have been stored is lost, reported with
``call.recording.error``). A store failure here is logged, never fatal to the recording.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from engine.errors import CallbridgeError
from engine.logs import get_logger
from engine.machine import effects as fx
from engine.machine import events as ev
from engine.machine.model import Leg
from engine.media_plane.plane import ActiveRecording, MediaPlane, close_recording
from engine.recordings import FinishedRecording, RecordingCatalog
from engine.store.base import LiveRecording, Store
from media.recorder import RecordingError, RecordingResult

log = get_logger("callbridge.runtime")


class RecordingLifecycle:
    def __init__(
        self,
        *,
        plane: MediaPlane,
        store: Store,
        catalog: RecordingCatalog,
        leg: Callable[[str], Leg],
        report: Callable[[ev.Event], Awaitable[None]],
        spawn: Callable[[Awaitable[None]], None],
        clock: Callable[[], float],
    ) -> None:
        self._plane = plane
        self._store = store
        self._catalog = catalog
        self._leg = leg  # the machine's leg (NotFound once it is forgotten)
        self._report = report  # an input of the engine's own to the machine
        self._spawn = spawn
        self._clock = clock

    def apply(self, effect: fx.StartRecording | fx.StopRecording | fx.PauseRecording) -> None:
        """The machine's recording effects; nothing here waits on the disk (a new recording is
        stored once its file is open: the runtime's tick)."""
        match effect:
            case fx.StartRecording(leg_id, recording_id, options, org_id):
                self._plane.start_recording(
                    leg_id, recording_id, options, self._clock(), org_id=org_id
                )
            case fx.StopRecording(leg_id, _recording_id):
                self._spawn(self.finish(leg_id))
            case fx.PauseRecording(leg_id, _recording_id, paused):
                self._plane.recordings.set_paused(leg_id, paused)

    async def finish(self, leg_id: str) -> None:
        """Close the leg's recording off the loop (waiting at most media.recorder.CLOSE_WAIT_S:
        a writer stuck on a stalled disk is left behind) and report it saved, or failed."""
        active = self._plane.take_recording(leg_id)
        if active is not None:
            await self._save_recording(leg_id, active)

    async def _save_recording(self, leg_id: str, active: ActiveRecording) -> None:
        try:
            await self._close_and_report(leg_id, active)
        finally:
            # Only now: a process that stops before the outcome is reported leaves the row,
            # and the next one finishes the recording (``resume``).
            await self.forget(active.recording_id)

    async def _close_and_report(self, leg_id: str, active: ActiveRecording) -> None:
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(None, close_recording, active)
        except RecordingError as exc:
            await self._report(self._plane.recordings.failed(leg_id, active, exc))
            return
        ended_at = self._clock()
        try:
            public_id, url = await self._catalog.add(
                self._finished(leg_id, active, result, ended_at)
            )
        except CallbridgeError:
            # The file is on disk but no API can reach it, so no webhook can point at it.
            log.exception(
                "recording saved but not catalogued", leg_id=leg_id, path=str(result.path)
            )
            return
        await self._report(
            ev.RecordingSaved(
                leg_id,
                active.recording_id,
                url=url,
                public_id=public_id,
                started_at=active.started_at,
                ended_at=ended_at,
                format=active.options.format,
                channels=active.options.channels,
            )
        )

    async def store(self, stored: LiveRecording) -> None:
        """Keep what continuing a recording takes (its file is open), for the next process."""
        try:
            await self._store.save_live_recording(stored)
        except CallbridgeError as exc:
            log.warning(
                "recording in progress not stored: a restart would end it",
                leg_id=stored.call_control_id,
                recording_id=stored.recording_id,
                error=str(exc),
            )

    async def forget(self, recording_id: str) -> None:
        try:
            await self._store.delete_live_recording(recording_id)
        except CallbridgeError as exc:  # stale rows are dropped at the next adoption
            log.warning("recording in progress not forgotten", recording_id=recording_id,
                        error=str(exc))  # fmt: skip

    async def resume(self, legs: tuple[Leg, ...]) -> None:
        """Each adopted leg's recording in progress goes on in its file; one stopped but not
        yet saved is saved now; one that cannot be (file gone, nothing stored) fails with
        call.recording.error, so none is lost silently. A stored row of a recording no leg
        awaits (failed in a tick, or saved just before the stop) is stale and dropped."""
        unsaved = {r: leg for leg in legs for r in leg.recordings_unsaved}
        for stored in await self._store.load_live_recordings():
            leg = unsaved.pop(stored.recording_id, None)
            if leg is None:
                await self.forget(stored.recording_id)
            elif leg.recording_id == stored.recording_id:
                failed = self._plane.resume_recording(stored, paused=leg.recording_paused)
                if failed is not None:
                    await self.forget(stored.recording_id)
                    await self._report(failed)
            else:
                self._spawn(self._save_reopened(stored))
        for recording_id, leg in unsaved.items():
            await self._report(self._plane.recordings.lost(leg.call_control_id, recording_id))

    async def _save_reopened(self, stored: LiveRecording) -> None:
        """A recording stopped by the earlier process, which stopped before saving it."""
        reopened = self._plane.recordings.reopen(stored)
        if isinstance(reopened, ev.RecordingFailed):
            await self.forget(stored.recording_id)
            await self._report(reopened)
        else:
            await self._save_recording(stored.call_control_id, reopened)

    def _finished(
        self, leg_id: str, active: ActiveRecording, result: RecordingResult, ended_at: float
    ) -> FinishedRecording:
        """What the catalogue keeps of a completed recording; NotFound if the leg is gone."""
        leg = self._leg(leg_id)
        return FinishedRecording(
            org_id=leg.org_id,
            call_control_id=leg_id,
            call_leg_id=leg.call_leg_id,
            call_session_id=leg.call_session_id,
            connection_id=leg.connection_id,
            from_=leg.from_,
            to=leg.to,
            format=result.format,
            channels=active.options.channels,
            started_at=active.started_at,
            ended_at=ended_at,
            duration_s=result.duration_s,
            path=result.path,
        )
