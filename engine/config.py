"""Settings of one callbridge process, from the command line and ``CALLBRIDGE_*`` variables.

Precedence: an explicit command-line value, then the environment, then the default. The
secret key has its own rule (see ``resolve_secret_key``): when none is given, ``serve`` keeps
one in a file beside the SQLite database so that encrypted secrets survive a restart.
"""

from __future__ import annotations

import os
import secrets
import socket
import stat
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from engine.errors import ValidationError

LogFormat = Literal["json", "console"]

DEFAULT_DATABASE_URL = "sqlite:///callbridge.db"
MIN_SECRET_KEY_LENGTH = 32
MAX_SIGNING_KEY_GRACE_S = 30 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str = DEFAULT_DATABASE_URL
    public_url: str = "http://127.0.0.1:8080"
    # The media port (CALLBRIDGE_MEDIA_PORT): provider media websockets served there by a
    # faster server than the API's (adapters/picows_media.py); None: on the API port. Providers
    # reach media at CALLBRIDGE_PUBLIC_MEDIA_URL (ws:// or wss://, a reverse proxy routing the
    # media paths to this port), by default ws://<host>:<media port> or the API's public URL.
    media_port: int | None = None
    public_media_url: str | None = None
    secret_key: str | None = None
    log_format: LogFormat = "console"
    log_level: str = "info"
    max_body_bytes: int = 256 * 1024
    recordings_dir: str | None = None  # default: "recordings" beside the SQLite file
    # The one directory file:// playback may read (CALLBRIDGE_MEDIA_DIR); None: no file://.
    media_dir: str | None = None
    # How long an answered leg may be without a media stream (never started, failed or dropped)
    # before callbridge asks the provider for a new stream, and again before it hangs up.
    media_wait_s: float = 5.0
    # A media tick later than this is late; over a fifth of a second's ticks late and new calls
    # are refused until it keeps time (engine/admission/gate.py TickLoad).
    overload_late_s: float = 0.020
    # How long an organization's webhook-signing key stays published after a rotation replaced
    # it, so that its receivers can switch to the new key (engine/webhooks/signing.py).
    signing_key_grace_s: float = 24 * 3600.0
    # Webhook delivery (engine/webhooks/outbox.py): attempts before a webhook is dead-lettered, and
    # how long delivered and dead-lettered webhooks stay (GET /v2/webhook_deliveries) before
    # purging.
    webhook_max_attempts: int = 12
    webhook_retention_s: float = 7 * 24 * 3600.0
    # Whether tenant-given URLs (webhooks, audio, websocket agents, provider API bases) may reach
    # loopback, private, link-local or metadata addresses (engine/url_policy.py). Off unless
    # CALLBRIDGE_ALLOW_PRIVATE_URLS says so or ``serve --dev`` runs everything on one machine.
    allow_private_urls: bool = False
    # Each organization's defaults (engine/admission/limits.py; `callbridge org limits` overrides
    # them per organization): concurrent live legs, and a token bucket of API requests per second.
    # Generous enough for the load test's ramp on one organization.
    org_max_legs: int = 1000
    org_api_rate: float = 100.0
    org_api_burst: int = 200
    # How long a signed recording download URL works (engine/recordings.py): Telnyx's
    # recording_urls last 10 minutes.
    recording_url_ttl_s: float = 600.0
    # Provider faults (engine/providers/calls.py, engine/providers/reconcile.py,
    # engine/machine/leg_setup.py): how long a provider call is retried in all, how long one REST
    # request may take (the Telnyx and Twilio gateways cut it then, a transient fault), the longest
    # wait between the retries of a hangup past that time, how often the providers are asked
    # about stuck legs and after how long without news about any leg, and how long an incoming
    # leg may stay unanswered.
    provider_retry_budget_s: float = 30.0
    provider_attempt_timeout_s: float = 10.0
    hangup_retry_cap_s: float = 60.0
    reconcile_interval_s: float = 60.0
    reconcile_silence_s: float = 600.0
    setup_timeout_s: float = 60.0
    # How long Twilio holds a caller in silence once callbridge's media stream has closed
    # (callbridge restarting, a dropped socket) before it ends the call: TwiML's <Pause> after
    # </Connect>. Within it a new stream (the restarted process, or the media wait's retry)
    # takes the call back.
    stream_hold_s: int = 60
    # On SIGTERM (without --drain), how long the process keeps answering, /readyz 503 and new
    # calls busy, before it stops listening, so load balancers and providers move on first.
    shutdown_grace_s: float = 2.0
    # http(s) audio_url playback (engine/media_plane/audio_fetch.py): the most bytes one download
    # may be, how long it may take in all, the longest audio it may hold, and how long, and within
    # how many decoded bytes, fetched audio stays cached for the next playback of the same URL.
    audio_max_bytes: int = 10 * 1024 * 1024
    audio_fetch_timeout_s: float = 10.0
    audio_max_seconds: float = 1800.0
    audio_cache_ttl_s: float = 300.0
    audio_cache_max_bytes: int = 256 * 1024 * 1024
    # Redis (CALLBRIDGE_REDIS_URL): the live-leg counts every node shares, so channels_count and
    # max_legs hold across nodes (engine/admission/live_redis.py); None: counted in this process.
    # Keys are ``callbridge:{<redis_prefix>}:...``; a node is alive while it refreshes a key
    # that lives ``redis_node_ttl_s``; ``node_id`` names it (default: the host name).
    redis_url: str | None = None
    redis_prefix: str = "default"
    redis_node_ttl_s: float = 15.0
    node_id: str | None = None
    # Where the other nodes reach this node's HTTP API, to forward it the commands on its legs
    # (CALLBRIDGE_NODE_URL; engine/cluster/). None: derived from host and port (``node_url_of``).
    node_url: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        settings = _number_settings(env, _org_limit_defaults(env, cls()))
        settings = _webhook_settings(env, settings)
        settings = _provider_fault_settings(env, settings)
        settings = _redis_settings(env, settings)
        fmt = env.get("CALLBRIDGE_LOG_FORMAT", settings.log_format)
        if fmt not in ("json", "console"):
            raise ValidationError(
                f"CALLBRIDGE_LOG_FORMAT must be json or console, not {fmt!r}",
                field="CALLBRIDGE_LOG_FORMAT",
            )
        port = settings.port
        if "CALLBRIDGE_PORT" in env:
            port = _parse_port(env["CALLBRIDGE_PORT"])
        media_wait_s = settings.media_wait_s
        if "CALLBRIDGE_MEDIA_WAIT_S" in env:
            media_wait_s = _parse_seconds("CALLBRIDGE_MEDIA_WAIT_S", env["CALLBRIDGE_MEDIA_WAIT_S"])
        allow_private_urls = settings.allow_private_urls
        if "CALLBRIDGE_ALLOW_PRIVATE_URLS" in env:
            allow_private_urls = _parse_bool(
                "CALLBRIDGE_ALLOW_PRIVATE_URLS", env["CALLBRIDGE_ALLOW_PRIVATE_URLS"]
            )
        grace_s = settings.signing_key_grace_s
        if "CALLBRIDGE_SIGNING_KEY_GRACE_S" in env:
            grace_s = _parse_grace(env["CALLBRIDGE_SIGNING_KEY_GRACE_S"])
        return replace(
            settings,
            host=env.get("CALLBRIDGE_HOST", settings.host),
            port=port,
            media_port=_media_port(env),
            public_media_url=_public_media_url(env),
            database_url=env.get("CALLBRIDGE_DATABASE_URL", settings.database_url),
            public_url=env.get("CALLBRIDGE_PUBLIC_URL", "").rstrip("/")
            or f"http://{env.get('CALLBRIDGE_HOST', settings.host)}:{port}",
            secret_key=env.get("CALLBRIDGE_SECRET_KEY") or None,
            log_format=fmt,  # type: ignore[arg-type]  # checked just above
            log_level=env.get("CALLBRIDGE_LOG_LEVEL", settings.log_level).lower(),
            recordings_dir=env.get("CALLBRIDGE_RECORDINGS_DIR") or None,
            media_dir=env.get("CALLBRIDGE_MEDIA_DIR") or None,
            media_wait_s=media_wait_s,
            signing_key_grace_s=grace_s,
            recording_url_ttl_s=_recording_url_ttl(env, settings.recording_url_ttl_s),
            allow_private_urls=allow_private_urls,
        )

    def with_overrides(self, **changes: object) -> Settings:
        """Apply command-line values that were given (None means not given)."""
        given = {k: v for k, v in changes.items() if v is not None}
        updated = replace(self, **given)  # type: ignore[arg-type]
        derived_url = self.public_url == f"http://{self.host}:{self.port}"
        if "public_url" not in given and ("host" in given or "port" in given) and derived_url:
            updated = replace(updated, public_url=f"http://{updated.host}:{updated.port}")
        return replace(updated, public_url=updated.public_url.rstrip("/"))


