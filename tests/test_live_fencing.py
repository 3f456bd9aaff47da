"""The store fences a node from the legs another node took over (issue 16, point 5): with
several nodes each live leg row names its owner, the adopting node makes the rows its own, and
an input of the old owner changing such a leg is refused whole (its webhooks too)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine.machine.live_changes import LiveChanges
from engine.store.base import QueuedWebhook
from engine.store.live import LegsFenced
from engine.store.sql import SqlStore
from tests.postgres import fresh_database
from tests.test_machine_harness import Harness


def hook(leg_id: str) -> QueuedWebhook:
    return QueuedWebhook(org_id=1, leg_id=leg_id, url="http://app.test/hooks", body="{}")


async def test_an_input_on_a_leg_another_node_took_over_is_refused() -> None:
    h = Harness()
    h.incoming("a")
    h.incoming("b")
    leg_a, leg_b = h.m.leg("a"), h.m.leg("b")
    async with fresh_database() as url:
        first, second = SqlStore(url), SqlStore(url)
        await first.start()
        await second.start()
        try:
            first.fence_as("node-1")
            second.fence_as("node-2")
            await first.commit_input(LiveChanges(legs=(leg_a, leg_b)), [], 1.0)
            await second.own_live(["a"])  # node-2 took a over

            moved = replace(leg_a, client_state="eA==")
            with pytest.raises(LegsFenced) as fenced:
                await first.commit_input(LiveChanges(legs=(moved, leg_b)), [hook("a")], 2.0)
            assert fenced.value.legs == ("a",)
            assert await first.pending_webhook_count() == 0  # nothing of the input stored
            stored = {leg.call_control_id: leg for leg in (await second.load_live()).legs}
            assert stored["a"].client_state is None

            await second.commit_input(LiveChanges(legs=(moved,)), [hook("a")], 3.0)
            await first.commit_input(LiveChanges(legs=(replace(leg_b, client_state="eQ=="),)),
                                     [], 4.0)  # fmt: skip
            stored = {leg.call_control_id: leg for leg in (await first.load_live()).legs}
            assert (stored["a"].client_state, stored["b"].client_state) == ("eA==", "eQ==")
            with pytest.raises(LegsFenced):  # deleting it is changing it too
                await first.commit_input(LiveChanges(legs_gone=("a",)), [], 5.0)
        finally:
            await first.close()
            await second.close()
