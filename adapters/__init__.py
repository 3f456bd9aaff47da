"""Everything provider-specific: Twilio, Telnyx, websocket agents, and simulators of each."""