def _media_port(env: Mapping[str, str]) -> int | None:
    raw = env.get("CALLBRIDGE_MEDIA_PORT", "")
    return _parse_port(raw) if raw else None


def _public_media_url(env: Mapping[str, str]) -> str | None:
    url = env.get("CALLBRIDGE_PUBLIC_MEDIA_URL", "").rstrip("/")
    if url and not url.startswith(("ws://", "wss://", "http://", "https://")):
        raise ValidationError(
            f"CALLBRIDGE_PUBLIC_MEDIA_URL must be a ws://, wss://, http:// or https:// URL, "
            f"not {url!r}",
            field="CALLBRIDGE_PUBLIC_MEDIA_URL",
        )
    return url or None


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
MIN_NODE_TTL_S, MAX_NODE_TTL_S = 1.0, 600.0


def _redis_settings(env: Mapping[str, str], settings: Settings) -> Settings:
    """``settings`` with Redis and the node's name as the environment gives them, checked.
    Whether the server answers is checked when the app starts (engine/admission/live_redis.py)."""
    url = env.get("CALLBRIDGE_REDIS_URL", "").strip() or None
    if url is not None and not url.startswith(REDIS_SCHEMES):
        raise ValidationError(
            "CALLBRIDGE_REDIS_URL must be a redis://, rediss:// or unix:// URL",
            field="CALLBRIDGE_REDIS_URL",
        )
    prefix = env.get("CALLBRIDGE_REDIS_PREFIX", settings.redis_prefix)
    node_id = env.get("CALLBRIDGE_NODE_ID", "").strip() or None
    for name, value in (("CALLBRIDGE_REDIS_PREFIX", prefix), ("CALLBRIDGE_NODE_ID", node_id)):
        # Braces would move the key's hash tag; spaces and colons would blur key names.
        if value is not None and not (
            0 < len(value) <= 64 and all(c.isalnum() or c in "-_." for c in value)
        ):
            raise ValidationError(
                f"{name} must be 1 to 64 letters, digits, '-', '_' or '.'", field=name
            )
    ttl_s = settings.redis_node_ttl_s
    if (raw := env.get("CALLBRIDGE_REDIS_NODE_TTL_S")) is not None:
        ttl_s = _parse_number(
            "CALLBRIDGE_REDIS_NODE_TTL_S", raw, MIN_NODE_TTL_S, MAX_NODE_TTL_S, float
        )
    node_url = env.get("CALLBRIDGE_NODE_URL", "").strip().rstrip("/") or None
    if node_url is not None and not node_url.startswith(("http://", "https://")):
        raise ValidationError(
            f"CALLBRIDGE_NODE_URL must be an http:// or https:// URL, not {node_url!r}",
            field="CALLBRIDGE_NODE_URL",
        )
    return replace(settings, redis_url=url, redis_prefix=prefix, redis_node_ttl_s=ttl_s,
                   node_id=node_id, node_url=node_url)  # fmt: skip


