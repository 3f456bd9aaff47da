"""Leaving (issue 12, point 3) through the app: readiness, admission closed, the drain.

The processes themselves (SIGTERM, hand-over to the next process, ``serve --drain``) are tested
in ``tests/test_restart_e2e.py``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from engine.admission.gate import Admission
from engine.admission.inbound import Refusal, admit
from engine.api.keys import ADMISSION, SETTINGS, STORE
from engine.config import Settings
from engine.machine.model import RejectCause
from engine.runtime.lifecycle import drain
from tests.call_fakes import Harness


@pytest.fixture
async def h(aiohttp_server: Any, aiohttp_client: Any, settings: Settings) -> Harness:
    return await Harness.start(aiohttp_client, aiohttp_server, settings)


def app_of(h: Harness) -> Any:
    assert h.client.app is not None
    return h.client.app


async def test_once_closed_readyz_is_503_healthz_200_and_dials_503(h: Harness) -> None:
    assert (await h.client.get("/readyz")).status == 200
    app_of(h)[ADMISSION].close("shutting down")
    ready = await h.client.get("/readyz")
    assert ready.status == 503
    assert (await ready.json()) == {"status": "unavailable", "reason": "shutting down"}
    assert (await h.client.get("/healthz")).status == 200
    body = {"connection_id": h.bridge["slug"], "from": "+15550001111", "to": "+15550003333"}
    reply = await h.request("POST", "/v2/calls", body)
    assert reply.status == 503
    (error,) = reply.body["errors"]
    assert "shutting down" in error["detail"]


async def test_a_closed_admission_turns_every_inbound_call_away_busy(h: Harness) -> None:
    admission = Admission()
    app = app_of(h)
    number = "+15550009999"  # not even connected: the closed door is checked first
    admission.close("shutting down")
    verdict = await admit(app[STORE], h.runtime.live, number, app[SETTINGS], admission, "v3:x")
    assert isinstance(verdict, Refusal) and verdict.cause is RejectCause.USER_BUSY
    assert "shutting down" in verdict.reason


async def test_a_drain_hangs_up_what_did_not_end_and_waits_for_the_webhooks(h: Harness) -> None:
    a, b = await h.up(), await h.up()
    await h.bridged(a, b)
    c = await h.up()
    await h.hung_up(c)  # ended by itself
    report = await drain(h.runtime, app_of(h)[STORE], 0.0, time.monotonic)
    assert (report.hung_up, report.webhooks_left) == (2, 0)
    for leg in (a, b):
        hangup = await h.receiver.next("call.hangup", leg)
        assert hangup.payload["hangup_source"] == "callee"
        assert "hangup" in h.gateway.ops(leg)
