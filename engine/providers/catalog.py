"""The catalog of telephony providers callbridge speaks to (fixed: code implements each)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.errors import ValidationError


@dataclass(frozen=True, slots=True)
class Provider:
    id: int
    slug: str
    name: str
    type: str = "TELEPHONY"
    # Telnyx signs webhooks with Ed25519: its configuration carries the account's public key.
    takes_public_key: bool = False


CATALOG: tuple[Provider, ...] = (
    Provider(id=1, slug="twilio", name="Twilio"),
    Provider(id=2, slug="telnyx", name="Telnyx", takes_public_key=True),
)


def provider_by_slug(slug: str) -> Provider:
    for provider in CATALOG:
        if provider.slug == slug:
            return provider
    raise ValidationError(f"Unknown provider {slug!r}", field="provider")


def find_provider(value: Any) -> Provider:
    """A provider named by slug (``"twilio"``), by name, or by catalog id (``1`` or ``"1"``)."""
    if isinstance(value, bool) or value is None:
        raise ValidationError(
            "provider is required (a slug such as 'twilio' or an id)", field="provider"
        )
    if isinstance(value, int) or (
        isinstance(value, str) and value.strip().isascii() and value.strip().isdigit()
    ):
        wanted = int(value)
        for provider in CATALOG:
            if provider.id == wanted:
                return provider
        raise ValidationError(f"Unknown provider id {wanted}", field="provider")
    if isinstance(value, str):
        key = value.strip().lower()
        for provider in CATALOG:
            if key in (provider.slug, provider.name.lower()):
                return provider
        raise ValidationError(
            f"Unknown provider {value!r}; supported: " + ", ".join(p.slug for p in CATALOG),
            field="provider",
        )
    raise ValidationError("provider must be a slug or an id", field="provider")
