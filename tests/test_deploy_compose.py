"""The three-node deployment of docs/DEPLOY.md (deploy/compose/) is consistent with callbridge.

No container runs here (the machine has no Docker daemon); what can be checked is checked with
callbridge's own code: every node's environment is read by ``Settings.from_env`` (so each value
is one callbridge accepts), the nodes share what must be shared (public URL, database, Redis,
secret key) and differ where they must (node name, node URL, media URL), and nginx routes each
node's media URL to that node's media port and everything else to the pool of nodes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from engine.config import Settings

COMPOSE = Path(__file__).parent.parent / "deploy" / "compose"
# What the .env beside compose.yaml supplies.
SECRETS = {"POSTGRES_PASSWORD": "pg-secret", "CALLBRIDGE_SECRET_KEY": "k" * 40}


def _interpolated(value: str) -> str:
    def secret(match: re.Match[str]) -> str:
        return SECRETS[match.group(1)]

    return re.sub(r"\$\{([A-Z_]+)\}", secret, value)


@pytest.fixture(scope="module")
def nodes() -> dict[str, Settings]:
    compose: dict[str, Any] = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    found = {}
    for name, service in compose["services"].items():
        env = service.get("environment", {})
        if not any(key.startswith("CALLBRIDGE_") for key in env):
            continue
        assert service["build"] == "../..", f"{name} runs callbridge's image"
        found[name] = Settings.from_env({k: _interpolated(str(v)) for k, v in env.items()})
    return found


def test_three_nodes_share_the_store_redis_and_public_url_and_differ_in_name_and_urls(
    nodes: dict[str, Settings],
) -> None:
    assert sorted(nodes) == ["node1", "node2", "node3"]
    shared = {
        (s.public_url, s.database_url, s.redis_url, s.secret_key, s.redis_prefix)
        for s in nodes.values()
    }
    assert len(shared) == 1, shared
    (public_url, database_url, redis_url, _key, _prefix) = shared.pop()
    assert database_url.startswith("postgresql+asyncpg://") and redis_url is not None
    for field in ("node_id", "node_url", "public_media_url"):
        values = [getattr(s, field) for s in nodes.values()]
        assert len(set(values)) == len(values), f"each node needs its own {field}: {values}"
    for name, settings in nodes.items():
        assert settings.node_url == f"http://{name}:{settings.port}"
        assert settings.media_port is not None and settings.public_media_url is not None
        assert settings.public_media_url == f"{public_url.replace('https', 'wss')}/{name}"


def test_nginx_sends_each_nodes_media_to_it_and_the_rest_to_any_node(
    nodes: dict[str, Settings],
) -> None:
    conf = (COMPOSE / "nginx.conf").read_text()
    (upstream,) = re.findall(r"upstream callbridge \{([^}]*)\}", conf)
    servers = set(re.findall(r"server ([\w.-]+:\d+);", upstream))
    assert servers == {f"{name}:{s.port}" for name, s in nodes.items()}
    assert re.search(r"location / \{[^}]*proxy_pass http://callbridge;", conf)
    for name, settings in nodes.items():
        assert settings.public_media_url is not None
        prefix = urlsplit(settings.public_media_url).path
        block = re.search(rf"location {prefix}/ \{{([^}}]*)\}}", conf)
        assert block is not None, f"no location for {prefix}/"
        # The trailing slash drops the prefix: the node serves /media/twilio, /media/telnyx.
        assert f"proxy_pass http://{name}:{settings.media_port}/;" in block.group(1)
        assert "Upgrade $http_upgrade" in block.group(1)
    server_name = re.search(r"server_name ([\w.-]+);", conf)
    public_url = next(iter(nodes.values())).public_url
    assert server_name is not None and urlsplit(public_url).hostname == server_name.group(1)
    # The nodes' own requests never come through the public front.
    internal = re.search(r"location /internal/ \{([^}]*)\}", conf)
    assert internal is not None and "return 404;" in internal.group(1)
    assert "proxy_pass" not in internal.group(1)
    # The console's sessions are a node's own: each browser kept on one node, by address.
    (console_upstream,) = re.findall(r"upstream callbridge_console \{([^}]*)\}", conf)
    assert "ip_hash;" in console_upstream
    assert set(re.findall(r"server ([\w.-]+:\d+);", console_upstream)) == servers
    assert re.search(r"location /console \{[^}]*proxy_pass http://callbridge_console;", conf)
