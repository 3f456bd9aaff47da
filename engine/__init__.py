"""callbridge call-control core: state machine, runtime, HTTP APIs and storage."""
