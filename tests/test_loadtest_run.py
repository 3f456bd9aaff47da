"""Short load-test runs through the real engine and both provider simulators: every received
frame checked on the audio, in pairs bridged through the Call Control API and in conferences.

The runs are real time (the legs stream 20 ms frames for a few seconds); nothing here waits on a
clock of its own. What is asserted is routing and audio identity: every leg heard its whole room
and nothing else (no own tone, no other room, no foreign audio). Latency, loss and whether the
generator kept up depend on how busy the machine is; they are measured, not asserted here (that
is ``callbridge loadtest``'s job, see BENCHMARKS.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from adapters.simulators import TelnyxCall, TwilioCall
from benchmarks.loadtest.checker import AudioChecker
from benchmarks.loadtest.generator import LoadConfig, LoadTest, RunResult
from engine.cli import main as callbridge

SECONDS = 2.5
# Real-time runs of tens of legs: once per CI run, not again under the second Python.
slow_family = pytest.mark.slow_family


def quick(**fields: object) -> LoadConfig:
    base: dict[str, object] = {
        "provider": "mixed",
        "duration_s": SECONDS,
        "settle_s": 0.3,
        "setup_rate": 200.0,
        "setup_timeout_s": 15.0,
    }
    return LoadConfig(**{**base, **fields})  # type: ignore[arg-type]


def assert_routed(result: RunResult, legs: int) -> None:
    """Every leg heard exactly its room, and enough audio was judged to say so; the calls are
    of the providers (and the Telnyx ones of the codec) the configuration asked for."""
    (step,) = result.steps
    tally = step.tally
    assert step.legs == legs
    assert tally.unarmed_legs == [], step.failures
    assert tally.misrouted_frames == 0, tally.examples
    assert result.misrouted == 0
    # Not a loss budget: only that the window judged most of its frames and saw the markers
    # of every speaker, so "nothing misrouted" is a statement about real audio.
    assert tally.frames_checked >= legs * SECONDS * 50 * 0.5
    assert tally.markers >= legs * (result.config.room_size - 1)
    assert result.app_errors == []
    kinds = {type(call) for call in result.calls.values()}
    provider = result.config.provider
    assert kinds == {"mixed": {TwilioCall, TelnyxCall}, "telnyx": {TelnyxCall},
                     "twilio": {TwilioCall}}[provider]  # fmt: skip
    codecs = {call.codec for call in result.calls.values() if isinstance(call, TelnyxCall)}
    assert codecs <= {result.config.telnyx_codec}


@slow_family
async def test_twenty_legs_in_cross_provider_pairs_pass_their_audio_checks() -> None:
    result = await LoadTest(quick(legs=20, room_size=2)).run()
    assert_routed(result, 20)
    # Pairs are bridged by the application: every leg got call.bridged.
    bridged = {e.leg for e in result.events if e.event_type == "call.bridged"}
    assert bridged == set(range(20))


@slow_family
async def test_rooms_of_three_in_conferences_pass_their_audio_checks() -> None:
    result = await LoadTest(quick(legs=21, room_size=3)).run()
    assert_routed(result, 21)
    # Conferences need no application: callbridge answers callers into the bridge's room.
    assert not [e for e in result.events if e.event_type == "call.bridged"]


@slow_family
@pytest.mark.parametrize("provider", ["mixed", "telnyx"])
async def test_wideband_legs_pass_their_audio_checks(provider: str) -> None:
    """Telnyx legs on G.722 (16 kHz): with Twilio legs, mixed-rate pairs; alone, wideband
    pairs. Their audio is resampled on the way, so every marker turn falls inside a frame: the
    checker must judge it as a turning frame, not as misrouted (frames.py)."""
    result = await LoadTest(
        quick(legs=12, room_size=2, provider=provider, telnyx_codec="G722")
    ).run()
    assert_routed(result, 12)
    assert all(result.plan.wideband_rooms())


@slow_family
async def test_a_checker_expecting_other_rooms_fails_the_run() -> None:
    """The same engine and calls, but the ear expects each leg to be paired with another one:
    what callbridge (rightly) delivers must now read as misrouted, and fail the run."""
    test = LoadTest(
        quick(legs=8, room_size=2, provider="twilio", duration_s=1.0, setup_timeout_s=2.0)
    )
    plan = test.plan
    swapped = [(0, 2), (1, 3), (4, 6), (5, 7)]
    test.checker = AudioChecker(
        plan.speakers(),
        swapped,
        test.log,
        marker_period=plan.marker_period,
        budget_s=test.config.budget_s,
        thresholds=plan.thresholds(),
    )
    result = await test.run()
    (step,) = result.steps
    assert not result.passed
    assert step.tally.misrouted_frames > 0
    assert set(step.tally.misrouted_by_reason) <= {"foreign-tone", "own", "level"}
    assert sorted(step.tally.unarmed_legs) == list(range(8))
    assert np.isnan(step.tally.percentiles_ms()["p99"])


def test_callbridge_loadtest_refuses_a_run_without_a_room(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert callbridge(["loadtest", "--legs", "2", "--room-size", "3"]) == 2
    assert "not even one room of 3 legs" in capsys.readouterr().out
