"""Which legs are live, per bridge and per organization: the seam between the API and call control.

The platform API asks it whether a bridge may be deleted and how many legs a number carries
(``channels_count``); admission and dial ask how many legs an organization has live (its
``max_legs``, engine/admission/limits.py). The call-control runtime tells it when legs start and
end. It lives in memory, rebuilt when a restarted process adopts the stored live legs
(``CallRuntime.adopt``).
"""

from __future__ import annotations

from collections import defaultdict


class LiveLegIndex:
    def __init__(self) -> None:
        self._by_bridge: defaultdict[int, set[str]] = defaultdict(set)
        self._by_number: defaultdict[str, set[str]] = defaultdict(set)
        self._where: dict[str, tuple[int, str]] = {}
        self._by_org: defaultdict[int, set[str]] = defaultdict(set)
        self._org_of: dict[str, int] = {}

    def leg_started(self, leg_id: str, bridge_id: int, number: str) -> None:
        self._where[leg_id] = (bridge_id, number)
        self._by_bridge[bridge_id].add(leg_id)
        self._by_number[number].add(leg_id)

    def org_leg_started(self, leg_id: str, org_id: int) -> None:
        """Count the leg (inbound or dialled, or a dial still being placed) against its
        organization until ``leg_ended``."""
        self._org_of[leg_id] = org_id
        self._by_org[org_id].add(leg_id)

    def leg_ended(self, leg_id: str) -> None:
        self._org_leg_ended(leg_id)
        where = self._where.pop(leg_id, None)
        if where is None:
            return
        bridge_id, number = where
        self._by_bridge[bridge_id].discard(leg_id)
        self._by_number[number].discard(leg_id)
        if not self._by_bridge[bridge_id]:
            del self._by_bridge[bridge_id]
        if not self._by_number[number]:
            del self._by_number[number]

    def _org_leg_ended(self, leg_id: str) -> None:
        org_id = self._org_of.pop(leg_id, None)
        if org_id is None:
            return
        self._by_org[org_id].discard(leg_id)
        if not self._by_org[org_id]:
            del self._by_org[org_id]

    def count_for_bridge(self, bridge_id: int) -> int:
        return len(self._by_bridge.get(bridge_id, ()))

    def count_for_number(self, number: str) -> int:
        return len(self._by_number.get(number, ()))

    def count_for_org(self, org_id: int) -> int:
        return len(self._by_org.get(org_id, ()))
