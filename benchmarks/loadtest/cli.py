"""``callbridge loadtest``: synthetic legs through the provider simulators, every frame checked.

Exit status: 0 when the run passed (no misrouted frame, at most ``--max-loss`` of speaker frames
lost, every leg heard its whole room; for ``--ramp``, the first step passed and no step had a
misrouted frame: the step that crosses a limit ends the ramp and is reported, not failed),
1 when it did not, 2 when it could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.live import Live

from benchmarks.loadtest import report
from benchmarks.loadtest.generator import LoadConfig, LoadTest, RunResult
from engine.logs import configure_logging

__all__ = ["build_parser", "main", "run"]

T = TypeVar("T")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="callbridge loadtest",
        description="Place synthetic legs through the Twilio and Telnyx simulators into rooms, "
        "stream a tone per leg at real time and check every received frame on the audio.",
    )
    add = parser.add_argument
    add("--legs", type=int, default=20, help="concurrent legs (rounded down to whole rooms)")
    add("--room-size", type=int, default=2,
        help="2: pairs bridged by a small application through the Call Control API; "
             "more: conference rooms (one bridge without webhook_url per room)")  # fmt: skip
    add("--provider", choices=("twilio", "telnyx", "mixed"), default="mixed",
        help="mixed: seats alternate Twilio and Telnyx, so pairs are cross-provider")  # fmt: skip
    add("--duration", type=float, default=10.0, help="seconds measured (per ramp step)")
    add("--ramp", action="store_true", help="add legs step by step until a limit is crossed")
    add("--ramp-step", type=int, default=50, help="legs added per ramp step")
    add("--ramp-max", type=int, default=1000, help="stop the ramp here")
    add("--budget-ms", type=float, help="p99 latency budget (default 20 for pairs, else 40)")
    add("--max-loss", type=float, default=0.001, help="lost share that fails a run (0.001)")
    add("--setup-rate", type=float, default=50.0, help="legs placed per second")
    add("--setup-timeout", type=float, default=60.0, help="seconds for rooms to come together")
    add("--target", help="an engine already running on this host, e.g. http://127.0.0.1:8080")
    add("--token", help="with --target: an API token of the organization to use")
    add("--org-handle", help="with --target: that organization's handle")
    add("--engine-pid", type=int, help="with --target: its process id, to read its CPU")
    add("--spawn-engine", action="store_true",
        help="run `callbridge serve` as a child pinned to --engine-core; this process pins "
             "itself to --generator-core")  # fmt: skip
    add("--engine-core", type=int, default=0, help="-1: do not pin the engine")
    add("--generator-core", type=int, default=1, help="-1: do not pin this process")
    add("--engine-loop", choices=("asyncio", "uvloop"), default="asyncio",
        help="with --spawn-engine: the engine's loop (asyncio is `callbridge serve`)")  # fmt: skip
    add("--no-uvloop", action="store_true", help="run this process on the asyncio loop")
    add("--results", type=Path, default=Path("results"), help="where reports go")
    add("--no-live", action="store_true", help="no live display (also when not a terminal)")
    return parser


def config_from(args: argparse.Namespace) -> LoadConfig:
    return LoadConfig(
        legs=args.legs, room_size=args.room_size, provider=args.provider,
        duration_s=args.duration, ramp=args.ramp, ramp_step=args.ramp_step,
        ramp_max=args.ramp_max, budget_ms=args.budget_ms, max_loss=args.max_loss,
        setup_rate=args.setup_rate, setup_timeout_s=args.setup_timeout, target=args.target,
        token=args.token, org_handle=args.org_handle, engine_pid=args.engine_pid,
        spawn_engine=args.spawn_engine,
        engine_core=args.engine_core if args.engine_core >= 0 else None,
        generator_core=args.generator_core if args.generator_core >= 0 else None,
        engine_loop=args.engine_loop,
    )  # fmt: skip


def _runner(use_uvloop: bool) -> Callable[[Coroutine[Any, Any, T]], T]:
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            return asyncio.run
        return uvloop.run
    return asyncio.run


async def run(config: LoadConfig, console: Console, live: bool) -> RunResult:
    if not live:
        last = [0.0]

        def lines(snapshot: dict[str, Any]) -> None:
            if time.monotonic() - last[0] >= 5:
                last[0] = time.monotonic()
                console.print(
                    f"[dim]{snapshot['phase']}: {snapshot['legs_armed']}/"
                    f"{snapshot['legs_placed']} legs hearing their room, "
                    f"{snapshot['frames']:,} frames, {snapshot['lost']} lost, "
                    f"{snapshot['misrouted']} misrouted[/dim]"
                )

        return await LoadTest(config, lines).run()
    with Live(console=console, refresh_per_second=4, transient=True) as display:
        return await LoadTest(
            config, lambda snapshot: display.update(report.progress_table(snapshot))
        ).run()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=170)  # a log or a pipe: keep the table's columns readable
    try:
        config = config_from(args)
        config.steps()
    except ValueError as exc:
        console.print(f"callbridge loadtest: {exc}")
        return 2
    live = not args.no_live and console.is_terminal
    # An engine in this process logs here: only errors, so the display stays readable.
    configure_logging("console", "error")
    try:
        result = _runner(not args.no_uvloop)(run(config, console, live))
    except (OSError, RuntimeError, ValueError) as exc:
        console.print(f"callbridge loadtest: could not run: {exc}")
        return 2
    console.print(report.summary_table(result))
    folder = report.run_folder(args.results)
    for path in report.write(result, folder):
        console.print(f"wrote {path}")
    if result.config.ramp:
        console.print(f"highest sustained: {result.sustained_legs} legs")
    verdict = "PASS" if result.passed else "FAIL"
    console.print(f"{verdict}: {result.misrouted} misrouted frames; see {folder / 'report.json'}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
