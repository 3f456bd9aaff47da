"""The load test's readings of the engine: tick quantiles from scraped histogram deltas, and
``callbridge loadtest`` without the ``load`` extra."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from benchmarks.loadtest.measures import parse_metrics, quantile, tick_window
from engine.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent


def test_quantiles_interpolate_within_a_bucket_as_prometheus_does() -> None:
    buckets = ((0.001, 50.0), (0.002, 90.0), (0.005, 100.0), (math.inf, 100.0))
    assert quantile(0.5, buckets) == pytest.approx(0.001)
    assert quantile(0.7, buckets) == pytest.approx(0.0015)
    assert quantile(0.99, buckets) == pytest.approx(0.0047)
    assert math.isnan(quantile(0.5, ((0.001, 0.0), (math.inf, 0.0))))
    # Beyond the last finite bound all that can be said is "at least that".
    assert quantile(0.99, ((0.1, 1.0), (math.inf, 10.0))) == 0.1


def test_a_window_reads_only_the_ticks_between_its_two_scrapes() -> None:
    metrics = Metrics()
    for _ in range(1000):
        metrics.observe_tick(0.040, 0.030)  # a bad minute before the window...
    metrics.ticks_skipped(7)
    before = parse_metrics(metrics.render().decode())
    for index in range(100):  # ...then a window of healthy ticks, one slow
        metrics.observe_tick(0.0014 if index else 0.018, 0.0002)
    metrics.ticks_skipped(2)
    after = parse_metrics(metrics.render().decode())
    window = tick_window(before, after)
    assert window is not None
    assert window.ticks == 100
    assert window.skipped == 2
    assert 0.001 < window.duration_p50_ms / 1000 <= 0.0015
    assert window.duration_p99_ms / 1000 <= 0.0015  # 99 of 100 ticks were healthy
    assert window.lateness_p99_ms / 1000 <= 0.0005


def test_an_engine_without_tick_metrics_gives_no_tick_figures() -> None:
    empty = parse_metrics("# nothing here\n")
    assert tick_window(empty, empty) is None
    assert tick_window(None, empty) is None
    idle = parse_metrics(Metrics().render().decode())
    assert tick_window(idle, idle) is None  # no tick ran in the window: nothing to report


# Makes rich and matplotlib unimportable, as in an install without the ``load`` extra.
BLOCKED = textwrap.dedent(
    """
    import sys
    from importlib.abc import MetaPathFinder

    class Blocked(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("rich", "matplotlib"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Blocked())
    from engine.cli import main
    sys.exit(main(["loadtest", "--legs", "4"]))
    """
)


def test_loadtest_without_the_load_extra_says_what_to_install() -> None:
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "pip install 'callbridge[load]'" in done.stderr
    assert "pip install -e '.[load]'" in done.stderr
    assert "rich" in done.stderr


def test_every_step_reports_the_engine_tick_in_table_json_and_live_display() -> None:
    from rich.console import Console

    from benchmarks.loadtest import report
    from benchmarks.loadtest.checker import Tally
    from benchmarks.loadtest.generator import LoadConfig, RunResult, StepResult
    from benchmarks.loadtest.measures import TickWindow
    from benchmarks.loadtest.plan import make_plan

    ticks = TickWindow(ticks=750, duration_p50_ms=1.25, duration_p99_ms=4.5,
                       lateness_p99_ms=0.75, skipped=3)  # fmt: skip
    step = StepResult(
        legs=4, rooms=2, duration_s=15.0, setup_s=1.0, tally=Tally(legs=4),
        engine_cpu_cores=0.2, engine_rss_bytes=2**27, generator_cpu_cores=0.3,
        loop_lag_ms={"p50": 0.1, "p99": 1.0, "max": 2.0}, ticks=ticks,
    )  # fmt: skip
    config = LoadConfig(legs=4)
    result = RunResult(config, make_plan(4, 2, "mixed"), {"mode": "spawned"}, {}, [step], [], [],
                       {})  # fmt: skip
    (step_json,) = report.to_json(result)["steps"]
    assert step_json["engine_tick"] == {"ticks": 750, "duration_p50_ms": 1.25,
                                        "duration_p99_ms": 4.5, "lateness_p99_ms": 0.75,
                                        "skipped": 3}  # fmt: skip
    console = Console(width=250, record=True)
    console.print(report.summary_table(result))
    table = console.export_text()
    assert "tick p50/p99 ms" in table and "1.25/4.50" in table and "0.75" in table
    snapshot = {"phase": "measuring", "window_s": 3.0, "duration_s": 15.0, "legs_placed": 4,
                "legs_streaming": 4, "legs_armed": 4, "frames": 10, "lost": 0, "misrouted": 0,
                "late": 0, "p99_ms": 2.0, "engine_cpu": 0.2, "engine_rss": None,
                "loop_lag_ms": 1.0, "tick": ticks.to_json()}  # fmt: skip
    console.print(report.progress_table(snapshot))
    assert "1.25 / 4.50" in console.export_text()
    assert "tick p50/p99 1.25/4.50 ms" in report.tick_line(snapshot)
    assert report.tick_line({**snapshot, "tick": None}) == ""
