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

A conference's recording (``StartRecording.room``) goes the same way under the conference's id:
its listener is put in the room again when it is resumed, and it is catalogued with the
conference's id and its creator's call ids.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from engine.errors import CallbridgeError, NotFound
from engine.logs import get_logger
from engine.machine import effects as fx
from engine.machine import events as ev
from engine.machine.machine import CallMachine
from engine.machine.model import Conference, Leg
from engine.media_plane.plane import ActiveRecording, MediaPlane, close_recording
from engine.recordings import FinishedRecording, RecordingCatalog
from engine.store.base import Store
from engine.store.live_records import LiveRecording, LiveSnapshot
from media.recorder import RecordingError, RecordingResult

log = get_logger("callbridge.runtime")


class RecordingLifecycle:
    def __init__(
        self,
        *,
        plane: MediaPlane,
        store: Store,
        catalog: RecordingCatalog,
        machine: CallMachine,
        report: Callable[[ev.Event], Awaitable[None]],
        spawn: Callable[[Awaitable[None]], None],
        clock: Callable[[], float],
    ) -> None:
        self._plane = plane
        self._store = store
        self._catalog = catalog
        self._machine = machine  # its legs and conferences (NotFound once forgotten)
        self._report = report  # an input of the engine's own to the machine
        self._spawn = spawn
        self._clock = clock

    def apply(self, effect: fx.StartRecording | fx.StopRecording | fx.PauseRecording) -> None:
        """The machine's recording effects; nothing here waits on the disk (a new recording is
        stored once its file is open: the runtime's tick)."""
        match effect:
            case fx.StartRecording(leg_id, recording_id, options, org_id, room):
                self._plane.start_recording(
                    leg_id, recording_id, options, self._clock(), org_id=org_id, room=room
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

    async def resume(self, snapshot: LiveSnapshot, *, shared: bool = False) -> None:
        """Each adopted leg's or conference's recording in progress goes on in its file; one
        stopped but not yet saved is saved now; one that cannot be (file gone, nothing stored)
        fails with call.recording.error (conference.recording.error), so none is lost
        silently. A stored row of a recording nobody awaits (failed in a tick, or saved just
        before the stop) is stale and dropped; with ``shared`` (other live nodes hold calls of
        this store) only if it is an adopted leg's or conference's: the others may be theirs."""
        awaited = _awaited(snapshot)
        for stored in await self._store.load_live_recordings():
            owner = awaited.pop(stored.recording_id, None)
            if owner is None and shared and not snapshot.mentions(stored.call_control_id):
                continue
            if owner is None:
                await self.forget(stored.recording_id)
            elif owner.in_progress:
                room = owner.room(stored)
                failed = self._plane.resume_recording(stored, paused=owner.paused, room=room)
                if failed is not None:
                    await self.forget(stored.recording_id)
                    await self._report(failed)
            else:
                self._spawn(self._save_reopened(stored))
        for recording_id, owner in awaited.items():
            await self._report(self._plane.recordings.lost(owner.owner_id, recording_id))

    async def _save_reopened(self, stored: LiveRecording) -> None:
        """A recording stopped by the earlier process, which stopped before saving it."""
        reopened = self._plane.recordings.reopen(stored)
        if isinstance(reopened, ev.RecordingFailed):
            await self.forget(stored.recording_id)
            await self._report(reopened)
        else:
            await self._save_recording(stored.call_control_id, reopened)

    def _finished(
        self, owner_id: str, active: ActiveRecording, result: RecordingResult, ended_at: float
    ) -> FinishedRecording:
        """What the catalogue keeps of a completed recording: a leg's, or a conference's (with
        its creator's call ids, as far as they are still known); NotFound if its leg or
        conference is forgotten."""
        conference = self._conference(owner_id, active.org_id)
        if conference is None:
            leg = self._machine.leg(owner_id)
            ids = (leg.call_leg_id, leg.call_session_id, leg.from_, leg.to)
            leg_id, connection_id = owner_id, leg.connection_id
        else:
            leg_id, connection_id = conference.creator, conference.connection_id
            creator = self._creator(conference)
            known = ("", "") if creator is None else (creator.call_leg_id, creator.call_session_id)
            ids = (*known, "", "")  # a conference has no from and to
        return FinishedRecording(
            org_id=active.org_id,
            call_control_id=leg_id,
            call_leg_id=ids[0],
            call_session_id=ids[1],
            connection_id=connection_id,
            from_=ids[2],
            to=ids[3],
            format=result.format,
            channels=active.options.channels,
            started_at=active.started_at,
            ended_at=ended_at,
            duration_s=result.duration_s,
            path=result.path,
            conference_id=None if conference is None else conference.conference_id,
        )

    def _conference(self, owner_id: str, org_id: int) -> Conference | None:
        try:
            return self._machine.conference(owner_id, org_id)
        except NotFound:
            return None  # a leg's recording

    def _creator(self, conference: Conference) -> Leg | None:
        try:
            return self._machine.leg(conference.creator)
        except NotFound:
            return None  # forgotten since it ended


@dataclass(frozen=True, slots=True)
class _Owner:
    """Who awaits an unsaved recording after a restart: a leg, or a conference."""

    owner_id: str
    in_progress: bool
    paused: bool
    conference: Conference | None = None

    def room(self, stored: LiveRecording) -> fx.RoomMix | None:
        """What a conference's recording listens to again (None for a leg's)."""
        record = self.conference
        if record is None:
            return None
        dual = stored.options.channels == "dual"
        return fx.RoomMix(record.room_id, record.creator if dual else None)


def _awaited(snapshot: LiveSnapshot) -> dict[str, _Owner]:
    """Every recording an adopted leg or conference awaits the outcome of, by its id."""
    awaited: dict[str, _Owner] = {}
    for leg in snapshot.legs:
        for recording_id in leg.recordings_unsaved:
            in_progress = leg.recording_id == recording_id
            awaited[recording_id] = _Owner(leg.call_control_id, in_progress, leg.recording_paused)
    for record in snapshot.records:
        for recording_id in record.recordings_unsaved:
            in_progress = record.recording_id == recording_id
            awaited[recording_id] = _Owner(
                record.conference_id, in_progress, record.recording_paused, record
            )
    return awaited
