"""The engine/forwarder CPU ratio benchmark's parts (``benchmarks/bench_forwarder.py`` runs them).

One generator drives the same Telnyx media traffic first through a spawned ``callbridge serve``
(legs answered and bridged in pairs through the Call Control API) and then through a bare
forwarder (``server.py``: aiohttp + uvloop + orjson), each pinned to the same core, and the CPU
each spends per leg per 20 ms tick is compared.

- ``frames.py``    the Telnyx frames the generator sends, pre-rendered (shape: the simulator's)
- ``lean_legs.py`` the generator's websockets: one pacer for every leg, one reader per leg
- ``server.py``    the bare forwarder (``python -m benchmarks.forwarder``)
- ``servers.py``   the two servers under test and how each hands out its legs' streams
- ``measure.py``   one measured step: warm-up, window, CPU from ``/proc``, real-time check
"""
