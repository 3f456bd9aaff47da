"""Several nodes on one store and one Redis: which node owns each leg, and call commands carried
to it (issue 16, points 2 and 4).

``owners.py`` is the interface (``LegOwners``, ``SoleNode`` for one node without Redis);
``owners_redis.py`` reads owners from the Redis live-leg registry (engine/admission/);
``forward.py`` carries a request to its owner; ``routing.py`` decides where a command goes.
"""
