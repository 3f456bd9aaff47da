"""``callbridge loadtest``: synthetic legs through the provider simulators, every frame checked.

Exit status: 0 when the run passed (no misrouted frame, at most ``--max-loss`` of speaker frames
lost, every leg heard its whole room; for ``--ramp``, the first step passed and no step had a
misrouted frame: the step that crosses a limit ends the ramp and is reported, not failed),
1 when it did not, 2 when it could not run (also when the ``load`` extra, which brings the live
display and the plots, is not installed: the message says how to install it).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.loadtest.engine_host import event_loop_runner
from benchmarks.loadtest.generator import LoadConfig, LoadTest, RunResult
from benchmarks.loadtest.plan import TELNYX_CODECS
from engine.logs import configure_logging

if TYPE_CHECKING:  # the ``load`` extra: imported once ``main`` has checked it is installed
    from rich.console import Console

__all__ = ["build_parser", "main", "run"]


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
    add("--telnyx-codec", choices=TELNYX_CODECS, default="PCMU",
        help="the codec the Telnyx legs' calls negotiated; G722: wideband legs, streamed at "
             "16 kHz (with --provider mixed: mixed-rate rooms)")  # fmt: skip
    add("--duration", type=float, default=10.0, help="seconds measured (per ramp step)")
    add("--ramp", action="store_true", help="add legs step by step until a limit is crossed")
    add("--ramp-step", type=int, default=50, help="legs added per ramp step")
    add("--ramp-max", type=int, default=1000, help="stop the ramp here")
    add("--budget-ms", type=float,
        help="p99 latency budget (default 20 for pairs, 40 for larger rooms and for pairs with "
             "a G722 leg, which callbridge mixes rather than forwards)")  # fmt: skip
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
    add(
        "--generator-core",
        type=int,
        default=1,
        help="one generator process: pin it here with --spawn-engine (-1: do not pin)",
    )
    add(
        "--generator-procs",
        type=int,
        default=1,
        help="spread the legs over this many generator processes (whole rooms each), so that "
        "the engine, not the generator, is the limit; 1: this process generates",
    )
    add(
        "--generator-cores",
        type=_cores,
        help="with --generator-procs: cores to pin them to, round robin, e.g. 1,2,3 "
        "(default: every core but --engine-core's)",
    )
    add("--engine-workers", type=int, default=1,
        help="with --spawn-engine: `callbridge serve --workers N` (N nodes, not pinned) on a "
             "fresh database of --database-url's PostgreSQL server and on --redis-url, behind "
             "a front for the provider webhooks")  # fmt: skip
    add("--pin-workers", action="store_true",
        help="with --engine-workers: pin every worker to --engine-core (they share that "
             "core: per-leg CPU against one node's on the same core)")  # fmt: skip
    add(
        "--database-url",
        default="postgresql://127.0.0.1:5432/test",
        help="with --engine-workers: the PostgreSQL server (a fresh database is made on it)",
    )
    add("--redis-url", default="redis://127.0.0.1:6379/0", help="with --engine-workers")
    add("--engine-loop", choices=("asyncio", "uvloop"), default="asyncio",
        help="with --spawn-engine: the engine's loop (asyncio is `callbridge serve`)")  # fmt: skip
    add("--no-uvloop", action="store_true", help="run this process on the asyncio loop")
    add("--results", type=Path, default=Path("results"), help="where reports go")
    add("--no-live", action="store_true", help="no live display (also when not a terminal)")
    return parser


def _cores(text: str) -> tuple[int, ...]:
    try:
        cores = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of core numbers: {text!r}") from None
    if not cores or min(cores) < 0:
        raise argparse.ArgumentTypeError(f"not a list of core numbers: {text!r}")
    return cores


def config_from(args: argparse.Namespace) -> LoadConfig:
    return LoadConfig(
        legs=args.legs, room_size=args.room_size, provider=args.provider,
        telnyx_codec=args.telnyx_codec,
        duration_s=args.duration, ramp=args.ramp, ramp_step=args.ramp_step,
        ramp_max=args.ramp_max, budget_ms=args.budget_ms, max_loss=args.max_loss,
        setup_rate=args.setup_rate, setup_timeout_s=args.setup_timeout, target=args.target,
        token=args.token, org_handle=args.org_handle, engine_pid=args.engine_pid,
        spawn_engine=args.spawn_engine,
        engine_core=args.engine_core if args.engine_core >= 0 else None,
        generator_core=args.generator_core if args.generator_core >= 0 else None,
        engine_loop=args.engine_loop, generator_procs=args.generator_procs,
        generator_cores=args.generator_cores, engine_workers=args.engine_workers,
        pin_workers=args.pin_workers,
        database_url=args.database_url, redis_url=args.redis_url,
    )  # fmt: skip


LOAD_EXTRA = ("rich", "matplotlib")
INSTALL_HINT = (
    "callbridge loadtest needs the 'load' extra ({missing} is not installed): "
    "pip install 'callbridge[load]' (from a checkout: pip install -e '.[load]')"
)


def missing_extra() -> str | None:
    """The first module of the ``load`` extra that cannot be imported, if any."""
    for module in LOAD_EXTRA:
        try:
            importlib.import_module(module)
        except ImportError:
            return module
    return None


def _load_test(config: LoadConfig, progress: Any, use_uvloop: bool) -> Any:
    """One generator process (this one), or a fleet of them."""
    if config.generator_procs > 1:
        from benchmarks.loadtest.fleet import Fleet

        return Fleet(config, progress, use_uvloop=use_uvloop)
    return LoadTest(config, progress)


async def run(
    config: LoadConfig, console: Console, live: bool, use_uvloop: bool = True
) -> RunResult:
    from rich.live import Live

    from benchmarks.loadtest import report

    if not live:
        last = [0.0]

        def lines(snapshot: dict[str, Any]) -> None:
            if time.monotonic() - last[0] >= 5:
                last[0] = time.monotonic()
                console.print(
                    f"[dim]{snapshot['phase']}: {snapshot['legs_armed']}/"
                    f"{snapshot['legs_placed']} legs hearing their room, "
                    f"{snapshot['frames']:,} frames, {snapshot['lost']} lost, "
                    f"{snapshot['misrouted']} misrouted{report.tick_line(snapshot)}[/dim]"
                )

        result: RunResult = await _load_test(config, lines, use_uvloop).run()
        return result
    with Live(console=console, refresh_per_second=4, transient=True) as display:
        result = await _load_test(
            config, lambda snapshot: display.update(report.progress_table(snapshot)), use_uvloop
        ).run()
        return result


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    missing = missing_extra()
    if missing is not None:
        print(INSTALL_HINT.format(missing=missing), file=sys.stderr)
        return 2
    from rich.console import Console

    from benchmarks.loadtest import report

    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # a log or a pipe: keep the table's columns readable
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
        run_loop = event_loop_runner(not args.no_uvloop)
        result = run_loop(run(config, console, live, not args.no_uvloop))
    except (OSError, RuntimeError, ValueError) as exc:
        console.print(f"callbridge loadtest: could not run: {exc}")
        return 2
    console.print(report.summary_table(result))
    for line in report.node_lines(result):
        console.print(line)
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
