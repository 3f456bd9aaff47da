"""Every leg's overlays in one store: what was asked for, and what is playing now.

An overlay is audio mixed over what one leg hears (ringback, a playback, a tone, digits sent to
it). The machine asks for one by leg and tag (``SetOverlay``) and clears it by tag; asking again
with a tag replaces what that tag played. Per leg and tag the store keeps:

- the *spec* (what to play, how many times), from the request until it is cleared or its
  playback ends, whether or not the leg's media is live;
- the *running* source, only while the leg's media is: ``detached`` drops a leg's running
  sources and keeps its specs, and the media plane starts them again, from the beginning, when
  a stream attaches (``wanted``). Digits sent to a leg (``start`` without ``want``) have no spec
  here: their queue is kept by ``engine.media_plane.digits_out``, which outlives the stream, and
  the media plane starts it again on the next one.

Making a source from a spec (reading a file, fetching a URL) is the media plane's; the store
only keeps what it is given. The mixer takes each leg's frame from here every tick through
``playing``: the leg's one running source itself (no wrapper on the usual path), or, when
several play at once, the leg's ``LegOverlays``, which sums them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from engine.machine.model import OverlaySource
from engine.media_plane.audio_sources import Source

__all__ = ["LegOverlays", "OverlaySpec", "Overlays"]


@dataclass(frozen=True, slots=True)
class OverlaySpec:
    """What an overlay plays (``source``) and how often (``loop``: None or <= 0, until cleared)."""

    source: OverlaySource
    loop: int | None


class LegOverlays:
    """One leg's overlays by tag: specs kept across streams, sources running on the live one."""

    __slots__ = ("running", "specs")

    def __init__(self) -> None:
        self.specs: dict[str, OverlaySpec] = {}
        self.running: dict[str, Source] = {}

    def __call__(self, n: int) -> NDArray[np.int16]:
        """The next ``n`` samples of every running source, summed and clipped."""
        total = np.zeros(n, dtype=np.int32)
        # A copy: a source that ends is cleared from ``running`` from within its own call.
        for source in tuple(self.running.values()):
            total += source(n)
        return np.clip(total, -32768, 32767).astype(np.int16)


class Overlays:
    """The overlays of every leg one media plane serves."""

    def __init__(self) -> None:
        self._legs: dict[str, LegOverlays] = {}

    def want(self, leg_id: str, tag: str, spec: OverlaySpec) -> None:
        """Keep ``spec`` under ``tag``; whatever the tag was playing stops (the new one is
        started by ``start``, now or once its audio is at hand)."""
        entry = self._legs.setdefault(leg_id, LegOverlays())
        entry.specs[tag] = spec
        entry.running.pop(tag, None)

    def start(self, leg_id: str, tag: str, source: Source) -> None:
        """``source`` plays under ``tag`` on the leg's live media, replacing the tag's source."""
        self._legs.setdefault(leg_id, LegOverlays()).running[tag] = source

    def stop(self, leg_id: str, tag: str) -> bool:
        """Forget the tag's spec and source; True if a source was playing."""
        entry = self._legs.get(leg_id)
        if entry is None:
            return False
        entry.specs.pop(tag, None)
        was_running = entry.running.pop(tag, None) is not None
        self._drop_if_empty(leg_id, entry)
        return was_running

    def detached(self, leg_id: str) -> None:
        """The leg's media went away: its sources stop, its specs wait for the next stream."""
        entry = self._legs.get(leg_id)
        if entry is not None:
            entry.running.clear()
            self._drop_if_empty(leg_id, entry)

    def wanted(self, leg_id: str) -> list[tuple[str, OverlaySpec]]:
        """The leg's specs by tag, in the order they were asked for (a copy)."""
        entry = self._legs.get(leg_id)
        return [] if entry is None else list(entry.specs.items())

    def wanting(self, source: OverlaySource) -> list[tuple[str, str, OverlaySpec]]:
        """(leg, tag, spec) of every spec that plays ``source`` (a fetched URL has arrived)."""
        return [
            (leg_id, tag, spec)
            for leg_id, entry in self._legs.items()
            for tag, spec in entry.specs.items()
            if spec.source == source
        ]

    def is_running(self, leg_id: str, tag: str) -> bool:
        entry = self._legs.get(leg_id)
        return entry is not None and tag in entry.running

    def running_count(self, leg_id: str) -> int:
        entry = self._legs.get(leg_id)
        return 0 if entry is None else len(entry.running)

    def playing(self, leg_id: str) -> Source | None:
        """What the mixer pulls the leg's overlay frame from each tick; None when nothing plays."""
        entry = self._legs.get(leg_id)
        if entry is None or not entry.running:
            return None
        if len(entry.running) == 1:
            (source,) = entry.running.values()
            return source
        return entry

    def _drop_if_empty(self, leg_id: str, entry: LegOverlays) -> None:
        if not entry.specs and not entry.running:
            del self._legs[leg_id]
