"""Authentication, Org-Handle checks and isolation between organizations."""

from __future__ import annotations

from tests.platform_client import BRIDGES, CONFIGS, PROVIDERS, Org

ENDPOINTS = [
    ("GET", BRIDGES),
    ("POST", BRIDGES),
    ("GET", PROVIDERS),
    ("GET", CONFIGS),
    ("POST", CONFIGS),
    ("GET", BRIDGES + "x/"),
    ("PATCH", BRIDGES + "x/"),
    ("DELETE", BRIDGES + "x/"),
    ("POST", BRIDGES + "x/connect-provider/"),
    ("POST", BRIDGES + "x/disconnect-provider/"),
    ("GET", CONFIGS + "1/"),
    ("PATCH", CONFIGS + "1/"),
    ("DELETE", CONFIGS + "1/"),
]


async def test_every_endpoint_needs_a_token(org: Org) -> None:
    for method, path in ENDPOINTS:
        resp = await org.client.request(method, path, json={}, headers={"Org-Handle": "acme"})
        assert resp.status == 401, (method, path)
        body = await resp.json()
        assert body["status_code"] == 401
        assert body["message"] == "Authentication credentials were not provided."


async def test_unknown_or_malformed_token_is_401(org: Org) -> None:
    for header in ("Token nope", "Bearer " + org.token, "Token", org.token, "Token  "):
        reply = await org.call("GET", BRIDGES, headers={"Authorization": header})
        assert reply.status == 401, header
        assert reply.body["status_code"] == 401


async def test_handle_of_another_org_is_403(org: Org, other_org: Org) -> None:
    for method, path in ENDPOINTS:
        reply = await org.call(method, path, {}, headers={"Org-Handle": other_org.handle})
        assert reply.status == 403, (method, path)
        assert reply.body["status_code"] == 403


async def test_missing_handle_is_403(org: Org) -> None:
    resp = await org.client.get(BRIDGES, headers={"Authorization": f"Token {org.token}"})
    assert resp.status == 403


async def test_product_id_may_be_omitted(org: Org) -> None:
    resp = await org.client.get(
        BRIDGES, headers={"Authorization": f"Token {org.token}", "Org-Handle": "acme"}
    )
    assert resp.status == 200


async def test_other_orgs_bridge_is_404_and_untouched(org: Org, other_org: Org) -> None:
    theirs = await other_org.create_bridge("Theirs")
    path = f"{BRIDGES}{theirs['slug']}/"
    assert (await org.call("GET", path)).status == 404
    assert (await org.call("PATCH", path, {"name": "pwned"})).status == 404
    assert (await org.call("DELETE", path)).status == 404
    connect = await org.call("POST", path + "connect-provider/", {"provider_config_id": 1})
    assert connect.status == 404
    mine = await org.call("GET", BRIDGES)
    assert mine.body["count"] == 0
    still = await other_org.call("GET", path)
    assert still.status == 200
    assert still.body["data"]["name"] == "Theirs"


async def test_other_orgs_configuration_is_404(org: Org, other_org: Org) -> None:
    theirs = await other_org.create_config("twilio")
    path = f"{CONFIGS}{theirs['id']}/"
    for method in ("GET", "PATCH", "DELETE"):
        reply = await org.call(method, path, {"name": "x"} if method == "PATCH" else None)
        assert reply.status == 404
        assert "AC" not in reply.text
    bridge = await org.create_bridge("Mine")
    connect = await org.call(
        "POST",
        f"{BRIDGES}{bridge['slug']}/connect-provider/",
        {"provider_config_id": theirs["id"], "phone_number": "+14155550100"},
    )
    assert connect.status == 400
    assert connect.body["errors"] == "Provider credential not found or inactive"
    assert (await org.call("GET", CONFIGS)).body["count"] == 0


async def test_unknown_route_and_method_are_enveloped(org: Org) -> None:
    reply = await org.call("GET", "/api/v2/platform/telephony/nothing/")
    assert reply.status == 404
    assert reply.body["status_code"] == 404
    reply = await org.call("PUT", BRIDGES, {})
    assert reply.status == 405
    assert reply.body["status_code"] == 405
