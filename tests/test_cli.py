"""The ``callbridge`` command: org create, and serve --dev as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

from engine.cli import main
from engine.webhooks.signing import org_signing_key, public_key_b64


def test_org_create_prints_json_and_refuses_a_duplicate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    assert main(["org", "create", "--handle", "acme", "--name", "Acme", "--database", db]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"org_id", "domain_handle", "token"}
    assert printed["domain_handle"] == "acme"
    assert isinstance(printed["org_id"], int)
    assert main(["org", "create", "--handle", "acme", "--name", "Again", "--database", db]) == 2
    assert "acme" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow_family  # a real serve process, stopped: once per CI run
async def test_serve_dev_prints_a_working_token_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "CALLBRIDGE_LOG_FORMAT": "json"}
    env.pop("CALLBRIDGE_SECRET_KEY", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine.cli",
        "serve",
        "--port",
        str(port),
        "--dev",
        "--database",
        str(tmp_path / "dev.db"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
    )
    try:
        assert proc.stdout is not None
        lines: dict[str, str] = {}
        while "Webhook public key (Ed25519)" not in lines:
            raw = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
            assert raw, "serve exited before printing the development token"
            key, _, value = raw.decode().strip().partition(":")
            lines[key.strip()] = value.strip()
        handle, token = lines["Org-Handle"], lines["Token"]
        assert handle == "dev"
        headers = {"Authorization": f"Token {token}", "Org-Handle": handle}
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/api/v2/platform/telephony/bridges/"
            async with session.get(url, headers=headers) as resp:
                assert resp.status == 200
            key_url = f"http://127.0.0.1:{port}/v2/public_key"
            bearer = {"Authorization": f"Bearer {token}"}
            async with session.get(key_url, headers=bearer) as resp:
                served = (await resp.json())["data"]["public_key"]
        assert lines["Webhook public key (Ed25519)"] == served
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=15) == 0
        assert (tmp_path / "dev.db.secret").exists(), "a secret key is kept beside the database"
        assert oct((tmp_path / "dev.db.dev-token").stat().st_mode & 0o777) == "0o600"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_public_key_command_prints_the_organizations_signing_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "cli-public-key-secret-" + "q" * 32
    monkeypatch.setenv("CALLBRIDGE_SECRET_KEY", secret)
    db = f"sqlite:///{tmp_path / 'k.db'}"
    for handle in ("acme", "globex"):
        assert main(["org", "create", "--handle", handle, "--name", handle, "--database", db]) == 0
    org_ids = [json.loads(line)["org_id"] for line in capsys.readouterr().out.splitlines()]
    for handle, org_id in zip(("acme", "globex"), org_ids, strict=True):
        assert main(["public-key", "--handle", handle, "--database", db]) == 0
        key = public_key_b64(org_signing_key(secret, org_id, 1))
        assert json.loads(capsys.readouterr().out) == {
            "public_key": key,
            "keys": [
                {
                    "version": 1,
                    "public_key": key,
                    "status": "current",
                    "retired_at": None,
                    "valid_until": None,
                }
            ],
        }
    assert main(["public-key", "--handle", "nobody", "--database", db]) == 2
    assert "nobody" in capsys.readouterr().err
