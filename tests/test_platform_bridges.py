"""Bridges API through the aiohttp app: seed 000 shapes, messages, paging, errors."""

from __future__ import annotations

import re

import pytest

from engine.admission.live import Place
from engine.api.keys import LIVE_LEGS
from tests.platform_client import BRIDGES, Org

pytestmark = pytest.mark.both_databases  # the same tests on SQLite and on PostgreSQL


SEED_CREATE = {
    "name": "Support Bridge",
    "description": "Bridge for customer support",
    "region": "US",
}
BRIDGE_KEYS = {
    "id",
    "name",
    "description",
    "status",
    "documents_status",
    "slug",
    "numbers",
    "hub",
    "region",
}
ORG_KEYS = {
    "logo",
    "account_type",
    "seeking",
    "tags",
    "org_id",
    "created",
    "modified",
    "name",
    "token",
    "domain",
    "domain_handle",
    "is_private_domain",
    "privacy_type",
    "color",
    "org_type",
    "status",
}


async def test_seed_create_example_gives_seed_shape(org: Org) -> None:
    reply = await org.call("POST", BRIDGES, SEED_CREATE)
    assert reply.status == 201
    assert reply.body["status_code"] == 201
    assert reply.body["message"] == "Bridge created successfully."
    data = reply.body["data"]
    assert BRIDGE_KEYS | {"organization"} <= set(data)
    assert set(data["organization"]) >= ORG_KEYS
    assert data["organization"]["domain_handle"] == "acme"
    assert data["organization"]["org_id"] == org.org_id
    assert data["name"] == "Support Bridge"
    assert data["description"] == "Bridge for customer support"
    assert data["region"] == "US"
    assert data["status"] == "ACTIVE"
    assert data["numbers"] == []
    assert re.fullmatch(r"support-bridge-[a-z0-9]{8}", data["slug"])


async def test_slugs_are_unique_for_equal_names(org: Org) -> None:
    slugs = {(await org.create_bridge("Same Name"))["slug"] for _ in range(5)}
    assert len(slugs) == 5


async def test_slug_of_a_name_without_letters(org: Org) -> None:
    data = await org.create_bridge("!!!")
    assert re.fullmatch(r"bridge-[a-z0-9]{8}", data["slug"])


async def test_missing_name_is_refused_with_seed_message(org: Org) -> None:
    for body in ({}, {"name": ""}, {"name": "   "}, {"description": "x"}):
        reply = await org.call("POST", BRIDGES, body)
        assert reply.status == 400
        assert reply.body == {
            "status_code": 400,
            "message": "Bridge creation failed.",
            "errors": "Name is required",
        }
    listing = await org.call("GET", BRIDGES)
    assert listing.body["count"] == 0


async def test_wrong_types_are_refused_naming_the_field(org: Org) -> None:
    cases = [
        ({"name": 5}, "name"),
        ({"name": "a", "description": ["x"]}, "description"),
        ({"name": "a", "region": 1}, "region"),
        ({"name": "a", "status": "LIVE"}, "Invalid status value"),
        ({"name": "a", "webhook_url": "ftp://x"}, "webhook_url"),
        ({"name": "a" * 300}, "name"),
    ]
    for body, needle in cases:
        reply = await org.call("POST", BRIDGES, body)
        assert reply.status == 400, body
        assert reply.body["message"] == "Bridge creation failed."
        assert needle in reply.body["errors"]
    assert (await org.call("GET", BRIDGES)).body["count"] == 0


async def test_non_json_and_non_object_bodies(org: Org) -> None:
    for raw in (b"{not json", b"[1, 2]", b'"text"', b""):
        reply = await org.call(
            "POST", BRIDGES, data=raw, headers={"Content-Type": "application/json"}
        )
        assert reply.status == 400
        assert reply.body["message"] == "Bridge creation failed."
        assert "JSON" in reply.body["errors"]


async def test_oversized_body_is_413_in_envelope(org: Org) -> None:
    reply = await org.call("POST", BRIDGES, {"name": "x", "description": "d" * 200_000})
    assert reply.status == 413
    assert reply.body["status_code"] == 413
    assert "too large" in reply.body["errors"]
    assert (await org.call("GET", BRIDGES)).body["count"] == 0


async def test_list_shape_count_paging_and_status_filter(org: Org) -> None:
    created = [await org.create_bridge(f"B{i}") for i in range(5)]
    await org.call("PATCH", f"{BRIDGES}{created[1]['slug']}/", {"status": "DRAFT"})
    await org.call("PATCH", f"{BRIDGES}{created[3]['slug']}/", {"status": "inactive"})

    reply = await org.call("GET", BRIDGES)
    assert reply.status == 200
    assert reply.body["message"] == "Success"
    assert reply.body["count"] == 5
    assert set(reply.body["data"][0]) == {"id", "name", "slug", "status", "description"}

    page = await org.call("GET", BRIDGES + "?page=2&page_size=2")
    assert page.body["count"] == 5
    assert [b["name"] for b in page.body["data"]] == ["B2", "B3"]

    drafts = await org.call("GET", BRIDGES + "?status=DRAFT")
    assert drafts.body["count"] == 1
    assert drafts.body["data"][0]["slug"] == created[1]["slug"]
    inactive = await org.call("GET", BRIDGES + "?status=INACTIVE")
    assert inactive.body["data"][0]["status"] == "INACTIVE"


