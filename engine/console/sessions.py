"""Console sessions, kept on the server: the cookie carries only a random session id.

A session remembers the organization and the id of the API token it signed in with (who acted,
for the audit log), and its CSRF token. Sessions end when signed out, after ``ttl_s``, or when
the process stops (the operator signs in again). Their number is bounded: past the limit the
oldest session goes first.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from engine.store.base import OrganizationRecord

__all__ = ["MAX_SESSIONS", "SESSION_TTL_S", "ConsoleSession", "ConsoleSessions"]

SESSION_TTL_S = 8 * 3600.0  # a working shift
MAX_SESSIONS = 10_000


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    session_id: str
    org_id: int
    org_handle: str
    org_name: str
    token_id: int
    csrf_token: str
    expires_at: float


class ConsoleSessions:
    def __init__(
        self,
        clock: Callable[[], float],
        *,
        ttl_s: float = SESSION_TTL_S,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self._clock = clock
        self.ttl_s = ttl_s
        self._max = max_sessions
        self._sessions: dict[str, ConsoleSession] = {}  # oldest first (insertion order)

    def open(self, org: OrganizationRecord, token_id: int) -> ConsoleSession:
        while len(self._sessions) >= self._max:
            del self._sessions[next(iter(self._sessions))]
        session = ConsoleSession(
            session_id=secrets.token_urlsafe(32),
            org_id=org.id,
            org_handle=org.domain_handle,
            org_name=org.name,
            token_id=token_id,
            csrf_token=secrets.token_urlsafe(32),
            expires_at=self._clock() + self.ttl_s,
        )
        self._sessions[session.session_id] = session
        return session

    def get(self, session_id: str | None) -> ConsoleSession | None:
        """The live session with this id; None if unknown or expired (then forgotten)."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is not None and session.expires_at <= self._clock():
            del self._sessions[session_id]
            return None
        return session

    def close(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
