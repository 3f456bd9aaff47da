"""What a load test shows: a live progress panel, a final table, a JSON report and PNG plots.

Every step shows the engine's media tick over its window (duration p50/p99, lateness p99,
skipped ticks: ``measures.py``), "-" when the engine does not export it.

``write`` puts ``report.json``, ``latency.png`` (histogram of engine-added latency per step) and,
for a ramp, ``ramp.png`` (legs vs engine CPU and vs p99 latency) into one folder per run.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from rich.table import Table

from benchmarks.loadtest.generator import RunResult, StepResult

__all__ = [
    "node_lines", "progress_table", "run_folder", "run_title", "summary_table", "tick_line",
    "to_json", "write",
]  # fmt: skip


def _ms(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1f}"


def _cores(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _tick_cells(tick: dict[str, Any] | None) -> tuple[str, str, str, str]:
    """Tick duration p50, p99, lateness p99 (ms) and skipped ticks, as table cells."""
    if tick is None:
        return "-", "-", "-", "-"
    return (
        f"{tick['duration_p50_ms']:.2f}", f"{tick['duration_p99_ms']:.2f}",
        f"{tick['lateness_p99_ms']:.2f}", f"{tick['skipped']:,}",
    )  # fmt: skip


def _tick_columns(step: StepResult) -> tuple[str, str, str]:
    p50, p99, late, skipped = _tick_cells(step.ticks.to_json() if step.ticks else None)
    return (f"{p50}/{p99}" if p50 != "-" else "-"), late, skipped


def tick_line(snapshot: dict[str, Any]) -> str:
    """The engine's tick in the last second, for a progress line (empty when unknown)."""
    p50, p99, late, skipped = _tick_cells(snapshot.get("tick"))
    if p50 == "-":
        return ""
    return f", tick p50/p99 {p50}/{p99} ms, lateness p99 {late} ms, {skipped} skipped"


