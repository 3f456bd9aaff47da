"""The engine's side of the telephony providers, without naming any of them.

The seams the adapters implement (``gateway.py``: calls; ``provisioning.py``: numbers), the
catalog of providers callbridge speaks to (``catalog.py``), and how provider calls are carried
out: retried within a budget (``calls.py``), in order per leg (``lanes.py``), and checked
against what the provider knows (``reconcile.py``). Provider-specific code lives in adapters/.
"""
