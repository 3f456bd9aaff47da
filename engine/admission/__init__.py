"""Admission: whether a new call may start, and the counts that decide it.

``gate.py`` says whether this process takes new calls at all (not once it is stopping, not
while its media tick runs late); ``inbound.py`` routes an inbound call through its bridge
(status, ``channels_count``); ``limits.py`` holds the per-organization limits (live legs,
request rate); ``live.py`` counts the live legs per bridge, number and organization.
"""
