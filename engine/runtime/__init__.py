"""The runtime: the asyncio shell that runs the call machine.

``CallRuntime`` (``runtime.py``) feeds inputs to the machine one at a time, commits each one to
the store, carries out its effects (through the media plane, the provider lanes and the
webhook outbox) and adopts the stored calls at start; ``timers.py`` fires the machine's timers,
``ids.py`` mints leg and room ids, ``recording_lifecycle.py`` closes and catalogues recordings
and keeps those in progress across a restart, and ``lifecycle.py`` says how a process leaves.
"""
