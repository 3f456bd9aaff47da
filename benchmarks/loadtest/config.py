"""A load test's configuration (``LoadConfig``: what ``callbridge loadtest``'s options say) and
the plan it runs (``plan_of``), shared by the generator, the fleet and its worker processes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from benchmarks.loadtest.plan import WIDEBAND, Plan, ProviderChoice, TelnyxCodec, make_plan

__all__ = ["LoadConfig", "plan_of"]


@dataclass(frozen=True)
class LoadConfig:
    legs: int = 20
    room_size: int = 2
    provider: ProviderChoice = "mixed"
    telnyx_codec: TelnyxCodec = "PCMU"  # what the Telnyx legs' calls negotiated (plan.py)
    duration_s: float = 10.0
    ramp: bool = False
    ramp_step: int = 50
    ramp_max: int = 1000
    # Default: 20 ms for pairs, 40 ms for larger rooms and for wideband pairs, whose audio goes
    # through the mixer's tick as a room's does (callbridge forwards only same-rate pairs).
    budget_ms: float | None = None
    max_loss: float = 0.001
    setup_rate: float = 50.0
    setup_timeout_s: float = 30.0
    settle_s: float = 1.0
    batch_s: float = 0.1
    target: str | None = None
    token: str | None = None
    org_handle: str | None = None
    engine_pid: int | None = None
    spawn_engine: bool = False
    engine_core: int | None = 0
    generator_core: int | None = 1
    engine_loop: str = "asyncio"
    generator_procs: int = 1  # more: that many child processes share the legs (fleet.py)
    generator_cores: tuple[int, ...] | None = None  # None: every core but the engine's
    # More than 1: `serve --workers` (several nodes) on PostgreSQL and Redis (engine_host.py).
    engine_workers: int = 1
    pin_workers: bool = False  # the workers all pinned to engine_core (else not pinned)
    database_url: str = "postgresql://127.0.0.1:5432/test"  # its server gets a fresh database
    redis_url: str = "redis://127.0.0.1:6379/0"
    bridge_options: Mapping[str, Any] = field(default_factory=dict)
    keep_calls: bool = False  # leave the calls up at the end (the caller hangs up)

    @property
    def budget_s(self) -> float:
        budget = self.budget_ms
        if budget is None:
            forwarded = self.room_size == 2 and not (
                self.provider != "twilio" and self.telnyx_codec in WIDEBAND
            )
            budget = 20.0 if forwarded else 40.0
        return budget / 1000

    def steps(self) -> list[int]:
        """Legs in each step (whole rooms); ``ValueError`` when not even one room fits."""
        if self.room_size < 2:
            raise ValueError("--room-size must be at least 2")
        if not self.ramp:
            steps = [self.legs - self.legs % self.room_size]
        else:
            step = max(self.room_size, self.ramp_step - self.ramp_step % self.room_size)
            steps = list(range(step, self.ramp_max + 1, step))
        if not steps or steps[0] < self.room_size:
            raise ValueError(f"not even one room of {self.room_size} legs to run")
        if self.generator_procs < 1:
            raise ValueError("--generator-procs must be at least 1")
        if self.engine_workers < 1 or (self.engine_workers > 1 and not self.spawn_engine):
            raise ValueError("--engine-workers runs `serve --workers`: with --spawn-engine")
        if self.pin_workers and (self.engine_workers < 2 or self.engine_core is None):
            raise ValueError("--pin-workers needs --engine-workers 2 or more and --engine-core")
        if steps[0] < self.generator_procs * self.room_size:
            raise ValueError(
                f"{self.generator_procs} generator processes need at least one room each: "
                f"{self.generator_procs * self.room_size} legs in the first step"
            )
        return steps


def plan_of(config: LoadConfig) -> Plan:
    """The whole run's plan (its last step's legs): the same in every generator process."""
    return make_plan(
        config.steps()[-1], config.room_size, config.provider, telnyx_codec=config.telnyx_codec
    )
