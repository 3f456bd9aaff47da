"""The operations endpoints' part of the OpenAPI document: health, readiness, metrics and the
document itself (served by engine/api/ops.py)."""

from __future__ import annotations

from engine.api.openapi import Schema, obj, response, string


def ops_paths() -> dict[str, Schema]:
    return {
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "responses": {"200": response("Healthy", obj(["status"], status=string()))},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: whether this process takes new calls",
                "responses": {
                    "200": response("Taking new calls", obj(["status"], status=string())),
                    "503": response(
                        "Stopping (SIGTERM): no new calls; live calls are handed over or drained",
                        obj(["status", "reason"], status=string(), reason=string()),
                    ),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": string()}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": response("OpenAPI 3.1 document", obj())},
            }
        },
    }
