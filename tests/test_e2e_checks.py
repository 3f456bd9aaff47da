"""The checks every end-to-end test gets from ``tests/e2e_checks.py`` must be able to fail:
the teardown check for simulator protocol errors, run on small suites of its own (pytester)."""

from __future__ import annotations

import pytest

CONFTEST = """
from tests.conftest import no_unexpected_protocol_errors  # the fixture under test
"""

SUITE = """
import pytest
from adapters.simulators import SilenceSource, SimulatedCall, TwilioSimulator
from adapters.simulators.pacing import NO_IMPAIRMENTS
from tests.e2e_checks import watch


def simulator_with_a_call(code):
    sim = TwilioSimulator()  # never started: only its record of calls is read
    call = SimulatedCall(
        direction="inbound", from_="+15550001", to="+15550002", source=SilenceSource(),
        impairments=NO_IMPAIRMENTS,
    )
    sim.calls["CA1"] = call
    watch(sim)
    if code is not None:
        call.add_protocol_error(code, "refused", "{}")


def test_clean():
    simulator_with_a_call(None)


def test_an_error():
    simulator_with_a_call("31951")


@pytest.mark.expect_protocol_errors("31951")
def test_an_expected_error():
    simulator_with_a_call("31951")


@pytest.mark.expect_protocol_errors("31951")
def test_another_code_than_expected():
    simulator_with_a_call("31920")


@pytest.mark.expect_protocol_errors("31951")
def test_an_expected_error_that_never_came():
    simulator_with_a_call(None)
"""


def test_protocol_errors_fail_a_test_at_teardown_unless_declared(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        "markers =\n    expect_protocol_errors(*codes): declared\n"
    )
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_inprocess("-p", "no:randomly", "--strict-markers")
    result.assert_outcomes(passed=5, errors=3)
    result.stdout.fnmatch_lines(
        [
            "E * AssertionError: the simulators recorded protocol errors: *'31951', 'refused')]",
            "E * AssertionError: the simulators recorded protocol errors: *'31920', 'refused')]",
            "E * AssertionError: expected protocol errors ?'31951'?, none were recorded",
        ]
    )
