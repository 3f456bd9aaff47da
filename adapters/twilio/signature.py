"""``X-Twilio-Signature`` checking, with the same acceptance rules as twilio-python's
``RequestValidator`` (PROTOCOLS.md 4.3).

The signed string is the full URL Twilio requested followed, for a form POST, by every parameter
as ``name + value``: names sorted, and each name's distinct values sorted. It is HMAC-SHA1'd with
the account's auth token and base64-encoded.

Acceptance follows the SDK because Twilio's own URL handling is inconsistent:

- the URL is tried with its port removed and with the scheme's default port added (``:443`` for
  https, ``:80`` for every other scheme, ``wss`` included); either match is accepted;
- if the query holds ``bodySHA256`` (JSON-bodied webhooks), no parameters are signed and the hex
  SHA-256 of the raw body must equal that value;
- a GET webhook carries its parameters in the query, i.e. in the URL itself: pass no params;
- the Media Streams websocket upgrade is signed over the ``wss://`` URL with no params. Some
  deployments see it signed as ``https://``; for a ``wss://`` URL we also accept that form, which
  still requires the auth token, so it widens nothing an attacker can use.

Build the URL from callbridge's configured public URL, never from the request's Host header or
scheme: behind a proxy those differ from what Twilio signed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import SplitResult, parse_qs, urlsplit

__all__ = ["SIGNATURE_HEADER", "Params", "compute_signature", "validate_signature"]

SIGNATURE_HEADER = "X-Twilio-Signature"

Params = Mapping[str, str | Sequence[str]]


def _values(params: Params, name: str) -> Iterable[str]:
    # A multidict (aiohttp's ``await request.post()``) keeps repeated fields behind getall();
    # plain mappings hold either one string or a sequence of them.
    getall = getattr(params, "getall", None)
    if getall is not None:
        return [str(value) for value in getall(name)]
    value = params[name]
    return [value] if isinstance(value, str) else value


def compute_signature(auth_token: str, url: str, params: Params | None) -> str:
    """The base64 HMAC-SHA1 signature Twilio sends for ``url`` and form ``params``."""
    parts = [url]
    if params:
        for name in sorted(set(params)):
            for value in sorted(set(_values(params, name))):
                parts.append(name + value)
    digest = hmac.new(auth_token.encode("utf-8"), "".join(parts).encode("utf-8"), hashlib.sha1)
    return base64.b64encode(digest.digest()).decode("ascii")


def _with_default_port(url: SplitResult) -> str:
    if url.port is not None:
        return url.geturl()
    port = 443 if url.scheme == "https" else 80
    return url._replace(netloc=f"{url.netloc}:{port}").geturl()


def _without_port(url: SplitResult) -> str:
    if url.port is None:
        return url.geturl()
    # Strip ":port" from the host part only, keeping any userinfo and IPv6 brackets intact.
    userinfo, at, hostport = url.netloc.rpartition("@")
    host = hostport[: hostport.rfind(":")]
    return url._replace(netloc=f"{userinfo}{at}{host}").geturl()


def _candidate_urls(url: str) -> list[str]:
    """Every URL form whose signature is accepted for ``url``."""
    split = urlsplit(url)
    forms = [split]
    if split.scheme == "wss":
        forms.append(split._replace(scheme="https"))
    candidates: list[str] = []
    for form in forms:
        for candidate in (_without_port(form), _with_default_port(form)):
            if candidate not in candidates:
                candidates.append(candidate)
    return candidates


def validate_signature(
    auth_token: str,
    url: str,
    params: Params | None,
    signature: str | None,
    body: bytes | None = None,
) -> bool:
    """True if ``signature`` (the ``X-Twilio-Signature`` header, None if absent) is Twilio's
    signature of this request.

    ``params`` are the form fields of a POST (None or empty for GET, JSON and websocket requests);
    ``body`` is the raw body, needed only when the URL's query carries ``bodySHA256``.
    """
    if not signature or not auth_token:
        return False
    body_hash = parse_qs(urlsplit(url).query).get("bodySHA256")
    if body_hash is not None:
        if body is None:
            return False
        actual = hashlib.sha256(body).hexdigest()
        if not hmac.compare_digest(actual.encode("ascii"), body_hash[0].encode("utf-8")):
            return False
        # A JSON webhook signs the URL alone; its body is covered by the hash in the URL.
        params = None
    expected = signature.encode("utf-8")
    matched = False
    # Check every form without stopping at the first match, so timing says nothing about which.
    for candidate in _candidate_urls(url):
        computed = compute_signature(auth_token, candidate, params).encode("ascii")
        matched |= hmac.compare_digest(computed, expected)
    return matched
