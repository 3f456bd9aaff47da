"""Structured logs: JSON lines, a request id on every line of a request, secrets masked."""

from __future__ import annotations

import json
import logging

import pytest

from engine.logs import REDACTED, configure_logging, get_logger
from tests.platform_client import BRIDGES, Org


@pytest.fixture
def json_logs():  # type: ignore[no-untyped-def]
    # Tests configure inside their body, once capsys has replaced stderr; this only cleans up.
    yield
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_callbridge", False)]:
        root.removeHandler(handler)


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_every_line_of_a_request_carries_its_request_id(
    org: Org, json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("json", "info")
    reply = await org.call("POST", BRIDGES, {"name": "Logged"}, headers={"X-Request-ID": "req-42"})
    assert reply.status == 201
    lines = json_lines(capsys.readouterr().err)
    mine = [line for line in lines if line.get("request_id") == "req-42"]
    events = {line["event"] for line in mine}
    assert {"bridge created", "request"} <= events
    assert all(line["level"] in ("info", "warning") for line in mine)


def test_secret_keys_are_masked_wherever_they_appear(
    json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("json", "info")
    get_logger("test").info("oops", auth_token="abc", nested={"password": "p", "ok": 1})
    line = json_lines(capsys.readouterr().err)[-1]
    assert line["auth_token"] == REDACTED
    assert line["nested"] == {"password": REDACTED, "ok": 1}
