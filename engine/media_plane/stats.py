"""Per-leg media statistics: what a leg's streams carried, over all of them (issue 13, point 5).

One ``LegMediaStats`` per leg lives in the media plane from the leg's first stream until the leg
is forgotten; every stream the leg has (a reconnect, a restart's new stream) adds to it. The
stream's session counts what comes in (``arrived``: frames, and the RFC 3550 inter-arrival
jitter), its reorder window (``adapters/media_order.py``) what it had to put back in order or
give up, the stream's output what goes out and what it had to drop, and the
mixer the ticks it had no frame of the leg's for (``concealed``: silence played in its place).

They are shown as the ``media`` object of ``GET /v2/calls/{id}`` (callbridge's extension to
Telnyx's shape), logged in one line when the leg hangs up, and summed into the Prometheus
counters (aggregates only: no per-leg series).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TOTALS", "LegMediaStats", "LegStatsBook"]

#: What is summed over legs for Prometheus (engine/metrics.py): counters only, no gauges.
TOTALS = (
    "frames_in", "frames_out", "lost", "late", "reordered", "concealed", "output_dropped",
    "reconnects",
)  # fmt: skip


@dataclass(slots=True)
class LegMediaStats:
    streams: int = 0  # media streams the leg has had
    frames_in: int = 0  # inbound media frames handed to the mixer
    frames_out: int = 0  # frames written to the leg's socket
    # Inbound frames the provider numbered (``chunk``) that never played: a gap in the numbers
    # never filled, or a frame that came too late. Audio lost before the provider numbered it
    # leaves no gap there: a mixed leg shows it as ``concealed``.
    lost: int = 0
    late: int = 0  # of those, frames that came behind the playout point (dropped)
    reordered: int = 0  # frames held behind a gap, then released in order
    concealed: int = 0  # mixer ticks with no frame of the leg's (silence in its place)
    output_dropped: int = 0  # outbound frames dropped while the socket was behind
    jitter_s: float = 0.0  # RFC 3550 inter-arrival jitter estimate, seconds
    # The current stream's output queue depth (frames waiting for the socket), if it has one.
    output_queue: Callable[[], int] | None = None
    summarized: bool = False  # its summary line was logged (at hangup)
    concealed_before: int = field(default=0, repr=False)  # of the streams before this one
    _last_arrival: float | None = field(default=None, repr=False)
    _last_audio_s: float = field(default=0.0, repr=False)

    @property
    def reconnects(self) -> int:
        """Media streams the leg opened after its first (a drop and a new stream)."""
        return max(self.streams - 1, 0)

    def stream_started(self, output_queue: Callable[[], int] | None) -> None:
        self.streams += 1
        self.output_queue = output_queue
        self._last_arrival = None  # a new stream, a new timeline

    def arrived(self, now: float, audio_s: float) -> None:
        """One inbound media message at ``now`` (seconds), holding ``audio_s`` of audio:
        J += (|D| - J) / 16, D the difference between the spacing of two consecutive
        arrivals and the audio the first one held (RFC 3550, 6.4.1, with the audio's own
        duration standing for the timestamp difference: Telnyx leaves the units of its media
        timestamps undocumented, PROTOCOLS.md 3.2)."""
        last = self._last_arrival
        if last is not None:
            spacing = (now - last) - self._last_audio_s
            self.jitter_s += (abs(spacing) - self.jitter_s) / 16
        self._last_arrival, self._last_audio_s = now, audio_s

    def add_to(self, totals: dict[str, int]) -> None:
        for key in TOTALS:
            totals[key] = totals.get(key, 0) + getattr(self, key)

    def view(self) -> dict[str, Any]:
        """The ``media`` object of a call's status."""
        return {
            "streams": self.streams,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "lost": self.lost,
            "late": self.late,
            "reordered": self.reordered,
            "concealed": self.concealed,
            "output_dropped": self.output_dropped,
            "output_queue": self.output_queue() if self.output_queue is not None else 0,
            "jitter_ms": round(self.jitter_s * 1000, 2),
        }


class LegStatsBook:
    """Every leg's statistics in the media plane, from its first stream until ``forget``, and
    the totals of the legs forgotten since the start (the Prometheus counters never go back).

    ``live_concealed(leg_id)`` is the mixer's count of concealed ticks for a leg attached now
    (0 otherwise): the mixer counts them per slot, so they are read into the stats when asked.
    """

    def __init__(self, live_concealed: Callable[[str], int]) -> None:
        self._live_concealed = live_concealed
        self._stats: dict[str, LegMediaStats] = {}
        self._retired: dict[str, int] = {}

    def of(self, leg_id: str) -> LegMediaStats:
        """The leg's media statistics, kept from its first stream until ``forget``."""
        stats = self._stats.get(leg_id)
        if stats is None:
            stats = self._stats[leg_id] = LegMediaStats()
        return stats

    def detached(self, leg_id: str, concealed: int) -> None:
        """The leg's stream is gone: keep what its slot had concealed."""
        stats = self._stats.get(leg_id)
        if stats is not None:
            stats.concealed_before += concealed

    def view(self, leg_id: str) -> dict[str, object] | None:
        stats = self._stats.get(leg_id)
        if stats is None:
            return None
        self._sync(leg_id, stats)
        return stats.view()

    def summary_once(self, leg_id: str) -> dict[str, object] | None:
        """The leg's statistics the first time they are asked for as its summary; None after,
        or for a leg that never had media."""
        stats = self._stats.get(leg_id)
        if stats is None or stats.summarized:
            return None
        stats.summarized = True
        return self.view(leg_id)

    def forget(self, leg_id: str) -> None:
        if leg_id in self._stats:
            self._sync(leg_id, self._stats[leg_id])
            self._stats.pop(leg_id).add_to(self._retired)

    def totals(self) -> dict[str, int]:
        """Every leg's statistics summed, forgotten legs included."""
        totals = dict(self._retired)
        for leg_id, stats in self._stats.items():
            self._sync(leg_id, stats)
            stats.add_to(totals)
        return totals

    def _sync(self, leg_id: str, stats: LegMediaStats) -> None:
        stats.concealed = stats.concealed_before + self._live_concealed(leg_id)
