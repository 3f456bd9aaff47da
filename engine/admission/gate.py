"""Whether this process admits new calls: not once it is stopping (engine/runtime/lifecycle.py says
how it leaves), and not while its media tick runs late (``TickLoad``: more than a fifth of the last
second's ticks a whole tick late; admitting again after two seconds on time).

Refusing new legs when the tick cannot keep time protects the calls already up: past that
point every added leg makes every live call lose audio (issue 13). A refused inbound call is
rejected busy (the provider may try the caller's next route); a refused dial is answered 429
with ``Retry-After`` in Telnyx's envelope, like an organization over its limits.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from engine.logs import get_logger

log = get_logger("callbridge.lifecycle")

#: A tick later than this is late: a whole 20 ms tick, its frames a slot behind. (Noise on a busy
#: machine delays a tick by a few ms; an engine out of CPU falls further behind every tick.)
LATE_AFTER_S = 0.020
#: The ticks judged together: one second of them.
WINDOW_TICKS = 50
#: Overloaded when more than this share of the window was late (or skipped) ...
OVERLOAD_SHARE = 0.2
#: ... and admitting again only once the whole window has had none late for this long.
RECOVER_AFTER_TICKS = 100  # 2 s: a tick that keeps time for a moment is not yet a healthy one


class TickLoad:
    """The tick's lateness over the last ``window`` ticks, with hysteresis: overloaded when
    more than ``share`` of them were later than ``late_after_s``; healthy again after
    ``recover_after`` ticks in a row that were on time. O(1) per tick.

    Judged only once a whole window has run (a process's first second is its start-up, busy
    with adopting calls and opening stores); ticks skipped after a stall are not counted (the
    metrics count them): one stall, a garbage collection or a slow disk, is not an overload,
    while an engine out of CPU runs every tick late."""

    def __init__(
        self,
        *,
        late_after_s: float = LATE_AFTER_S,
        window: int = WINDOW_TICKS,
        share: float = OVERLOAD_SHARE,
        recover_after: int = RECOVER_AFTER_TICKS,
    ) -> None:
        if late_after_s <= 0 or window < 1 or not 0 < share < 1 or recover_after < 1:
            raise ValueError("tick load needs a positive budget, window and recovery, 0<share<1")
        self.late_after_s = late_after_s
        self._limit = int(share * window)
        self._recover_after = recover_after
        self._window: deque[bool] = deque(maxlen=window)
        self._late = 0  # late ticks in the window
        self._on_time = 0  # ticks in a row on time
        self._warming = window  # ticks still to run before any is judged
        self.overloaded = False

    # The media tick's observer (media.clock.TickObserver), beside the metrics.
    def observe_tick(self, duration_s: float, lateness_s: float) -> None:
        """One tick ran, starting ``lateness_s`` after it was due."""
        if self._warming:
            self._warming -= 1
            return
        self._push(lateness_s > self.late_after_s)
        if not self.overloaded and self._late > self._limit:
            self.overloaded = True
            log.warning(
                "media tick overloaded: refusing new calls",
                late_ticks=self._late,
                window=len(self._window),
                lateness_ms=round(lateness_s * 1000, 1),
            )
        elif self.overloaded and self._on_time >= self._recover_after:
            self.overloaded = False
            log.info("media tick keeps time again: admitting new calls")

    def ticks_skipped(self, count: int) -> None:
        """Ticks given up after a stall: not judged (see the class docstring)."""

    def _push(self, late: bool) -> None:
        window = self._window
        if len(window) == window.maxlen and window[0]:
            self._late -= 1
        window.append(late)
        self._late += late
        self._on_time = 0 if late else self._on_time + 1

    @property
    def retry_after_s(self) -> float:
        """When a refused dial is worth trying again: once the tick could have recovered."""
        return self._recover_after * 0.020


#: Why a new call is refused (a bounded metrics label): this process is stopping, its tick is
#: overloaded, the live legs cannot be counted (the shared registry, Redis, unreachable:
#: engine/admission/live_redis.py), or the database cannot be reached (engine/admission/routes.py).
REFUSALS = ("shutting_down", "overloaded", "live_legs_unavailable", "database_unavailable")


class Admission:
    """Open until ``close`` (closed for good); refusing while ``load`` says overloaded.
    ``on_refused`` counts each refusal ``refusal`` reports, by reason (the metrics)."""

    def __init__(
        self, load: TickLoad | None = None, on_refused: Callable[[str], None] | None = None
    ) -> None:
        self._reason: str | None = None
        self.load = load if load is not None else TickLoad()
        self._on_refused = on_refused

    def refusal(self) -> str | None:
        """Why a new call is refused now (one of ``REFUSALS``), counted; None: admitted."""
        if self._reason is not None:
            why = "shutting_down"
        elif self.load.overloaded:
            why = "overloaded"
        else:
            return None
        self.refused(why)
        return why

    def refused(self, why: str) -> None:
        """Count a refusal decided elsewhere (one of ``REFUSALS``), e.g. a claim the live-leg
        registry could not take."""
        if self._on_refused is not None:
            self._on_refused(why)

    @property
    def open(self) -> bool:
        """Not stopping (whatever the load: /healthz and the drain ask this)."""
        return self._reason is None

    @property
    def admitting(self) -> bool:
        """New calls are let in: open, and the tick keeps time."""
        return self._reason is None and not self.load.overloaded

    @property
    def reason(self) -> str:
        if self._reason is not None:
            return self._reason
        return "overloaded: its media tick runs late" if self.load.overloaded else ""

    def close(self, reason: str) -> None:
        if self._reason is None:
            self._reason = reason
            log.info("no longer admitting new calls", reason=reason)
