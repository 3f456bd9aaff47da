"""The stream URLs callbridge gives providers follow its public URL's scheme (issue 10).

Providers connect media over TLS to a deployment behind https: Twilio's ``<Stream url>`` must be
``wss://`` (PROTOCOLS.md 4.4) and Telnyx's ``stream_url`` a ws(s) URL. The URLs come from
``CALLBRIDGE_PUBLIC_URL``, never from the request's Host or scheme (a proxy terminates TLS).
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit
from xml.etree import ElementTree as ET

import pytest

from adapters.context import AdapterContext
from adapters.telnyx import webhooks as telnyx_wire
from adapters.telnyx.gateway import TelnyxGateway, TelnyxLegs
from adapters.twilio.gateway import stream_twiml
from adapters.wiring import adapter_context
from engine.admission.live import LiveLegIndex
from engine.config import Settings
from engine.crypto import SecretBox
from engine.errors import ValidationError
from engine.store.base import ProviderConfigRecord
from engine.store.sql import SqlStore

SECRET = "stream-url-test-secret-" + "k" * 32


def context_for(public_url: str, **media: object) -> AdapterContext:
    settings = Settings(public_url=public_url, secret_key=SECRET, **media)  # type: ignore[arg-type]
    context, _ = adapter_context(
        settings=settings,
        store=SqlStore("sqlite:///:memory:"),
        secret_box=SecretBox(SECRET),
        live=LiveLegIndex(),
        secret_key=SECRET,
        clock=lambda: 1_800_000_000.0,
    )
    return context


def telnyx_config(box: SecretBox) -> ProviderConfigRecord:
    now = datetime.now(UTC)
    return ProviderConfigRecord(
        id=1, org_id=1, provider="telnyx", name="t", account_sid="123",
        auth_token_ciphertext=box.encrypt("KEY"), public_key=None, api_base_url=None,
        active=True, created_at=now, modified=now,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("public_url", "scheme", "prefix"),
    [
        ("https://cb.example.com", "wss", ""),
        ("https://cb.example.com/", "wss", ""),
        ("https://edge.example.com/callbridge", "wss", "/callbridge"),
        ("http://127.0.0.1:8080", "ws", ""),
    ],
)
def test_twiml_and_telnyx_commands_carry_the_public_scheme(
    public_url: str, scheme: str, prefix: str
) -> None:
    context = context_for(public_url)
    stream = ET.fromstring(stream_twiml(context, "v3:leg")).find("./Connect/Stream")
    assert stream is not None
    twilio_url = urlsplit(stream.attrib["url"])
    assert (twilio_url.scheme, twilio_url.path) == (scheme, f"{prefix}/media/twilio")
    assert not twilio_url.query  # Twilio's <Stream url> takes no query string (error 31920)

    gateway = TelnyxGateway(context, telnyx_config(context.secret_box), TelnyxLegs())
    body = telnyx_wire.answer("telnyx-call", stream_url=gateway.stream_url("v3:leg")).body
    assert body is not None
    telnyx_url = urlsplit(body["stream_url"])
    assert (telnyx_url.scheme, telnyx_url.path) == (scheme, f"{prefix}/media/telnyx")
    assert telnyx_url.netloc == urlsplit(public_url).netloc


@pytest.mark.parametrize(
    ("media", "base"),
    [
        ({"public_media_url": "wss://media.example.com"}, "wss://media.example.com"),
        ({"public_media_url": "https://edge.example.com/m"}, "wss://edge.example.com/m"),
        ({"media_port": 8081}, "ws://127.0.0.1:8081"),
        ({"media_port": 8081, "public_media_url": "wss://m.example.com"}, "wss://m.example.com"),
    ],
)
def test_media_urls_come_from_the_public_media_url_or_the_media_port(
    media: dict[str, object], base: str
) -> None:
    context = context_for("https://cb.example.com", **media)
    stream = ET.fromstring(stream_twiml(context, "v3:leg")).find("./Connect/Stream")
    assert stream is not None
    assert stream.attrib["url"] == base + "/media/twilio"
    gateway = TelnyxGateway(context, telnyx_config(context.secret_box), TelnyxLegs())
    assert gateway.stream_url("v3:leg").startswith(base + "/media/telnyx?token=")
    # Twilio signs a stream's upgrade over its URL: both forms callbridge accepts are this one.
    assert context.public_media_url("/media/twilio", http=True) == (
        base.replace("ws", "http", 1) + "/media/twilio"
    )


def test_the_media_settings_are_read_from_the_environment() -> None:
    env = {"CALLBRIDGE_MEDIA_PORT": "8081", "CALLBRIDGE_PUBLIC_MEDIA_URL": "wss://m.example.com/"}
    settings = Settings.from_env(env)
    assert (settings.media_port, settings.public_media_url) == (8081, "wss://m.example.com")
    assert (Settings.from_env({}).media_port, Settings.from_env({}).public_media_url) == (
        None,
        None,
    )
    with pytest.raises(ValidationError, match="CALLBRIDGE_PUBLIC_MEDIA_URL"):
        Settings.from_env({"CALLBRIDGE_PUBLIC_MEDIA_URL": "media.example.com"})
    with pytest.raises(ValidationError, match="out of range"):
        Settings.from_env({"CALLBRIDGE_MEDIA_PORT": "70000"})
