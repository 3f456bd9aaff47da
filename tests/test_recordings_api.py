"""Recordings through the Call Control API, and their signed download URLs (issue 11, point 3).

Each recording is kept in the store with its organization; ``GET/DELETE /v2/recordings[/{id}]``
answer in Telnyx's shape and only the owner's recordings; ``recording_urls`` in
``call.recording.saved`` and ``download_urls`` are callbridge URLs that work without a token
until they expire. The expiry is crossed by setting the URL signer's clock, never by waiting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import orjson
import pytest
import telnyx

from engine.api.keys import RUNTIME
from engine.config import Settings
from engine.errors import ValidationError
from engine.recordings import RecordingUrls
from engine.store.sql import SqlStore
from tests.call_fakes import Harness, Org

SECRET = "k" * 40


@pytest.fixture
async def h(aiohttp_server, aiohttp_client, settings: Settings) -> Harness:  # type: ignore[no-untyped-def]
    return await Harness.start(aiohttp_client, aiohttp_server, settings)


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def leg_of(h: Harness, org: Org) -> str:
    """An answered leg of ``org`` with live media."""
    leg = await h.incoming(org=org)
    reply = await h.act(leg, "answer", org=org)
    assert reply.status == 200, reply.body
    await h.answered(leg)
    await h.media(leg)
    return leg


async def record(h: Harness, leg: str, org: Org) -> str:
    """Record a moment of ``leg``; the signed URL from its call.recording.saved."""
    for action, body in (("record_start", {"format": "wav", "channels": "single"}),
                         ("record_stop", {})):  # fmt: skip
        reply = await h.act(leg, action, org=org, **body)
        assert reply.status == 200, reply.body
    saved = await h.receiver.next("call.recording.saved", leg)
    url: str = saved.payload["recording_urls"]["wav"]
    assert saved.payload["public_recording_urls"] == {"wav": url}
    # The webhook names the recording by the id the recordings API knows it by.
    assert saved.payload["recording_id"] == id_of(url)
    return url


def id_of(url: str) -> str:
    return urlsplit(url).path.split("/")[3]


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return parts._replace(query=urlencode(query)).geturl()


def refused(reply_body: Any, code: str) -> str:
    (error,) = reply_body["errors"]
    assert error["code"] == code, error
    return str(error["detail"])


async def test_list_get_and_delete_only_the_organizations_own(h: Harness) -> None:
    a, b = await leg_of(h, h.org), await leg_of(h, h.other_org)
    first, second = await record(h, a, h.org), await record(h, a, h.org)
    theirs = await record(h, b, h.other_org)

    listed = await h.request("GET", "/v2/recordings")
    assert listed.status == 200, listed.body
    assert [r["id"] for r in listed.body["data"]] == [id_of(second), id_of(first)], "newest first"
    assert listed.body["meta"] == {
        "page_number": 1, "page_size": 20, "total_pages": 1, "total_results": 2,
    }  # fmt: skip
    paged = await h.request("GET", "/v2/recordings?page[number]=2&page[size]=1")
    assert [r["id"] for r in paged.body["data"]] == [id_of(first)]
    assert paged.body["meta"]["total_pages"] == 2
    third = await record(h, await leg_of(h, h.org), h.org)
    of_leg = await h.request("GET", "/v2/recordings", params={"filter[call_control_id]": a})
    assert [r["id"] for r in of_leg.body["data"]] == [id_of(second), id_of(first)]
    assert of_leg.body["meta"]["total_results"] == 2
    assert (await h.request("GET", "/v2/recordings")).body["data"][0]["id"] == id_of(third)

    got = await h.request("GET", f"/v2/recordings/{id_of(first)}")
    assert got.status == 200, got.body
    view = got.body["data"]
    assert (view["record_type"], view["call_control_id"], view["channels"]) == (
        "recording", a, "single",
    )  # fmt: skip
    assert view["status"] == "completed" and view["duration_millis"] >= 0
    assert set(view["download_urls"]) == {"wav"}
    assert (await h.download(view["download_urls"]["wav"]))[0] == 200

    # Another organization's recording is not found, as an unknown one is, and stays whole.
    mine_file = await h.recording_file(first)
    for method in ("GET", "DELETE"):
        across = await h.request(method, f"/v2/recordings/{id_of(first)}", org=h.other_org)
        assert across.status == 404
        refused(across.body, "10005")
    assert mine_file.is_file()
    unknown = await h.request("GET", "/v2/recordings/00000000-0000-0000-0000-000000000000")
    assert unknown.status == 404
    their_list = await h.request("GET", "/v2/recordings", org=h.other_org)
    assert [r["id"] for r in their_list.body["data"]] == [id_of(theirs)]

    deleted = await h.request("DELETE", f"/v2/recordings/{id_of(first)}")
    assert deleted.status == 200 and deleted.body["data"]["id"] == id_of(first)
    assert not mine_file.exists(), "the file goes with the record"
    assert (await h.request("GET", f"/v2/recordings/{id_of(first)}")).status == 404
    assert (await h.download(first))[0] == 404, "a signed link to a deleted recording"
    left = await h.request("GET", "/v2/recordings")
    assert [r["id"] for r in left.body["data"]] == [id_of(third), id_of(second)]


@pytest.mark.parametrize(
    "query", ["page[number]=0", "page[size]=0", "page[size]=251", "page[number]=x"]
)
async def test_a_bad_page_is_422_naming_the_parameter(h: Harness, query: str) -> None:
    reply = await h.request("GET", f"/v2/recordings?{query}")
    assert reply.status == 422
    (error,) = reply.body["errors"]
    assert error["source"] == {"pointer": "/" + query.split("=")[0]}


async def test_recordings_need_a_token_but_the_signed_link_does_not(h: Harness) -> None:
    url = await record(h, await leg_of(h, h.org), h.org)
    for path in ("/v2/recordings", f"/v2/recordings/{id_of(url)}"):
        resp = await h.client.get(path)
        assert resp.status == 401
    assert (await h.download(url))[0] == 200


async def test_the_webhook_url_downloads_the_same_bytes_as_the_file(
    h: Harness, settings: Settings
) -> None:
    url = await record(h, await leg_of(h, h.org), h.org)
    assert url.startswith(f"{settings.public_url}/v2/recordings/{id_of(url)}/download?")
    status, content_type, body = await h.download(url)
    assert (status, content_type) == (200, "audio/wav")
    path = await h.recording_file(url)
    assert body == path.read_bytes() and body[:4] == b"RIFF"


async def test_a_signed_url_works_until_it_expires_and_never_after(h: Harness) -> None:
    urls = h.client.app[RUNTIME].recordings.urls
    clock = FakeClock(1_900_000_000.0)
    urls.clock = clock
    url = await record(h, await leg_of(h, h.org), h.org)
    assert parse_qs(urlsplit(url).query)["expires"] == [str(1_900_000_000 + 600)], "10 minutes"

    clock.now += 600
    assert (await h.download(url))[0] == 200, "still good at its last second"
    clock.now += 1
    status, _, body = await h.download(url)
    assert status == 403
    assert "expired" in refused(orjson.loads(body), "10010")

    # The API mints a fresh link for the same recording.
    got = await h.request("GET", f"/v2/recordings/{id_of(url)}")
    assert (await h.download(got.body["data"]["download_urls"]["wav"]))[0] == 200


async def test_a_tampered_link_is_refused(h: Harness) -> None:
    leg = await leg_of(h, h.org)
    url, other = await record(h, leg, h.org), await record(h, leg, h.org)
    query = parse_qs(urlsplit(url).query)
    signature, expires = query["signature"][0], int(query["expires"][0])
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    others = parse_qs(urlsplit(other).query)["signature"][0]
    tampered = {
        "another id": url.replace(id_of(url), id_of(other)),
        "another's signature": with_query(url, signature=others),
        "a later expiry": with_query(url, expires=str(expires + 3600)),
        "another format": with_query(url, format="mp3"),
        "a changed signature": with_query(url, signature=flipped),
        "no signature": with_query(url, signature=""),
        "a non-ASCII expiry": with_query(url, expires="²"),
        "a non-ASCII signature": with_query(url, signature="é" + signature[1:]),
    }
    for what, link in tampered.items():
        status, content_type, _ = await h.download(link)
        assert (status, content_type) == (403, "application/json"), what
    assert (await h.download(url))[0] == 200, "the genuine link still works"


async def test_records_survive_a_restart(h: Harness, settings: Settings) -> None:
    leg = await leg_of(h, h.org)
    url = await record(h, leg, h.org)
    reopened = SqlStore(settings.database_url)
    await reopened.start()
    try:
        records, total = await reopened.list_recordings(h.org.org_id, offset=0, limit=10)
        assert total == 1 and [r.id for r in records] == [id_of(url)]
        (kept,) = records
        assert (kept.call_control_id, kept.format, kept.org_id) == (leg, "wav", h.org.org_id)
        assert Path(kept.path).parts[0] == f"org-{h.org.org_id}", "relative to the directory"
        assert await reopened.get_recording(h.other_org.org_id, id_of(url)) is None
    finally:
        await reopened.close()


def test_the_url_lifetime_is_configurable() -> None:
    assert Settings.from_env({}).recording_url_ttl_s == 600
    settings = Settings.from_env({"CALLBRIDGE_RECORDING_URL_TTL_S": "60"})
    assert settings.recording_url_ttl_s == 60
    urls = RecordingUrls(SECRET, "http://cb.example", ttl_s=60, clock=lambda: 1000.0)
    link = urls.download_url("r1", "wav")
    assert parse_qs(urlsplit(link).query)["expires"] == ["1060"]
    for bad in ("0", "-5", "nan", "x", str(8 * 24 * 3600)):
        with pytest.raises(ValidationError) as caught:
            Settings.from_env({"CALLBRIDGE_RECORDING_URL_TTL_S": bad})
        assert caught.value.field == "CALLBRIDGE_RECORDING_URL_TTL_S"


async def test_the_telnyx_sdk_lists_retrieves_and_deletes_recordings(h: Harness) -> None:
    """The official SDK's ``recordings`` resource (telnyx/resources/recordings/recordings.py)
    parses our pages and records, follows ``meta`` to the next page, and raises its 404 error
    for another organization's recording."""
    leg = await leg_of(h, h.org)
    first, second = await record(h, leg, h.org), await record(h, leg, h.org)
    base_url = str(h.client.make_url("/v2"))
    async with (
        telnyx.AsyncTelnyx(api_key=h.org.token, base_url=base_url, max_retries=0) as sdk,
        telnyx.AsyncTelnyx(api_key=h.other_org.token, base_url=base_url, max_retries=0) as other,
    ):
        # One per page: the SDK pages on through meta.page_number / total_pages.
        seen = [r.id async for r in sdk.recordings.list(page_size=1)]
        assert seen == [id_of(second), id_of(first)]
        got = await sdk.recordings.retrieve(id_of(first))
        assert got.data is not None and got.data.call_control_id == leg
        assert got.data.download_urls is not None and got.data.download_urls.wav
        assert (await h.download(got.data.download_urls.wav))[0] == 200
        with pytest.raises(telnyx.NotFoundError):
            await other.recordings.retrieve(id_of(first))
        deleted = await sdk.recordings.delete(id_of(first))
        assert deleted.data is not None and deleted.data.id == id_of(first)
        with pytest.raises(telnyx.NotFoundError):
            await sdk.recordings.retrieve(id_of(first))
