"""Listening to a room in the browser: the room's mix, pushed to the page as audio.

``GET /console/api/rooms/{room_id}/audio`` is a server-sent event stream of ``audio`` events,
each about 100 ms of what the whole room says (every member's inbound audio summed, as a
listener who hears everyone would hear it), 16-bit little-endian PCM at 8 kHz in base64, with
its level in dBFS. The console plays them with the Web Audio API (static/console.js).

Nothing is decoded for it on the media path: the console's level meters already keep the frames
each watched leg sends (``engine.media_plane.levels``) and decode them ten times a second; the
hub asks that pass to keep the samples of the members of every room someone listens to, and
``engine.console.room_mix`` sums them. Only a room of the signed-in organization can be listened
to: any other room id is unknown (404), as for the API.
"""

from __future__ import annotations

from aiohttp import web

from engine.console.feed import event_stream
from engine.console.guard import require_session
from engine.console.keys import HUB

__all__ = ["room_audio"]


async def room_audio(request: web.Request) -> web.StreamResponse:
    session = require_session(request)
    # An unknown room, or another organization's, is a 404 before the stream starts.
    listening = request.app[HUB].listen(session.org_id, request.match_info["room_id"])
    return await event_stream(request, session, listening)