def node_url_of(settings: Settings) -> str:
    """The URL other nodes reach this node's API on: CALLBRIDGE_NODE_URL, else the bind host
    and port (the host name for a wildcard bind: 0.0.0.0 is nobody's address)."""
    if settings.node_url is not None:
        return settings.node_url
    host = settings.host
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def _org_limit_defaults(env: Mapping[str, str], settings: Settings) -> Settings:
    """``settings`` with the per-organization limit defaults the environment gives, checked."""
    if (raw := env.get("CALLBRIDGE_ORG_MAX_LEGS")) is not None:
        settings = replace(settings, org_max_legs=parse_count("CALLBRIDGE_ORG_MAX_LEGS", raw))
    if (raw := env.get("CALLBRIDGE_ORG_API_RATE")) is not None:
        settings = replace(settings, org_api_rate=parse_rate("CALLBRIDGE_ORG_API_RATE", raw))
    if (raw := env.get("CALLBRIDGE_ORG_API_BURST")) is not None:
        burst = parse_count("CALLBRIDGE_ORG_API_BURST", raw, minimum=1)
        settings = replace(settings, org_api_burst=burst)
    return settings


def _number_settings(env: Mapping[str, str], settings: Settings) -> Settings:
    """``settings`` with the bounded numbers the environment gives, checked."""
    numbers: dict[str, tuple[str, float, float, type[int] | type[float]]] = {
        "stream_hold_s": ("CALLBRIDGE_STREAM_HOLD_S", 1, 3600, int),
        "shutdown_grace_s": ("CALLBRIDGE_SHUTDOWN_GRACE_S", 0, 600, float),
        "audio_max_bytes": ("CALLBRIDGE_AUDIO_MAX_BYTES", 1024, 2**31, int),
        "audio_fetch_timeout_s": ("CALLBRIDGE_AUDIO_FETCH_TIMEOUT_S", 0.5, 600, float),
        "audio_max_seconds": ("CALLBRIDGE_AUDIO_MAX_SECONDS", 1, 86400, float),
        "audio_cache_ttl_s": ("CALLBRIDGE_AUDIO_CACHE_TTL_S", 0, 86400, float),
        "audio_cache_max_bytes": ("CALLBRIDGE_AUDIO_CACHE_MAX_BYTES", 0, 2**40, int),
    }
    changes: dict[str, float] = {}
    for field_name, (name, lo, hi, kind) in numbers.items():
        if (raw := env.get(name)) is not None:
            changes[field_name] = _parse_number(name, raw, lo, hi, kind)
    return replace(settings, **changes)  # type: ignore[arg-type]  # each parsed as its field


