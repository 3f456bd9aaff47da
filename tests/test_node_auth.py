"""Requests between nodes are signed with the deployment's secret key (engine/cluster/
node_auth.py): a signature from another key, for another request, or too old is refused."""

from __future__ import annotations

import pytest

from engine.cluster.node_auth import HEADER, MAX_SKEW_S, NodeAuth
from engine.errors import AuthenticationError

KEY = "a-deployment-secret-key-" + "k" * 32
PATH = "/internal/v1/legs/v3:abc/adopt"


def test_a_nodes_signature_is_accepted_by_another_node_with_the_same_key() -> None:
    now = [1_000_000.0]
    sender, receiver = NodeAuth(KEY, lambda: now[0]), NodeAuth(KEY, lambda: now[0])
    header = sender.sign("POST", PATH, b'{"org_id":1}')[HEADER]
    receiver.verify("POST", PATH, b'{"org_id":1}', header)
    now[0] += MAX_SKEW_S
    receiver.verify("POST", PATH, b'{"org_id":1}', header)


@pytest.mark.parametrize(
    ("key", "method", "path", "body", "late_s"),
    [
        ("another-deployment-key-" + "x" * 32, "POST", PATH, b'{"org_id":1}', 0),
        (KEY, "POST", PATH.replace("abc", "abd"), b'{"org_id":1}', 0),
        (KEY, "POST", PATH, b'{"org_id":2}', 0),
        (KEY, "PUT", PATH, b'{"org_id":1}', 0),
        (KEY, "POST", PATH, b'{"org_id":1}', MAX_SKEW_S + 1),
    ],
)
def test_a_signature_for_anything_else_is_refused(
    key: str, method: str, path: str, body: bytes, late_s: int
) -> None:
    now = [1_000_000.0]
    header = NodeAuth(key, lambda: now[0]).sign("POST", PATH, b'{"org_id":1}')[HEADER]
    now[0] += late_s
    with pytest.raises(AuthenticationError):
        NodeAuth(KEY, lambda: now[0]).verify(method, path, body, header)


@pytest.mark.parametrize("header", [None, "", "t=abc,v1=00", "v1=00", "t=1000000"])
def test_a_missing_or_malformed_signature_is_refused(header: str | None) -> None:
    with pytest.raises(AuthenticationError):
        NodeAuth(KEY, lambda: 1_000_000.0).verify("POST", PATH, b"", header)
