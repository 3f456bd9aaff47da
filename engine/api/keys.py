"""Typed application keys: the one place the composition root's parts are named."""

from __future__ import annotations

from aiohttp import web

from engine.admission.gate import Admission
from engine.admission.live import LiveLegs
from engine.cluster.handover import LegMover
from engine.cluster.node_auth import NodeAuth
from engine.cluster.routing import CallRouter
from engine.config import Settings
from engine.crypto import SecretBox
from engine.metrics import Metrics
from engine.providers.provisioning import NumberProvisioner
from engine.runtime.runtime import CallRuntime
from engine.store.base import Store
from engine.webhooks.signing import OrgSigningKeys

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
SECRET_BOX = web.AppKey("secret_box", SecretBox)
LIVE_LEGS = web.AppKey("live_legs", LiveLegs)
METRICS = web.AppKey("metrics", Metrics)
PROVISIONER = web.AppKey("provisioner", NumberProvisioner)
RUNTIME = web.AppKey("runtime", CallRuntime)
SIGNING_KEYS = web.AppKey("signing_keys", OrgSigningKeys)
ADMISSION = web.AppKey("admission", Admission)
ROUTER = web.AppKey("router", CallRouter)  # which node carries out a call command
# Several nodes only: legs moved between nodes, and the nodes' own requests signed.
MOVER = web.AppKey("mover", LegMover)
NODE_AUTH = web.AppKey("node_auth", NodeAuth)