def _parse_number(
    name: str, raw: str, lo: float, hi: float, kind: type[int] | type[float]
) -> float:
    try:
        value: float = kind(raw)
    except ValueError:
        value = lo - 1
    if not lo <= value <= hi:
        what = "a whole number" if kind is int else "a number"
        raise ValidationError(f"{name} must be {what} from {lo:g} to {hi:g}", field=name)
    return value


MAX_WEBHOOK_ATTEMPTS = 50
MIN_WEBHOOK_RETENTION_S, MAX_WEBHOOK_RETENTION_S = 60.0, 366 * 24 * 3600.0


def _webhook_settings(env: Mapping[str, str], settings: Settings) -> Settings:
    """``settings`` with the webhook delivery settings the environment gives, checked."""
    name = "CALLBRIDGE_WEBHOOK_MAX_ATTEMPTS"
    if (raw := env.get(name)) is not None:
        try:
            attempts = int(raw)
        except ValueError:
            attempts = 0
        if not 1 <= attempts <= MAX_WEBHOOK_ATTEMPTS:
            raise ValidationError(
                f"{name} must be a whole number from 1 to {MAX_WEBHOOK_ATTEMPTS}", field=name
            )
        settings = replace(settings, webhook_max_attempts=attempts)
    name = "CALLBRIDGE_WEBHOOK_RETENTION_S"
    if (raw := env.get(name)) is not None:
        try:
            seconds = float(raw)
        except ValueError:
            seconds = -1.0
        # A retention under a minute would purge a dead letter before anyone could read it.
        if not MIN_WEBHOOK_RETENTION_S <= seconds <= MAX_WEBHOOK_RETENTION_S:  # NaN fails too
            raise ValidationError(
                f"{name} must be a number of seconds from {MIN_WEBHOOK_RETENTION_S:.0f} "
                f"to {MAX_WEBHOOK_RETENTION_S:.0f}",
                field=name,
            )
        settings = replace(settings, webhook_retention_s=seconds)
    return settings


MAX_LIMIT = 1_000_000


def parse_count(name: str, raw: str, *, minimum: int = 0) -> int:
    """A limit that counts (legs, burst): a whole number from ``minimum`` to a million."""
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not minimum <= value <= MAX_LIMIT:
        raise ValidationError(
            f"{name} must be a whole number from {minimum} to {MAX_LIMIT}", field=name
        )
    return value


def parse_rate(name: str, raw: str) -> float:
    """Requests per second: above 0 (0 would shut an organization out for good)."""
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= MAX_LIMIT:  # NaN fails this too
        raise ValidationError(
            f"{name} must be a number of requests per second above 0, up to {MAX_LIMIT}",
            field=name,
        )
    return value


MAX_RECORDING_URL_TTL_S = 7 * 24 * 3600.0


def _recording_url_ttl(env: Mapping[str, str], default: float) -> float:
    name = "CALLBRIDGE_RECORDING_URL_TTL_S"
    if (raw := env.get(name)) is None:
        return default
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    # A link that outlives a week is no longer a short-lived link; under a second is unusable.
    if not 1 <= seconds <= MAX_RECORDING_URL_TTL_S:  # NaN fails this too
        raise ValidationError(
            f"{name} must be a number of seconds from 1 to {MAX_RECORDING_URL_TTL_S:.0f}",
            field=name,
        )
    return seconds


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValidationError(f"{name} must be true or false, not {raw!r}", field=name)


