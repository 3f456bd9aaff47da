"""Recording files belong to their organization (issue 11, point 3, the file part).

``custom_file_name`` used to be joined to the recordings directory unchecked: ``../../x`` wrote
outside it, and two organizations choosing the same name overwrote each other's recording.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.app import recordings_dir
from engine.config import Settings
from tests.call_fakes import Harness, Org


@pytest.fixture
async def h(aiohttp_server, aiohttp_client, settings: Settings) -> Harness:  # type: ignore[no-untyped-def]
    return await Harness.start(aiohttp_client, aiohttp_server, settings)


async def leg_of(h: Harness, org: Org) -> str:
    """An answered leg of ``org`` with live media."""
    leg = await h.incoming(org=org)
    reply = await h.act(leg, "answer", org=org)
    assert reply.status == 200, reply.body
    await h.answered(leg)
    await h.media(leg)
    return leg


async def record(h: Harness, leg: str, org: Org, name: str) -> Path:
    for action, body in (
        ("record_start", {"format": "wav", "channels": "single", "custom_file_name": name}),
        ("record_stop", {}),
    ):
        reply = await h.act(leg, action, org=org, **body)
        assert reply.status == 200, reply.body
    saved = await h.receiver.next("call.recording.saved", leg)
    return await h.recording_file(saved.payload["recording_urls"]["wav"])


async def test_each_organization_records_in_its_own_directory_and_nothing_is_overwritten(
    h: Harness, settings: Settings
) -> None:
    a, b = await leg_of(h, h.org), await leg_of(h, h.other_org)
    first = await record(h, a, h.org, "take")
    again = await record(h, a, h.org, "take")
    theirs = await record(h, b, h.other_org, "take")
    root = recordings_dir(settings).resolve()
    assert first.resolve() == root / f"org-{h.org.org_id}" / "take.wav"
    assert again.resolve() == root / f"org-{h.org.org_id}" / "take-2.wav"
    assert theirs.resolve() == root / f"org-{h.other_org.org_id}" / "take.wav"
    assert all(path.is_file() for path in (first, again, theirs))


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".", "x\\y"])
async def test_a_file_name_that_could_leave_the_directory_is_refused(
    h: Harness, settings: Settings, name: str
) -> None:
    leg = await leg_of(h, h.org)
    reply = await h.act(leg, "record_start", format="wav", channels="single", custom_file_name=name)
    assert reply.status == 422
    (error,) = reply.body["errors"]
    assert error["source"] == {"pointer": "/custom_file_name"}
    root = recordings_dir(settings)
    assert not root.exists() or not any(root.rglob("*")), "nothing was written"
