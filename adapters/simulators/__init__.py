"""Faithful fakes of the telephony providers, for tests, the demo and the load generator.

Each simulator is a real HTTP server on 127.0.0.1 (the provider's REST subset callbridge calls)
plus a call side that sends the provider's signed webhooks and dials the media websocket exactly
as the provider does. Nothing here stands in for callbridge's own code, and nothing here uses
it: signatures, webhook envelopes, TwiML and codecs are the simulators' own (``wire``, ``twiml``,
``codecs``), checked against the providers' SDKs (tests/test_simulator_sdk_crosscheck.py) and
kept apart by tests/test_simulator_independence.py, so a mistake in callbridge cannot hide by
being made twice.
"""

from adapters.simulators.audio import (
    SilenceSource,
    ToneSource,
    WavSource,
    dominant_frequencies,
    dtmf_frames,
    noise_floor_db,
    rms_dbfs,
    tone_level_db,
)
from adapters.simulators.common import JUNK_KINDS, Callee, CallEnded, CallState, SimulatedCall
from adapters.simulators.pacing import Impairments
from adapters.simulators.telnyx_calls import TelnyxCall, WebhookFaults
from adapters.simulators.telnyx_rest import TelnyxSimulator
from adapters.simulators.twilio_calls import TwilioCall
from adapters.simulators.twilio_rest import TwilioSimulator

__all__ = [
    "JUNK_KINDS",
    "CallEnded",
    "CallState",
    "Callee",
    "Impairments",
    "SilenceSource",
    "SimulatedCall",
    "TelnyxCall",
    "TelnyxSimulator",
    "ToneSource",
    "TwilioCall",
    "TwilioSimulator",
    "WavSource",
    "WebhookFaults",
    "dominant_frequencies",
    "dtmf_frames",
    "noise_floor_db",
    "rms_dbfs",
    "tone_level_db",
]
