"""The store interface: everything callbridge keeps across restarts.

One small async interface that the SQLite implementation (``engine.store.sql``) satisfies today
and a PostgreSQL one can satisfy later. Every method is one transaction: it either applies all
of its change or none. Records are frozen dataclasses; the store never returns ORM objects.

Secrets arrive here already encrypted (``auth_token_ciphertext``); the store never sees a
plaintext provider secret and never logs one. API tokens arrive as their SHA-256 hex digest.

Tenancy is enforced here too: every read or write of a bridge or configuration names the
organization, and a row of another organization is simply not found (``None`` / ``NotFound``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from engine.machine.live_changes import LiveChanges
from engine.machine.model import Conference, Queue, Room
from engine.store.audit_log import AuditLog
from engine.store.live_records import LiveRecording, LiveSnapshot


@dataclass(frozen=True, slots=True)
class OrganizationRecord:
    id: int
    domain_handle: str
    name: str
    created: datetime
    modified: datetime


@dataclass(frozen=True, slots=True)
class ProviderConfigRecord:
    id: int
    org_id: int
    provider: str  # catalog slug: "twilio" | "telnyx"
    name: str
    account_sid: str
    auth_token_ciphertext: str
    public_key: str | None
    api_base_url: str | None
    active: bool
    created_at: datetime
    modified: datetime


@dataclass(frozen=True, slots=True)
class NumberRecord:
    """A phone number assigned to a bridge (the seed's number object)."""

    id: int  # the assignment id
    number_id: int  # the phone number's own id
    number: str  # E.164
    bridge_id: int
    provider_config_id: int
    state: str  # "ASSIGNED"
    active: bool
    channels_count: int
    status: str  # "active"
    created: datetime


@dataclass(frozen=True, slots=True)
class BridgeRecord:
    id: int
    org_id: int
    slug: str
    name: str
    description: str
    status: str  # ACTIVE | DRAFT | INACTIVE
    documents_status: str
    hub: int
    region: str
    webhook_url: str | None
    provider_config_id: int | None  # the connected configuration, if any
    numbers: tuple[NumberRecord, ...]
    created: datetime
    modified: datetime


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One delivery attempt of a webhook, as GET /v2/webhook_deliveries shows it (the telnyx
    SDK's ``types/attempt.py`` and ``types/http.py``). Times are epoch seconds."""

    status: str  # delivered | failed
    started_at: float
    finished_at: float
    url: str
    request_headers: tuple[tuple[str, str], ...]
    response_status: int | None = None  # None: no HTTP answer (refused, timed out, reset)
    response_headers: tuple[tuple[str, str], ...] = ()
    response_body: str | None = None  # the first bytes of the answer, as text
    error: str | None = None  # why a failed attempt failed (callbridge's words)


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """A call-control webhook queued for delivery to an application's ``webhook_url``, and the
    state of its delivery.

    Times are epoch seconds from the runtime's clock (``time.time()``)."""

    id: int
    org_id: int
    leg_id: str  # the leg's call_control_id; delivery order is kept per leg
    url: str
    body: str  # the event (the envelope's ``data``) as JSON; each attempt frames it anew
    headers: Mapping[str, str]
    attempt: int  # attempts made so far
    next_attempt_at: float | None  # when due (or when an in-flight claim lapses); None once final
    created: float
    delivered_at: float | None
    last_error: str | None
    public_id: str  # the webhook_delivery id the API shows (a UUID)
    event_type: str
    status: str  # pending | delivered | failed (dead-lettered: every attempt failed)
    attempts: tuple[AttemptRecord, ...]  # newest first
    started_at: float | None  # when the first attempt began
    finished_at: float | None  # when it was delivered or dead-lettered


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    """Which of an organization's webhook deliveries a list keeps (Telnyx's filters of
    ``GET /v2/webhook_deliveries``); None or empty keeps all."""

    status: str | None = None  # delivered | failed
    event_types: tuple[str, ...] = ()
    started_gte: float | None = None
    started_lte: float | None = None
    finished_gte: float | None = None
    finished_lte: float | None = None
    webhook_contains: str | None = None  # in the event's JSON, case-insensitively
    attempts_contains: str | None = None  # in the attempts' JSON, case-insensitively


@dataclass(frozen=True, slots=True)
class RetiredKeyRecord:
    version: int
    retired_at: float  # epoch seconds: when the next version replaced it


@dataclass(frozen=True, slots=True)
class SigningKeysRecord:
    """Which of an organization's webhook-signing keys is current, and which were retired.

    Only versions are kept; ``engine.webhooks.signing`` derives each key from the secret key."""

    version: int  # the current key's: 1 until the first rotation
    retired: tuple[RetiredKeyRecord, ...]  # retired at or after the asked-for time, newest first


@dataclass(frozen=True, slots=True)
class OrgLimitsRecord:
    """An organization's overrides of the process's default limits; None keeps the default."""

    max_legs: int | None = None  # concurrent live legs, inbound and dialled
    api_rate: float | None = None  # API requests per second, sustained
    api_burst: int | None = None  # API requests allowed at once after a quiet spell


@dataclass(frozen=True, slots=True)
class RecordingRecord:
    """A saved recording: which call it is of, and its file (relative to the recordings
    directory). Times are epoch seconds from the runtime's clock."""

    id: str  # the public id (a UUID), as the Call Control API shows it
    org_id: int
    call_control_id: str
    call_leg_id: str
    call_session_id: str
    connection_id: str
    from_: str
    to: str
    format: str  # wav | mp3
    channels: str  # single | dual
    started_at: float
    ended_at: float
    duration_ms: int
    path: str  # e.g. "org-1/take.wav"
    conference_id: str | None = None  # a conference's recording (the call ids: its creator's)


@dataclass(frozen=True, slots=True)
class Route:
    """What inbound routing needs for one dialled number."""

    bridge: BridgeRecord
    number: NumberRecord
    provider_config: ProviderConfigRecord


class Store(AuditLog, Protocol):
    """Persistence for organizations, tokens, provider configurations, bridges and numbers.

    Errors: ``engine.errors.Conflict`` for uniqueness and in-use violations, ``NotFound`` for
    a missing row on a write, ``StorageError`` when the database itself fails.
    """

    async def start(self) -> None:
        """Open the database, create or migrate the schema."""

    async def close(self) -> None: ...

    # organizations and tokens
    async def create_organization(
        self, domain_handle: str, name: str, token_sha256: str
    ) -> OrganizationRecord:
        """Create an organization with its first API token. Conflict if the handle exists."""

    async def add_token(self, org_id: int, token_sha256: str) -> None: ...

    async def organization_for_token(self, token_sha256: str) -> OrganizationRecord | None: ...

    async def organization_by_handle(self, domain_handle: str) -> OrganizationRecord | None: ...

    # webhook-signing key versions
    async def signing_keys(self, org_id: int, *, retired_since: float) -> SigningKeysRecord:
        """The organization's current key version and the versions retired at or after
        ``retired_since``. An organization without rotations (or unknown) is at version 1."""

    async def rotate_signing_key(self, org_id: int, now: float) -> int:
        """Retire the current version at ``now`` and return the new current one. NotFound for
        an unknown organization, Conflict when a concurrent rotation retired it first."""

    # limits
    async def org_limits(self, org_id: int) -> OrgLimitsRecord:
        """The organization's overrides; all None for one without any (or unknown)."""

    async def set_org_limits(self, org_id: int, limits: OrgLimitsRecord) -> None:
        """Replace the organization's overrides with ``limits``. NotFound if it is unknown."""

    # recordings
    async def add_recording(self, record: RecordingRecord) -> None:
        """Keep a saved recording. NotFound for an unknown organization; Conflict if its id
        exists."""

    async def list_recordings(
        self,
        org_id: int,
        *,
        call_control_id: str | None = None,
        conference_id: str | None = None,
        offset: int,
        limit: int,
    ) -> tuple[list[RecordingRecord], int]:
        """One page of the organization's recordings (of one leg when ``call_control_id`` is
        given, of one conference when ``conference_id`` is), newest first, and the total
        count."""

    async def get_recording(self, org_id: int, recording_id: str) -> RecordingRecord | None:
        """None if unknown or another organization's."""

    async def recording_by_id(self, recording_id: str) -> RecordingRecord | None:
        """Any organization's: only for a download whose signed URL already names it."""

    async def delete_recording(self, org_id: int, recording_id: str) -> None:
        """Forget the recording (the caller removes its file). NotFound if absent or another
        organization's."""

    # provider configurations
    async def create_provider_config(
        self,
        org_id: int,
        *,
        provider: str,
        name: str,
        account_sid: str,
        auth_token_ciphertext: str,
        public_key: str | None,
        api_base_url: str | None,
    ) -> ProviderConfigRecord:
        """Conflict if this organization already has (provider, account_sid)."""

    async def list_provider_configs(
        self, org_id: int, *, offset: int, limit: int
    ) -> tuple[list[ProviderConfigRecord], int]:
        """One page, ordered by id, and the total count."""

    async def get_provider_config(
        self, org_id: int, config_id: int
    ) -> ProviderConfigRecord | None: ...

    async def update_provider_config(
        self, org_id: int, config_id: int, changes: Mapping[str, Any]
    ) -> ProviderConfigRecord:
        """Apply the given changes, keyed by record field name (``provider``, ``name``,
        ``account_sid``, ``auth_token_ciphertext``, ``public_key``, ``api_base_url``,
        ``active``), and stamp ``modified``. ValueError for any other name (a programming
        error). NotFound / Conflict (same provider and account_sid as another configuration)."""

    async def delete_provider_config(self, org_id: int, config_id: int) -> None:
        """NotFound if absent; Conflict if a bridge or a number uses it."""

    # bridges
    async def create_bridge(
        self,
        org_id: int,
        *,
        slug: str,
        name: str,
        description: str,
        status: str,
        region: str,
        webhook_url: str | None,
    ) -> BridgeRecord:
        """Conflict if the slug exists (the caller retries with another suffix)."""

    async def list_bridges(
        self, org_id: int, *, status: str | None, offset: int, limit: int
    ) -> tuple[list[BridgeRecord], int]:
        """One page, ordered by id, and the total count; ``status`` filters when given."""

    async def get_bridge(self, org_id: int, slug: str) -> BridgeRecord | None: ...

    async def update_bridge(
        self, org_id: int, slug: str, changes: Mapping[str, Any]
    ) -> BridgeRecord:
        """Apply the given changes, keyed by record field name (``slug``, ``name``,
        ``description``, ``status``, ``documents_status``, ``hub``, ``region``,
        ``webhook_url``), and stamp ``modified``. ValueError for any other name (the
        configuration changes through ``connect_number`` / ``set_bridge_provider``).
        NotFound / Conflict (slug taken)."""

    async def delete_bridge(self, org_id: int, slug: str) -> None:
        """Delete the bridge and release its numbers. NotFound if absent."""

    # numbers
    async def connect_number(
        self,
        org_id: int,
        slug: str,
        *,
        provider_config_id: int,
        number: str,
        channels_count: int | None = None,
    ) -> BridgeRecord:
        """Assign ``number`` to the bridge through the configuration and mark the configuration
        connected to the bridge. NotFound if the bridge or the configuration is not this
        organization's. Conflict if the number is on another bridge (any organization).
        ``channels_count`` is the number's capacity in live legs: a new assignment takes it, or
        the column's default (100) when None. Connecting the same number to the same bridge
        again sets it when given and keeps the stored one when None; with nothing changed it
        is a no-op. Naming another configuration of the organization moves the number to
        that configuration."""

    async def set_bridge_provider(
        self, org_id: int, slug: str, provider_config_id: int | None
    ) -> BridgeRecord:
        """The older seed shape: connect (or, with None, disconnect) a configuration with no
        number. Disconnecting also releases the numbers assigned through that configuration.
        NotFound if the bridge or the configuration is not this organization's."""

    async def disconnect_number(self, org_id: int, slug: str, number: str) -> BridgeRecord:
        """Release the number; NotFound if it is not on this bridge. When the bridge has no
        number left through its configuration, the configuration stays connected."""

    async def route_for_number(self, number: str) -> Route | None:
        """Inbound routing: the bridge, assignment and configuration of a dialled number.
        The configuration is the one the number is assigned through."""

    # webhook outbox: call-control events survive a restart until delivered
    async def enqueue_webhook(
        self,
        *,
        org_id: int,
        leg_id: str,
        url: str,
        body: str,
        headers: Mapping[str, str],
        now: float,
    ) -> int:
        """Queue a webhook, due at once (``next_attempt_at = now``); return its id."""

    async def due_webhooks(self, now: float, limit: int) -> list[OutboxRecord]:
        """Up to ``limit`` undelivered webhooks with ``next_attempt_at <= now``, oldest (by id)
        first, and at most one per leg: a leg's webhook is held back while an earlier one of
        the same leg is pending, so delivering everything returned, even concurrently, keeps
        each leg's events in order. Given-up webhooks hold nothing back."""

    async def webhook_backlog(self) -> tuple[int, float | None]:
        """Webhooks not yet delivered nor dead-lettered, and when the oldest was queued (None
        if there is none): the outbox's depth and age for the operators' metrics."""

    async def next_webhook_due(self) -> float | None:
        """The earliest ``next_attempt_at`` among the pending webhooks that are first of their
        leg (a claimed one's is the end of its lease; a later webhook of the same leg cannot go
        before it), or None when nothing is pending: when the sender must look again."""

    async def mark_webhook_delivered(self, webhook_id: int, now: float) -> None:
        """Record delivery at ``now`` (the first time counts) without an attempt's details.
        NotFound if absent."""

    async def reschedule_webhook(
        self, webhook_id: int, *, attempt: int, next_attempt_at: float | None, error: str
    ) -> None:
        """Record a failed attempt without its details: the attempt count, the error and when
        to try again; ``next_attempt_at=None`` dead-letters it (status failed, finished when
        that attempt was due; never due again). NotFound if absent."""

    async def claim_due_webhooks(
        self,
        now: float,
        limit: int,
        *,
        lease_until: float,
        per_destination: int,
        busy: Mapping[tuple[int, str], int],
    ) -> list[OutboxRecord]:
        """Hand out up to ``limit`` due webhooks, as ``due_webhooks`` picks them, at most
        ``per_destination`` minus its ``busy`` count for each destination (organization, URL),
        skipping full destinations; each is claimed until ``lease_until`` (not due before, so
        it is never handed out twice; after a crash it comes due again then)."""

    async def record_webhook_attempt(
        self, webhook_id: int, tried: AttemptRecord, *, next_attempt_at: float | None
    ) -> None:
        """Record one attempt: delivered, or failed and due again at ``next_attempt_at``, or
        (None) dead-lettered. A delivered webhook stays delivered. NotFound if absent."""

    async def release_webhooks(self, webhook_ids: Sequence[int], now: float) -> None:
        """Give claims back unused: those still pending are due at ``now``."""

    async def list_webhook_deliveries(
        self, org_id: int, where: DeliveryFilter, *, offset: int, limit: int
    ) -> tuple[list[OutboxRecord], int]:
        """One page of the organization's webhooks, newest first, and the total count."""

    async def get_webhook_delivery(self, org_id: int, public_id: str) -> OutboxRecord | None:
        """None if unknown or another organization's."""

    async def pending_webhook_count(self) -> int:
        """Webhooks not yet delivered nor dead-lettered."""

    async def purge_webhooks(self, finished_before: float, limit: int) -> int:
        """Delete up to ``limit`` delivered or dead-lettered webhooks finished before
        ``finished_before``; return how many went."""

    # live state: the machine's legs, rooms, queues and timers survive a restart
    async def commit_input(
        self, changes: LiveChanges, webhooks: Sequence[QueuedWebhook], now: float
    ) -> None:
        """One input's live-state changes and webhooks in one transaction, all or nothing
        (StorageError when it cannot be committed: the input then fails)."""

    async def load_live(self) -> LiveSnapshot:
        """Everything stored about live calls (``LiveStateError`` if it cannot be read)."""

    def fence_as(self, node: str) -> None:
        """Several nodes share this store: live leg rows name their owner, ``node`` from now on
        for what this process writes, and an input changing another node's leg is refused."""

    async def own_live(self, leg_ids: Collection[str]) -> None:
        """This node adopted these legs: their rows are its own from now on."""

    async def live_queue(self, org_id: int, name: str) -> Queue | None:
        """An organization's queue as stored, whichever node keeps it; None if none does."""

    async def live_room(self, room_id: str) -> Room | None:
        """A room as stored, whichever node keeps it; None if none does."""

    async def live_conferences(self, org_id: int) -> list[Conference]:
        """An organization's conference records as stored, whichever nodes keep them."""

    async def live_conference(self, conference_id: str) -> Conference | None:
        """A conference record as stored, whichever node keeps it (its creator's owner holds
        its room: engine/api/routing.py); None if none is."""

    # recordings in progress: a new process continues them (engine/store/live_recordings.py)
    async def save_live_recording(self, recording: LiveRecording) -> None:
        """Keep what continuing this recording takes (replacing a row of the same id)."""

    async def delete_live_recording(self, recording_id: str) -> None:
        """Forget a recording that is over (saved or failed); no error if it is unknown."""

    async def load_live_recordings(self) -> list[LiveRecording]:
        """Every recording stored as in progress (``LiveStateError`` if one cannot be read)."""


@dataclass(frozen=True, slots=True)
class QueuedWebhook:
    """A webhook an input produced: committed to the outbox with the input's live state."""

    org_id: int
    leg_id: str
    url: str
    body: str  # the event (``data``), framed and signed at each attempt
