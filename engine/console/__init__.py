"""The operator console at ``/console``: a live view of one organization's calls, and controls.

An operator signs in with one of the organization's API tokens (checked as the API checks it,
``engine.api.auth``); the session lives on the server and the browser holds only its random id in
an HttpOnly, SameSite=Strict cookie, so no script on the page ever sees the token. Every control
is a POST carrying the session's CSRF token in a header, from the console's own origin.

The page (``static/``: preact and htm vendored, the console's own small script) reads one
server-sent event stream (``feed``) that the hub (``hub``) fills for each organization someone
watches: its bridges and numbers, live legs, rooms, per-leg media statistics, each leg's input
level ten times a second (``engine.media_plane.levels``, measured only while a console of that
organization is connected) and the webhooks sent from the outbox. Controls (``controls``) go
through the Call Control API's own parsing and the runtime's ``command``, and each is written
to the audit log in the store.

Modules: ``sessions`` (server-side sessions), ``guard`` (cookie, session, CSRF and origin
checks), ``pages`` (sign-in, sign-out, the page and its assets), ``views`` (what the page is
shown, as JSON), ``hub`` (the per-organization feed), ``feed`` (the event stream), ``controls``
(actions and the audit log), ``routes`` (the composition root's one call: ``install``).
"""
