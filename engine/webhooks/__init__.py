"""Outgoing call-control webhooks: Telnyx-shaped, signed, persisted, retried, in order per leg.

``outbox.py`` (``WebhookOutbox``) stores each webhook before it is sent and runs the sending
loop; ``delivery.py`` makes one attempt and schedules the next; ``signing.py`` holds each
organization's Ed25519 signing keys and signs in Telnyx's scheme.
"""