def _parse_grace(raw: str) -> float:
    name = "CALLBRIDGE_SIGNING_KEY_GRACE_S"
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    # 0 retires a key at once; more than 30 days would keep a replaced key trusted for long.
    if not 0 <= seconds <= MAX_SIGNING_KEY_GRACE_S:
        raise ValidationError(
            f"{name} must be a number of seconds from 0 to {MAX_SIGNING_KEY_GRACE_S:.0f}",
            field=name,
        )
    return seconds


def _parse_seconds(name: str, raw: str) -> float:
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0.05 <= seconds <= 600:
        raise ValidationError(f"{name} must be a number of seconds from 0.05 to 600", field=name)
    return seconds


# Each provider-fault setting: its variable and its bounds. The retry budget stays under
# Telnyx's 60 s command_id window (a dial retried within it cannot ring twice).
_PROVIDER_FAULT_VARS: dict[str, tuple[str, float, float]] = {
    "provider_retry_budget_s": ("CALLBRIDGE_PROVIDER_RETRY_BUDGET_S", 0, 45),
    "provider_attempt_timeout_s": ("CALLBRIDGE_PROVIDER_TIMEOUT_S", 0.05, 60),
    "hangup_retry_cap_s": ("CALLBRIDGE_HANGUP_RETRY_CAP_S", 0.05, 600),
    "reconcile_interval_s": ("CALLBRIDGE_RECONCILE_INTERVAL_S", 0.05, 3600),
    "reconcile_silence_s": ("CALLBRIDGE_RECONCILE_SILENCE_S", 0.05, 86400),
    "setup_timeout_s": ("CALLBRIDGE_SETUP_TIMEOUT_S", 0.05, 3600),
    "overload_late_s": ("CALLBRIDGE_OVERLOAD_LATE_S", 0.005, 10),
}


def _provider_fault_settings(env: Mapping[str, str], settings: Settings) -> Settings:
    """``settings`` with the provider-fault settings the environment gives, checked."""
    changes: dict[str, float] = {}
    for field_name, (name, low, high) in _PROVIDER_FAULT_VARS.items():
        if (raw := env.get(name)) is None:
            continue
        try:
            seconds = float(raw)
        except ValueError:
            seconds = -1.0
        if not low <= seconds <= high:  # NaN fails this too
            raise ValidationError(
                f"{name} must be a number of seconds from {low:g} to {high:g}", field=name
            )
        changes[field_name] = seconds
    return replace(settings, **changes)  # type: ignore[arg-type]  # every one a float field


def _parse_port(raw: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        raise ValidationError(f"port must be a number, not {raw!r}", field="port") from None
    if not 0 <= port <= 65535:
        raise ValidationError(f"port {port} is out of range", field="port")
    return port


def sqlite_path(database_url: str) -> Path | None:
    """The file behind a SQLite URL (or plain path), None for memory or other databases."""
    url = database_url
    for prefix in ("sqlite+aiosqlite:///", "sqlite:///"):
        if url.startswith(prefix):
            url = url[len(prefix) :]
            break
    else:
        if "://" in url:
            return None
    if url in ("", ":memory:"):
        return None
    return Path(url)


def resolve_secret_key(settings: Settings) -> tuple[str, Path | None]:
    """Return the secret key to use and, when one was created or read from disk, its file.

    A configured key must be at least 32 characters. Without one, the key lives in
    ``<database file>.secret`` (mode 0600), created on first start.
    """
    if settings.secret_key is not None:
        if len(settings.secret_key) < MIN_SECRET_KEY_LENGTH:
            raise ValidationError(
                f"CALLBRIDGE_SECRET_KEY must be at least {MIN_SECRET_KEY_LENGTH} characters",
                field="CALLBRIDGE_SECRET_KEY",
            )
        return settings.secret_key, None
    db_file = sqlite_path(settings.database_url)
    if db_file is None:
        raise ValidationError(
            "CALLBRIDGE_SECRET_KEY is required when the database is not a SQLite file",
            field="CALLBRIDGE_SECRET_KEY",
        )
    key_file = db_file.with_name(db_file.name + ".secret")
    if key_file.exists():
        return key_file.read_text().strip(), key_file
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key, key_file