async def test_bad_list_parameters(org: Org) -> None:
    for query in ("?page=0", "?page=x", "?page_size=1000", "?status=LIVE"):
        reply = await org.call("GET", BRIDGES + query)
        assert reply.status == 400, query
        assert reply.body["message"] == "Invalid request parameters"


async def test_get_by_slug_seed_shape(org: Org) -> None:
    bridge = await org.create_bridge("Sales Bridge", description="Bridge for sales team calls")
    reply = await org.call("GET", f"{BRIDGES}{bridge['slug']}/")
    assert reply.status == 200
    assert reply.body["message"] == "Bridge fetched successfully."
    assert set(reply.body["data"]) >= BRIDGE_KEYS
    assert reply.body["data"]["description"] == "Bridge for sales team calls"


async def test_unknown_slug_is_seed_404(org: Org) -> None:
    for method in ("GET", "PATCH", "DELETE"):
        reply = await org.call(
            method, f"{BRIDGES}nope-12345678/", {} if method == "PATCH" else None
        )
        assert reply.status == 404
        assert reply.body == {
            "status_code": 404,
            "message": "Bridge not found.",
            "errors": "No bridge exists with the provided slug",
        }


async def test_seed_update_example(org: Org) -> None:
    bridge = await org.create_bridge("Sales Bridge", status="DRAFT")
    reply = await org.call(
        "PATCH", f"{BRIDGES}{bridge['slug']}/", {"name": "Sales Bridge Updated", "status": "ACTIVE"}
    )
    assert reply.status == 200
    assert reply.body["message"] == "Bridge updated successfully."
    assert reply.body["data"]["name"] == "Sales Bridge Updated"
    assert reply.body["data"]["status"] == "ACTIVE"
    assert reply.body["data"]["slug"] == bridge["slug"]
    assert set(reply.body["data"]) >= BRIDGE_KEYS


async def test_update_refuses_bad_status_and_changes_nothing(org: Org) -> None:
    bridge = await org.create_bridge("Keep", status="DRAFT")
    for body in (
        {"status": "LIVE"},
        {"status": 3},
        {"status": None},
        {"name": "new", "status": "nope"},
    ):
        reply = await org.call("PATCH", f"{BRIDGES}{bridge['slug']}/", body)
        assert reply.status == 400
        assert reply.body == {
            "status_code": 400,
            "message": "Bridge update failed.",
            "errors": "Invalid status value",
        }
    after = await org.call("GET", f"{BRIDGES}{bridge['slug']}/")
    assert after.body["data"]["name"] == "Keep"
    assert after.body["data"]["status"] == "DRAFT"


async def test_update_webhook_url_set_and_clear(org: Org) -> None:
    bridge = await org.create_bridge("Hooks")
    path = f"{BRIDGES}{bridge['slug']}/"
    reply = await org.call("PATCH", path, {"webhook_url": "https://app.example/hooks"})
    assert reply.body["data"]["webhook_url"] == "https://app.example/hooks"
    bad = await org.call("PATCH", path, {"webhook_url": "not a url"})
    assert bad.status == 400 and "webhook_url" in bad.body["errors"]
    cleared = await org.call("PATCH", path, {"webhook_url": None})
    assert cleared.body["data"]["webhook_url"] is None


async def test_update_with_empty_name_is_refused(org: Org) -> None:
    bridge = await org.create_bridge("Named")
    reply = await org.call("PATCH", f"{BRIDGES}{bridge['slug']}/", {"name": ""})
    assert reply.status == 400
    assert reply.body["message"] == "Bridge update failed."


async def test_delete_seed_shape_and_gone_after(org: Org) -> None:
    bridge = await org.create_bridge("Doomed")
    reply = await org.call("DELETE", f"{BRIDGES}{bridge['slug']}/")
    assert reply.status == 200
    assert reply.body == {"status_code": 200, "message": "Bridge deleted successfully.", "data": {}}
    assert (await org.call("GET", f"{BRIDGES}{bridge['slug']}/")).status == 404


async def test_bridge_with_live_calls_cannot_be_deleted(org: Org) -> None:
    bridge = await org.create_bridge("Busy")
    live = org.client.app[LIVE_LEGS]
    live.hold("leg-1", org_id=org.org_id, place=Place(bridge["id"], "+14155550100"))
    reply = await org.call("DELETE", f"{BRIDGES}{bridge['slug']}/")
    assert reply.status == 409
    assert reply.body["message"] == "Bridge deletion failed."
    assert "live" in reply.body["errors"]
    live.release("leg-1")
    assert (await org.call("DELETE", f"{BRIDGES}{bridge['slug']}/")).status == 200


async def test_a_patch_with_a_blank_body_is_refused_and_an_empty_one_changes_nothing(
    org: Org,
) -> None:
    bridge = await org.create_bridge("Blank")
    url = f"{BRIDGES}{bridge['slug']}/"
    json_type = {"Content-Type": "application/json"}
    blank = await org.call("PATCH", url, data=" ", headers=json_type)  # found by schemathesis
    assert blank.status == 400, blank.text
    empty = await org.call("PATCH", url, data=b"", headers=json_type)
    assert empty.status == 200, empty.text
    assert empty.body["data"]["name"] == "Blank"
