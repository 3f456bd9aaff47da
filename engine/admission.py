"""Whether this process admits new calls (see engine/lifecycle.py for how it leaves)."""

from __future__ import annotations

from engine.logs import get_logger

log = get_logger("callbridge.lifecycle")


class Admission:
    """Open until ``close``; closed for good."""

    def __init__(self) -> None:
        self._reason: str | None = None

    @property
    def open(self) -> bool:
        return self._reason is None

    @property
    def reason(self) -> str:
        return self._reason or ""

    def close(self, reason: str) -> None:
        if self._reason is None:
            self._reason = reason
            log.info("no longer admitting new calls", reason=reason)
