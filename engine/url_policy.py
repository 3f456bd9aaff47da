"""The one policy for every address callbridge connects to on a tenant's behalf.

A tenant gives callbridge URLs it will later connect to: a bridge's ``webhook_url``, a
command's ``audio_url``, a ``ws(s)://`` dial target, a provider configuration's
``api_base_url``. Unless private addresses are allowed (``CALLBRIDGE_ALLOW_PRIVATE_URLS``, on
under ``serve --dev``), none of them may reach loopback, private (RFC 1918, ULA), link-local,
unspecified, multicast or cloud-metadata addresses, or anything else that is not globally
routable: otherwise a tenant could make the engine call the host's own internal services.

Two checks, one rule (``refusal``):

- ``check_url`` at the API, on what the tenant wrote: the scheme, an IP literal in the host, and
  names that always mean this host (``localhost``). It does not resolve names: an answer now
  says nothing about the answer at connect time.
- at connect time, on the address actually connected to, so a name that resolves (or is
  rebound) to a private address is refused too: ``GuardedConnector`` for aiohttp sessions
  (webhooks, provider REST calls) filters the resolved addresses the connector will use, and
  ``open_guarded_socket`` resolves, checks and connects the very address it checked, for the
  ``websockets`` client of websocket agent legs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Final
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.tracing import Trace

from engine.errors import ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud instance-metadata services (AWS, GCP, Azure on 169.254.169.254; AWS on IPv6 too): named
# apart from the other link-local and ULA addresses because they hand out credentials.
METADATA_ADDRESSES: Final = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
# Names that mean this host (or the metadata service) whatever DNS says.
LOCAL_NAMES: Final = ("localhost", "localhost.localdomain", "metadata.google.internal")
MAX_URL_LENGTH: Final = 2048


class ForbiddenAddress(OSError):
    """A connection to an address the URL policy refuses. An ``OSError`` so that aiohttp and
    asyncio report it as a failed connection, which every caller already handles."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"{host} is {reason}: callbridge does not connect there")
        self.host = host
        self.reason = reason


def refusal(address: IPAddress) -> str | None:
    """Why the policy refuses ``address`` (for the error message), or None if it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return refusal(embedded)
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    checks = (
        (address.is_unspecified, "an unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address.is_private, "a private address"),
        (not address.is_global, "not a public address"),
    )
    return next((reason for refused, reason in checks if refused), None)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries to (mapped, 6to4, NAT64): ::ffff:127.0.0.1 reaches
    127.0.0.1, so it is judged as that."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def literal_address(host: str) -> IPAddress | None:
    """The address a host names by itself: an IP literal, or a legacy IPv4 form (``127.1``,
    ``2130706433``, ``0x7f.0.0.1``) that the socket layer would read as one."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def check_url(value: object, field: str, *, schemes: Sequence[str], allow_private: bool) -> str:
    """``value`` as a URL callbridge may later connect to, or a ``ValidationError`` naming
    ``field``."""
    wanted = " or ".join(schemes)
    if not isinstance(value, str) or not value or len(value) > MAX_URL_LENGTH:
        raise ValidationError(f"{field} must be a {wanted} URL", field=field)
    try:
        parts = urlsplit(value)
        host = parts.hostname
        _ = parts.port  # a port that is not a number or out of range raises here
    except ValueError:
        raise ValidationError(f"{field} must be a {wanted} URL", field=field) from None
    if parts.scheme not in schemes or not host:
        raise ValidationError(f"{field} must be a {wanted} URL", field=field)
    if allow_private:
        return value
    reason = host_refusal(host)
    if reason is not None:
        raise ValidationError(
            f"{field} must point to a public address: {host} is {reason}", field=field
        )
    return value


def host_refusal(host: str) -> str | None:
    """Why a host as written is refused before any lookup, or None if only DNS can tell."""
    name = host.lower().rstrip(".")
    if name in LOCAL_NAMES or name.endswith(".localhost"):
        return "a loopback address"
    address = literal_address(name)
    return refusal(address) if address is not None else None


class GuardedConnector(aiohttp.TCPConnector):
    """A TCP connector that never connects to an address the policy refuses.

    aiohttp connects only to the addresses ``_resolve_host`` returns (IP literals included, and
    cached answers), so filtering them there checks the address actually connected to: a DNS
    answer that changes between a check and the connect cannot slip past.
    """

    async def _resolve_host(
        self, host: str, port: int, traces: Sequence[Trace] | None = None
    ) -> list[ResolveResult]:
        named = host_refusal(host)
        if named is not None:
            raise ForbiddenAddress(host, named)
        resolved = await super()._resolve_host(host, port, traces=traces)
        allowed = [r for r in resolved if refusal(ipaddress.ip_address(r["host"])) is None]
        if not allowed:
            raise ForbiddenAddress(host, _first_reason(r["host"] for r in resolved))
        return allowed


def _first_reason(addresses: Iterable[str]) -> str:
    for raw in addresses:
        reason = refusal(ipaddress.ip_address(raw))
        if reason is not None:
            return reason
    return "not a public address"


def http_connector(*, allow_private: bool) -> aiohttp.TCPConnector:
    """The connector of every aiohttp session that reaches tenant-given URLs.

    No limit on connections in total (aiohttp's default is 100): each user bounds its own work
    per tenant (webhooks per destination, audio fetches per organization), and a shared pool
    would let one tenant's hung connections hold every other tenant's requests back."""
    return aiohttp.TCPConnector(limit=0) if allow_private else GuardedConnector(limit=0)


async def open_guarded_socket(
    host: str, port: int, resolver: AbstractResolver | None = None
) -> socket.socket:
    """A connected TCP socket to ``host``, only through addresses the policy allows.

    The name is resolved once (by ``resolver``, the system's by default) and the socket is
    connected to an address from that answer after checking it, so what was checked is what
    is connected to.
    """
    named = host_refusal(host)
    if named is not None:
        raise ForbiddenAddress(host, named)
    lookup = resolver if resolver is not None else aiohttp.ThreadedResolver()
    try:
        resolved = await lookup.resolve(host, port, family=socket.AF_UNSPEC)
    finally:
        if resolver is None:
            await lookup.close()
    allowed = [r for r in resolved if refusal(ipaddress.ip_address(r["host"])) is None]
    if not allowed:
        raise ForbiddenAddress(host, _first_reason(r["host"] for r in resolved))
    return await _connect_first(allowed)


async def _connect_first(candidates: Sequence[ResolveResult]) -> socket.socket:
    loop = asyncio.get_running_loop()
    last_error: OSError = OSError("no address to connect to")
    for result in candidates:
        sock = socket.socket(result["family"], socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (result["host"], result["port"]))
        except OSError as exc:
            sock.close()
            last_error = exc
            continue
        except BaseException:
            sock.close()  # cancelled (the dial timed out): do not leak the socket
            raise
        return sock
    raise last_error


def optional_http_url(body: Mapping[str, object], field: str, *, allow_private: bool) -> str | None:
    """An optional http(s) URL field of a request body (absent, null and "" mean none)."""
    value = body.get(field)
    if value is None or value == "":
        return None
    return check_url(value, field, schemes=("http", "https"), allow_private=allow_private)
