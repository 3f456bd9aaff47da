"""The provider-call retry policy (engine/providers/calls.py), the reconciliation's judgement
(engine/providers/reconcile.py), their settings, and the media token's lifetime."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest

from adapters.leg_tokens import DEFAULT_TTL_S, InvalidLegToken, LegTokens
from engine.config import Settings
from engine.errors import ProviderError, ValidationError
from engine.machine.model import DEFAULT_TIME_LIMIT_SECS, Direction, Leg, LegState
from engine.providers.calls import (
    ProviderCallError,
    ProviderCalls,
    RetryPolicy,
    is_transient,
    next_delay,
    parse_retry_after,
)
from engine.providers.gateway import CallPresence
from engine.providers.reconcile import ReconcileSettings, disagrees, needs_check

POLICY = RetryPolicy(base_delay_s=0.5, max_delay_s=8.0, budget_s=30.0, persistent_cap_s=60.0)


# --- which errors are retried --------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "idempotent", "expected"),
    [
        (ProviderCallError("503", status=503), True, True),
        (ProviderCallError("500", status=500), True, True),
        (ProviderCallError("429", status=429), True, True),
        (ProviderCallError("429", status=429), False, True),  # never acted on: always safe
        (ProviderCallError("503", status=503), False, False),  # a dial may have been placed
        (ProviderCallError("422", status=422), True, False),
        (ProviderCallError("404", status=404), True, False),
        (ProviderCallError("408", status=408), True, False),
        (ProviderCallError("reset", status=None), True, True),
        (ProviderCallError("reset", status=None), False, False),
        (ProviderCallError("refused", status=None, sent=False), False, True),
        (TimeoutError(), True, True),
        (TimeoutError(), False, False),
        (ProviderError("leg has no Telnyx call"), True, False),
        (RuntimeError("a bug"), True, False),
    ],
)
def test_which_errors_are_transient(error: Exception, idempotent: bool, expected: bool) -> None:
    assert is_transient(error, idempotent=idempotent) is expected


# --- backoff -----------------------------------------------------------------------------------


def test_backoff_is_full_jitter_of_an_exponential_step_capped() -> None:
    for attempt, step in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        low = next_delay(POLICY, attempt=attempt, elapsed_s=0, rand=0.0)
        high = next_delay(POLICY, attempt=attempt, elapsed_s=0, rand=0.999999)
        half = next_delay(POLICY, attempt=attempt, elapsed_s=0, rand=0.5)
        assert low == 0.0
        assert high == pytest.approx(step, rel=1e-5)
        assert half == pytest.approx(step / 2)


def test_a_bounded_call_gives_up_when_the_wait_would_end_past_the_budget() -> None:
    assert next_delay(POLICY, attempt=4, elapsed_s=21.9, rand=0.999) is not None
    assert next_delay(POLICY, attempt=4, elapsed_s=22.1, rand=0.999) is None
    assert next_delay(POLICY, attempt=4, elapsed_s=29.0, rand=0.1) is not None  # 0.8 s fits
    assert next_delay(POLICY, attempt=0, elapsed_s=30.5, rand=0.0) is None


def test_a_persistent_call_goes_on_past_the_budget_at_a_capped_interval() -> None:
    for attempt in range(40):
        delay = next_delay(POLICY, attempt=attempt, elapsed_s=3600, rand=0.999, persistent=True)
        assert delay is not None and POLICY.base_delay_s <= delay <= POLICY.persistent_cap_s
    late = next_delay(POLICY, attempt=30, elapsed_s=3600, rand=0.999999, persistent=True)
    assert late == pytest.approx(POLICY.persistent_cap_s, rel=1e-5)
    # Never a busy loop, whatever the random draw.
    assert next_delay(POLICY, attempt=30, elapsed_s=3600, rand=0.0, persistent=True) == 0.5


def test_retry_after_replaces_the_backoff_within_the_budget() -> None:
    delay = next_delay(POLICY, attempt=0, elapsed_s=0, rand=0.0, retry_after_s=3.0)
    assert delay == 3.0
    # Beyond the budget a bounded call gives up rather than send early.
    assert next_delay(POLICY, attempt=0, elapsed_s=28.0, rand=0.0, retry_after_s=3.0) is None
    # More than 60 s (telnyx's SDK limit) or 0 is not followed: the backoff applies.
    assert next_delay(POLICY, attempt=1, elapsed_s=0, rand=0.5, retry_after_s=120) == 0.5
    assert next_delay(POLICY, attempt=1, elapsed_s=0, rand=0.5, retry_after_s=0) == 0.5
    # A persistent call past the budget follows it too, within the cap.
    short_cap = replace(POLICY, persistent_cap_s=2.0)
    kept = next_delay(
        short_cap, attempt=0, elapsed_s=99, rand=0.0, retry_after_s=5.0, persistent=True
    )
    assert kept == 2.0


def test_retry_after_headers_are_read_like_the_telnyx_sdk() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after({"retry-after": "2"}, now) == 2.0
    assert parse_retry_after({"retry-after": "1.5"}, now) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}, now) == 0.25
    assert parse_retry_after({"retry-after": "Tue, 14 Nov 2023 22:13:30 GMT"}, now) == 10.0
    assert parse_retry_after({"retry-after": "Tue, 14 Nov 2023 22:13:00 GMT"}, now) == 0.0
    assert parse_retry_after({"retry-after": "soon"}, now) is None
    assert parse_retry_after({}, now) is None


# --- the loop ------------------------------------------------------------------------------


def failing(
    errors: list[Exception], tried: asyncio.Event | None = None
) -> tuple[Callable[[], Awaitable[str]], list[int]]:
    """A provider call that raises ``errors`` one by one, then succeeds; and its call count.
    ``tried`` is set at each call."""
    calls = [0]

    async def call() -> str:
        calls[0] += 1
        if tried is not None:
            tried.set()
        if errors:
            raise errors.pop(0)
        return "ok"

    return call, calls


FAST = RetryPolicy(base_delay_s=0.001, max_delay_s=0.004, budget_s=5.0, persistent_cap_s=0.004)


async def test_transient_faults_are_ridden_out() -> None:
    runner = ProviderCalls(FAST)
    call, calls = failing([ProviderCallError("503", status=503), TimeoutError()])
    assert await runner.run("answer", "leg", call) == "ok"
    assert calls[0] == 3


async def test_a_final_refusal_is_not_retried() -> None:
    runner = ProviderCalls(FAST)
    call, calls = failing([ProviderCallError("422", status=422)])
    with pytest.raises(ProviderCallError):
        await runner.run("answer", "leg", call)
    assert calls[0] == 1


async def test_a_non_idempotent_call_is_not_repeated_after_a_5xx() -> None:
    runner = ProviderCalls(FAST)
    call, calls = failing(
        [ProviderCallError("429", status=429), ProviderCallError("5", status=503)]
    )
    with pytest.raises(ProviderCallError):
        await runner.run("dial", "leg", call, idempotent=False)
    assert calls[0] == 2  # the 429 was retried, the 503 not


async def test_a_bounded_call_stops_at_its_budget_and_a_persistent_one_does_not() -> None:
    clock = [0.0]
    runner = ProviderCalls(FAST, clock=lambda: clock[0])
    errors: list[Exception] = []

    async def call() -> str:
        clock[0] += 2.0  # each attempt "takes" 2 s of the 5 s budget
        if len(errors) < 10:
            errors.append(ProviderCallError("503", status=503))
            raise errors[-1]
        return "ok"

    with pytest.raises(ProviderCallError):
        await runner.run("answer", "leg", call)
    assert len(errors) == 3  # at 2, 4, 6 s: the third ends past the budget
    errors.clear()
    clock[0] = 0.0
    assert await runner.run("hangup", "leg", call, persistent=True) == "ok"
    assert len(errors) == 10


async def test_close_ends_the_retries_of_a_persistent_call() -> None:
    # A fixed share of the jitter: a random one near zero would retry before close() comes.
    runner = ProviderCalls(
        replace(FAST, persistent_cap_s=30.0, base_delay_s=30.0), rand=lambda: 0.5
    )
    tried = asyncio.Event()
    call, calls = failing([ProviderCallError("503", status=503)] * 100, tried)
    task = asyncio.ensure_future(runner.run("hangup", "leg", call, persistent=True))
    await asyncio.wait_for(tried.wait(), 5)
    runner.close()
    with pytest.raises(ProviderCallError):
        await asyncio.wait_for(task, 5)
    assert calls[0] == 1


# --- reconciliation's judgement ------------------------------------------------------------


def leg(state: LegState, *, answered: bool = False, media: bool = False) -> Leg:
    return Leg(
        call_control_id="x", call_leg_id="l", call_session_id="s", org_id=1, connection_id="c",
        direction=Direction.INCOMING, from_="+1", to="+2", state=state, start_time=0.0,
        answered_at=1.0 if answered else None, media_started=media,
    )  # fmt: skip


SETTINGS = ReconcileSettings(interval_s=60, silence_s=600)


def test_stuck_legs_are_asked_about_after_one_quiet_interval() -> None:
    for stuck in (
        leg(LegState.INITIATED),
        leg(LegState.ANSWERING),
        leg(LegState.BRIDGED, answered=True, media=False),
    ):
        assert not needs_check(stuck, last_heard=100, now=159, settings=SETTINGS)
        assert needs_check(stuck, last_heard=100, now=160, settings=SETTINGS)


def test_healthy_legs_are_asked_about_only_after_the_silence() -> None:
    healthy = leg(LegState.BRIDGED, answered=True, media=True)
    assert not needs_check(healthy, last_heard=100, now=699, settings=SETTINGS)
    assert needs_check(healthy, last_heard=100, now=700, settings=SETTINGS)
    assert not needs_check(leg(LegState.HANGUP), last_heard=0, now=10**6, settings=SETTINGS)


def test_what_ends_a_leg() -> None:
    answered = leg(LegState.BRIDGED, answered=True, media=True)
    ringing = leg(LegState.ANSWERING)
    assert disagrees(answered, CallPresence.GONE) and disagrees(ringing, CallPresence.GONE)
    assert disagrees(answered, CallPresence.NOT_UP)
    # Telnyx says is_alive false of a call not answered yet: no reason to end it.
    assert not disagrees(ringing, CallPresence.NOT_UP)
    assert not disagrees(answered, CallPresence.UP)


# --- settings and tokens -----------------------------------------------------------------


def test_provider_fault_settings_come_from_the_environment() -> None:
    defaults = Settings.from_env({})
    assert (defaults.provider_retry_budget_s, defaults.setup_timeout_s) == (30.0, 60.0)
    assert (defaults.reconcile_interval_s, defaults.hangup_retry_cap_s) == (60.0, 60.0)
    env = {
        "CALLBRIDGE_PROVIDER_RETRY_BUDGET_S": "5",
        "CALLBRIDGE_PROVIDER_TIMEOUT_S": "2.5",
        "CALLBRIDGE_HANGUP_RETRY_CAP_S": "15",
        "CALLBRIDGE_RECONCILE_INTERVAL_S": "30",
        "CALLBRIDGE_RECONCILE_SILENCE_S": "120",
        "CALLBRIDGE_SETUP_TIMEOUT_S": "45",
        "CALLBRIDGE_OVERLOAD_LATE_S": "0.05",
    }
    settings = Settings.from_env(env)
    assert settings.provider_retry_budget_s == 5.0
    assert settings.provider_attempt_timeout_s == 2.5
    assert settings.hangup_retry_cap_s == 15.0
    assert (settings.reconcile_interval_s, settings.reconcile_silence_s) == (30.0, 120.0)
    assert settings.setup_timeout_s == 45.0
    assert (defaults.overload_late_s, settings.overload_late_s) == (0.02, 0.05)


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("CALLBRIDGE_PROVIDER_RETRY_BUDGET_S", "50"),  # past Telnyx's command_id window
        ("CALLBRIDGE_PROVIDER_TIMEOUT_S", "0"),
        ("CALLBRIDGE_SETUP_TIMEOUT_S", "soon"),
        ("CALLBRIDGE_RECONCILE_INTERVAL_S", "nan"),
        ("CALLBRIDGE_HANGUP_RETRY_CAP_S", "-1"),
        ("CALLBRIDGE_OVERLOAD_LATE_S", "0"),
    ],
)
def test_bad_provider_fault_settings_are_refused_by_name(name: str, raw: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings.from_env({name: raw})
    assert refused.value.field == name
    assert name in refused.value.detail


def test_a_media_token_lives_as_long_as_a_leg_may() -> None:
    assert DEFAULT_TTL_S > DEFAULT_TIME_LIMIT_SECS + 600  # the longest ring of a dial
    issued_at = 1_700_000_000.0
    clock = [issued_at]
    tokens = LegTokens("k" * 40, lambda: clock[0])
    token = tokens.issue("leg-1")
    clock[0] = issued_at + DEFAULT_TIME_LIMIT_SECS + 600  # answered late, at its time limit
    assert tokens.leg_of(token) == "leg-1"
    clock[0] = issued_at + DEFAULT_TTL_S + 1
    with pytest.raises(InvalidLegToken):
        tokens.leg_of(token)
