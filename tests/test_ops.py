"""Health, Prometheus metrics and the OpenAPI document (validated, and covering every route)."""

from __future__ import annotations

from aiohttp import web
from openapi_spec_validator import validate

from engine.api.openapi import build_openapi
from tests.platform_client import BRIDGES, Org

HTTP_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


def app_routes(app: web.Application) -> set[tuple[str, str]]:
    routes = set()
    for route in app.router.routes():
        if route.method not in HTTP_METHODS or route.resource is None:
            continue
        routes.add((route.method.lower(), route.resource.canonical))
    return routes


def document_routes(doc: dict) -> set[tuple[str, str]]:  # type: ignore[type-arg]
    return {(method, path) for path, item in doc["paths"].items() for method in item}


async def test_healthz(client) -> None:  # type: ignore[no-untyped-def]
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert (await resp.json())["status"] == "ok"
    assert resp.headers["X-Request-ID"]


async def test_metrics_count_requests(org: Org) -> None:
    await org.call("GET", BRIDGES)
    await org.call("GET", BRIDGES)
    resp = await org.client.get("/metrics")
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    text = await resp.text()
    line = next(
        ln
        for ln in text.splitlines()
        if ln.startswith("callbridge_http_requests_total{")
        and 'route="/api/v2/platform/telephony/bridges/"' in ln
        and 'status="200"' in ln
    )
    assert float(line.rsplit(" ", 1)[1]) == 2.0


async def test_openapi_document_is_valid_and_complete(client) -> None:  # type: ignore[no-untyped-def]
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"].startswith("3.1")
    validate(doc)
    missing = app_routes(client.app) - document_routes(doc)
    assert not missing, f"routes without OpenAPI description: {sorted(missing)}"
    extra = document_routes(doc) - app_routes(client.app)
    assert not extra, f"described routes the app lacks: {sorted(extra)}"


def test_completeness_check_fails_for_an_undocumented_route() -> None:
    app = web.Application()

    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_get("/undocumented", handler)
    assert ("get", "/undocumented") in app_routes(app) - document_routes(build_openapi())


async def test_request_id_is_echoed_when_sane(client) -> None:  # type: ignore[no-untyped-def]
    resp = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert resp.headers["X-Request-ID"] == "abc-123"
    resp = await client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert resp.headers["X-Request-ID"] != "bad id with spaces"
