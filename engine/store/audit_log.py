"""The console's audit log as the store keeps it: the record and the store's part for it.

``engine.store.base.Store`` includes ``AuditLog``; ``engine.store.audit`` carries it out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One control action taken through the console: who (organization and the id of the API
    token its session signed in with), what (action, leg, the command's JSON body), when (epoch
    seconds) and how it ended (``ok`` or the refusal's detail)."""

    org_id: int
    token_id: int
    action: str
    call_control_id: str
    body: str
    outcome: str
    at: float
    id: int = 0  # given by the store


class AuditLog(Protocol):
    async def api_token_id(self, token_sha256: str) -> int | None:
        """The id of the API token with this digest (who acted); None if unknown."""

    async def add_audit_entry(self, entry: AuditRecord) -> int:
        """Keep one entry and return its id. NotFound for an unknown organization."""

    async def audit_entries(self, org_id: int, limit: int) -> list[AuditRecord]:
        """The organization's newest ``limit`` entries, newest first."""