def progress_table(snapshot: dict[str, Any]) -> Table:
    table = Table(title="callbridge load test", show_header=False, expand=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    window = snapshot["window_s"]
    phase = snapshot["phase"]
    if window is not None:
        phase = f"{phase} {window:.0f}/{snapshot['duration_s']:.0f} s"
    rows = [
        ("phase", phase),
        ("legs placed / streaming / hearing their room",
         f"{snapshot['legs_placed']} / {snapshot['legs_streaming']} / {snapshot['legs_armed']}"),
        ("frames checked (this window)", f"{snapshot['frames']:,}"),
        ("speaker frames lost", f"{snapshot['lost']:,}"),
        ("misrouted frames", f"{snapshot['misrouted']:,}"),
        ("late frames", f"{snapshot['late']:,}"),
        ("latency p99, recent (ms)", _ms(snapshot["p99_ms"])),
        ("engine CPU", _cores(snapshot["engine_cpu"])),
        ("engine RSS (MB)", "-" if snapshot["engine_rss"] is None
         else f"{snapshot['engine_rss'] / 2**20:.0f}"),
        ("engine tick p50 / p99, last second (ms)",
         " / ".join(_tick_cells(snapshot.get("tick"))[:2])),
        ("engine tick lateness p99 (ms) / skipped ticks",
         " / ".join(_tick_cells(snapshot.get("tick"))[2:])),
        ("event-loop lag, recent max (ms)", _ms(snapshot["loop_lag_ms"])),
    ]  # fmt: skip
    if "generators" in snapshot:
        rows.append(("generator processes reporting", snapshot["generators"]))
    for name, value in rows:
        table.add_row(name, value)
    return table


def step_json(step: StepResult) -> dict[str, Any]:
    tally = step.tally
    return {
        "legs": step.legs,
        "rooms": step.rooms,
        "duration_s": round(step.duration_s, 3),
        "setup_s": round(step.setup_s, 3),
        "frames_received": tally.frames_received,
        "frames_checked": tally.frames_checked,
        "gap_frames": tally.gap_frames,
        "late_frames": tally.late_frames,
        "misrouted_frames": tally.misrouted_frames,
        "misrouted_by_reason": tally.misrouted_by_reason,
        "speaker_frames_expected": tally.speaker_frames_expected,
        "speaker_frames_lost": tally.speaker_frames_lost,
        "speaker_frames_duplicated": tally.speaker_frames_duplicated,
        "loss_ratio": tally.loss_ratio,
        "markers": tally.markers,
        "unarmed_legs": tally.unarmed_legs,
        "latency_ms": tally.percentiles_ms(),
        "latency_samples": int(tally.latencies().size),
        "latency_p99_ms_by_second": [
            {"t": t, "p99": round(p99, 2), "n": n} for t, p99, n in tally.p99_by_second()
        ],
        "engine_cpu_cores": step.engine_cpu_cores,
        "engine_cpu_per_leg_pct": None if step.engine_cpu_cores is None
        else step.engine_cpu_cores * 100 / max(1, step.legs),
        "engine_rss_mb": None if step.engine_rss_bytes is None
        else step.engine_rss_bytes / 2**20,
        "generator_cpu_cores": step.generator_cpu_cores,
        "generator_realtime": step.realtime,
        "generator_procs": step.generators,
        "loop_lag_ms": step.loop_lag_ms,
        "engine_tick": step.ticks.to_json() if step.ticks is not None else None,
        "engine_nodes": [node.to_json() for node in step.nodes],
        "passed": step.passed,
        "failures": step.failures,
        "misroute_examples": [
            {"listener": m.listener, "arrival": m.arrival, "reason": m.reason, "detail": m.detail}
            for m in tally.examples
        ],
    }  # fmt: skip


def to_json(result: RunResult) -> dict[str, Any]:
    config = result.config
    plan = result.plan
    return {
        "command": "callbridge loadtest",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {
            "legs": config.legs, "room_size": config.room_size, "provider": config.provider,
            "telnyx_codec": config.telnyx_codec,
            "duration_s": config.duration_s, "ramp": config.ramp, "ramp_step": config.ramp_step,
            "ramp_max": config.ramp_max, "budget_ms": config.budget_s * 1000,
            "max_loss": config.max_loss, "setup_rate": config.setup_rate,
            "generator_procs": config.generator_procs,
            "generator_cores": list(config.generator_cores or []) or None,
        },
        "engine": result.engine,
        "environment": result.environment,
        "plan": {
            "legs": len(plan.legs), "room_size": plan.room_size,
            "codecs": {codec: sum(leg.codec == codec for leg in plan.legs)
                       for codec in sorted({leg.codec for leg in plan.legs})},
            "wideband_rooms": sum(plan.wideband_rooms()),
            "marker_period_frames": plan.marker_period,
            "unique_identities": plan.unique_identities,
            "frequencies_hz": sorted({leg.freq_hz for leg in plan.legs}),
            "levels_dbfs": sorted({round(leg.level_dbfs, 2) for leg in plan.legs}),
        },
        "steps": [step_json(step) for step in result.steps],
        "sustained_legs": result.sustained_legs,
        "passed": result.passed,
        "app_errors": result.app_errors[:50],
        "engine_counters": result.engine_counters,
    }  # fmt: skip


def summary_table(result: RunResult) -> Table:
    table = Table(title=f"callbridge load test: {run_title(result)}, engine "
                  f"{result.engine['mode']}, {result.config.generator_procs} generator "
                  "process(es)")  # fmt: skip
    columns = "legs,setup s,frames,lost,misrouted,late,p50 ms,p95 ms,p99 ms,max ms,engine CPU"
    columns += ",CPU/leg,RSS MB,tick p50/p99 ms,tick late p99 ms,skipped ticks"
    columns += ",gen CPU,gen real time,gen lag p99 ms,verdict"
    for name in columns.split(","):
        table.add_column(name, justify="right")
    for step in result.steps:
        tally = step.tally
        pct = tally.percentiles_ms()
        cpu = step.engine_cpu_cores
        table.add_row(
            str(step.legs), f"{step.setup_s:.1f}", f"{tally.frames_received:,}",
            f"{tally.speaker_frames_lost:,} ({tally.loss_ratio:.3%})",
            f"{tally.misrouted_frames:,}", f"{tally.late_frames:,}",
            _ms(pct["p50"]), _ms(pct["p95"]), _ms(pct["p99"]), _ms(pct["max"]),
            _cores(cpu), "-" if cpu is None else f"{cpu * 100 / max(1, step.legs):.2f}%",
            "-" if step.engine_rss_bytes is None else f"{step.engine_rss_bytes / 2**20:.0f}",
            *_tick_columns(step),
            _cores(step.generator_cpu_cores), f"{step.realtime:.1%}",
            _ms(step.loop_lag_ms["p99"]),
            "pass" if step.passed else "FAIL: " + "; ".join(step.failures),
        )  # fmt: skip
    return table


def node_lines(result: RunResult) -> list[str]:
    """Per step of a run on several nodes, each node's legs and CPU (its own ``/metrics``)."""
    lines = []
    for step in result.steps:
        for index, node in enumerate(step.nodes):
            pct = node.cpu_per_leg_pct
            per_leg = "-" if pct is None else f"{pct:.2f}%"
            lines.append(f"{step.legs} legs, node {index + 1}: {node.legs} legs, CPU "
                         f"{node.cpu_cores:.1%} ({per_leg} per leg)")  # fmt: skip
    return lines


def run_title(result: RunResult) -> str:
    """Providers, the Telnyx legs' codec (when there are Telnyx legs) and room size."""
    config = result.config
    codec = "" if config.provider == "twilio" else f" (Telnyx {config.telnyx_codec})"
    return f"{config.provider}{codec}, rooms of {config.room_size}"


def run_folder(results_dir: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = results_dir / f"loadtest-{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write(result: RunResult, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "report.json"]
    written[0].write_bytes(orjson.dumps(to_json(result), option=orjson.OPT_INDENT_2))
    if result.engine_log is not None:  # why a spawned engine refused or dropped calls, if it did
        written.append(folder / "engine.log")
        written[-1].write_bytes(result.engine_log)
    import matplotlib

    matplotlib.use("Agg")
    written.append(_latency_plot(result, folder / "latency.png"))
    if len(result.steps) > 1:
        written.append(_ramp_plot(result, folder / "ramp.png"))
    return written


def _latency_plot(result: RunResult, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure, (axis, timeline) = plt.subplots(
        1, 2, figsize=(12, 4.5), dpi=110, gridspec_kw={"width_ratios": [3, 2]}
    )
    budget = result.config.budget_s * 1000
    steps = result.steps[-4:]  # the last few steps of a ramp, or the one step of a run
    top = max((float(np.max(s.tally.latencies())) * 1000 for s in steps
               if s.tally.latencies().size), default=budget)  # fmt: skip
    bins = np.linspace(0, max(top, budget) * 1.05, 80).tolist()
    for step in steps:
        values = step.tally.latencies() * 1000
        if values.size:
            p99 = step.tally.percentiles_ms()["p99"]
            label = f"{step.legs} legs (p99 {p99:.1f} ms)"
            axis.hist(values, bins=bins, histtype="step", linewidth=1.5, label=label)
            series = step.tally.p99_by_second()
            timeline.plot([t for t, _p, _n in series], [p for _t, p, _n in series],
                          marker=".", label=f"{step.legs} legs")  # fmt: skip
    for panel in (axis, timeline):
        panel.grid(alpha=0.3)
    axis.axvline(budget, color="red", linestyle="--", label=f"budget {budget:g} ms")
    axis.set_yscale("log")
    axis.set_xlabel("engine-added latency per speaker frame (ms): arrival - send")
    axis.set_ylabel("speaker frames")
    axis.legend()
    timeline.axhline(budget, color="red", linestyle="--")
    timeline.set_xlabel("seconds into the measurement window")
    timeline.set_ylabel("p99 latency in that second (ms)")
    timeline.set_title("p99 over time (a stall shows as a spike)", fontsize=10)
    timeline.legend()
    figure.suptitle(f"callbridge load test: {run_title(result)}, engine "
                    f"{result.engine['mode']}")  # fmt: skip
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def _ramp_plot(result: RunResult, path: Path) -> Path:
    import matplotlib.pyplot as plt

    legs = [s.legs for s in result.steps]
    cpu = [np.nan if s.engine_cpu_cores is None else s.engine_cpu_cores * 100
           for s in result.steps]  # fmt: skip
    p99 = [s.tally.percentiles_ms()["p99"] for s in result.steps]
    loss = [s.tally.loss_ratio * 100 for s in result.steps]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=110)
    left.plot(legs, cpu, marker="o")
    left.axhline(100, color="grey", linestyle=":", label="one core")
    left.set_xlabel("concurrent legs")
    left.set_ylabel("engine CPU (% of one core)")
    left.set_title("engine CPU")
    left.legend()
    left.grid(alpha=0.3)
    right.plot(legs, p99, marker="o", label="p99 latency")
    right.axhline(result.config.budget_s * 1000, color="red", linestyle="--", label="budget")
    right.set_xlabel("concurrent legs")
    right.set_ylabel("ms")
    twin = right.twinx()
    twin.plot(legs, loss, marker="x", color="tab:orange", label="lost %")
    twin.set_ylabel("speaker frames lost (%)")
    twin.set_ylim(0, max(0.2, *loss) * 1.2)
    right.set_title("p99 engine-added latency and loss")
    right.legend(loc="upper left")
    twin.legend(loc="upper right")
    right.grid(alpha=0.3)
    figure.suptitle(f"callbridge ramp: {run_title(result)}, engine {result.engine['mode']}; "
                    f"sustained {result.sustained_legs} legs")  # fmt: skip
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
