"""The call machine: callbridge's sans-I/O state machine and its vocabulary.

Events (provider-side facts) and commands (validated Call Control actions) go in, effects
(provider calls, mixer membership, webhooks, timers) come out; no asyncio, no sockets, no
clock of its own. ``machine.py`` is the facade (``CallMachine``), ``transitions.py`` the one
table of legal leg-state changes, ``model.py`` the records it keeps, and ``core.py``,
``actions.py``, ``legs.py``, ``media.py``, ``queues.py``, ``leg_setup.py`` and ``streams.py``
its parts; ``live_changes.py`` says what one input changed, for the store.
"""
