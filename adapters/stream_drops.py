"""What a media stream does with a frame it cannot use: drop it, count it, log it, and close the
stream only when such frames come as a flood.

Providers add events and fields over time and a network or a provider bug can mangle one frame;
neither may end a live call (issue 10, PROTOCOLS.md gotcha 13). So each stream has a
``FrameDrops``:

- every dropped frame increments ``callbridge_media_frames_dropped_total{provider, reason}``
  (``reason`` is one of ``adapters.streams.DROP_REASONS``, never frame text, so the label set
  stays bounded);
- a warning names the leg, the provider and the reason, at most once per ``LOG_INTERVAL_S`` per
  stream (the next line says how many were left unlogged), so a flood cannot write a line per
  frame; frames of an unknown event are counted the same way but logged at debug level, since
  they are a newer protocol, not an error, and they never count towards a flood;
- more than ``FLOOD_FRAMES`` dropped frames within ``FLOOD_WINDOW_S`` (a sliding window over the
  stream's clock, injectable for tests) is a flood: ``drop`` raises ``StreamProtocolError`` with
  RFC 6455 code 1007, and the media session closes the stream as one that dropped without
  ``stop``: the leg waits for a new stream like any leg whose stream dropped
  (``engine/machine/streams.py``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping

from prometheus_client import Counter

from adapters.streams import CLOSE_INVALID_DATA, DropReason, StreamError, StreamProtocolError
from engine.logs import get_logger

__all__ = ["FLOOD_FRAMES", "FLOOD_WINDOW_S", "LOG_INTERVAL_S", "FloodWindow", "FrameDrops"]

log = get_logger("callbridge.media_session")

# Issue 10 point 4: "closed only for a flood of bad frames (e.g. more than 50 in one second)".
# A healthy stream carries ~50 frames a second, so this is a stream sending nothing else.
FLOOD_FRAMES = 50
FLOOD_WINDOW_S = 1.0
LOG_INTERVAL_S = 10.0


class FloodWindow:
    """Sliding window over event times: flooded once more than ``limit`` fall within ``window_s``.

    It keeps only the last ``limit + 1`` times, so memory is bounded whatever the rate.
    """

    __slots__ = ("_times", "limit", "window_s")

    def __init__(self, limit: int = FLOOD_FRAMES, window_s: float = FLOOD_WINDOW_S) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("a flood window needs a positive limit and duration")
        self.limit = limit
        self.window_s = window_s
        self._times: deque[float] = deque(maxlen=limit + 1)

    def hit(self, now: float) -> bool:
        """Record one event at ``now``; True when it makes a flood."""
        times = self._times
        times.append(now)
        return len(times) > self.limit and now - times[0] <= self.window_s


class _LogBudget:
    """At most one line per ``interval_s``; counts what it held back in between."""

    __slots__ = ("_interval_s", "_next_at", "held")

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._next_at: float | None = None
        self.held = 0

    def take(self, now: float) -> bool:
        if self._next_at is not None and now < self._next_at:
            self.held += 1
            return False
        self._next_at = now + self._interval_s
        return True


class FrameDrops:
    """The dropped frames of one media stream (see the module docstring)."""

    def __init__(
        self,
        provider: str,
        dropped: Counter,
        clock: Callable[[], float],
        context: Mapping[str, str] | None = None,
        *,
        flood: FloodWindow | None = None,
        log_interval_s: float = LOG_INTERVAL_S,
    ) -> None:
        self._provider = provider
        self._dropped = dropped
        self._clock = clock
        # The caller's context (remote address, ...) plus the provider, for every line logged.
        self._context = {**(context or {}), "provider": provider}
        self._flood = flood if flood is not None else FloodWindow()
        self._warnings = _LogBudget(log_interval_s)
        self._debugs = _LogBudget(log_interval_s)
        self._errors = _LogBudget(log_interval_s)
        self.total = 0

    def drop(self, reason: DropReason, detail: str, leg_id: str | None) -> None:
        """Count and log one unusable frame; raise ``StreamProtocolError`` (1007) on a flood."""
        self.total += 1
        self._dropped.labels(self._provider, reason).inc()
        now = self._clock()
        if self._warnings.take(now):
            log.warning(
                "media frame dropped",
                leg_id=leg_id,
                reason=reason,
                detail=detail,
                unlogged=self._warnings.held,
                **self._context,
            )
            self._warnings.held = 0
        if self._flood.hit(now):
            log.warning(
                "media stream flooded with unusable frames; closing it",
                leg_id=leg_id,
                dropped=self.total,
                **self._context,
            )
            flood = self._flood
            raise StreamProtocolError(
                f"flood: more than {flood.limit} unusable frames within {flood.window_s:g} s",
                CLOSE_INVALID_DATA,
            )

    def provider_error(self, error: StreamError, leg_id: str | None) -> None:
        """Log an error the provider reports in-band (Telnyx ``error`` frames), rate-limited
        like drops: a provider answering every frame we send with one must not flood the log."""
        if self._errors.take(self._clock()):
            log.warning(
                "provider stream error",
                leg_id=leg_id,
                code=error.code,
                title=error.title,
                detail=error.detail,
                unlogged=self._errors.held,
                **self._context,
            )
            self._errors.held = 0

    def waited_too_long(self, leg_id: str | None) -> None:
        """A message dropped because too many waited behind the stream's ``start`` (the engine
        busy binding it): counted and logged like a drop, but never a flood, since the provider
        did nothing wrong."""
        self._dropped.labels(self._provider, "backlog_full").inc()
        if self._warnings.take(self._clock()):
            log.warning(
                "media frame dropped: too many waited behind the stream's start",
                leg_id=leg_id,
                unlogged=self._warnings.held,
                **self._context,
            )
            self._warnings.held = 0

    def unknown(self, event: str, leg_id: str | None) -> None:
        """Count a frame of an event this version does not know; it is not an error."""
        self._dropped.labels(self._provider, "unknown_event").inc()
        if self._debugs.take(self._clock()):
            log.debug(
                "media frame of an unknown event ignored",
                leg_id=leg_id,
                frame_event=event,
                unlogged=self._debugs.held,
                **self._context,
            )
            self._debugs.held = 0
