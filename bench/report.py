"""From a run's figures (bench/results/<backend>.json): the table, the targets met or not, the
generated part of BENCHMARKS.md and BENCHMARKS.png. `python bench/report.py RESULTS.json`
re-renders without measuring again."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


@dataclass(frozen=True)
class Goal:
    """`figure` over `against` (or `figure` alone) compared with `bound`."""

    label: str
    figure: str
    against: str | None
    bound: float
    at_least: bool  # True: ≥ bound; False: ≤ bound
    unit: str = ""  # "" for ratios

    def value(self, medians: dict[str, float]) -> float:
        top = medians.get(self.figure, math.nan)
        if self.against is None:
            return top
        bottom = medians.get(self.against, math.nan)
        return top / bottom if bottom else math.nan

    def met(self, value: float) -> bool | None:
        if math.isnan(value):
            return None
        return value >= self.bound if self.at_least else value <= self.bound

    def shown(self, value: float) -> str:
        if math.isnan(value):
            return "not measured"
        return f"{value:.1%}" if not self.unit else f"{value:,.1f} {self.unit}"

    def bound_shown(self) -> str:
        sign = "≥" if self.at_least else "≤"
        return f"{sign} {self.bound:.0%}" if not self.unit else f"{sign} {self.bound:g} {self.unit}"


GOALS = [
    Goal("gateway vs ceiling 1 (raw ASGI POST)", "gateway", "ceiling1", 0.30, True),
    Goal("gateway vs ceiling 2 (bare aiokafka send_and_wait)", "gateway", "ceiling2", 0.70, True),
    Goal("gateway p99 at half its saturation", "gateway.half.p99", None, 10, False, "ms"),
    Goal("end to end p50 (gateway 2xx → GET /users/me)", "e2e.p50", None, 10, False, "ms"),
    Goal("end to end p99", "e2e.p99", None, 25, False, "ms"),
    Goal("live push p99 (gateway 2xx → SSE event)", "live.p99", None, 50, False, "ms"),
    Goal("users worker x1 vs ceiling 3 (getmany)", "worker1", "ceiling3", 0.40, True),
    Goal("users worker x1 vs ceiling 4 (bulk upserts)", "worker1", "ceiling4", 0.85, True),
    Goal("users worker x2 vs ceiling 3", "worker2", "ceiling3", 0.40, True),
    Goal("users worker x2 vs ceiling 4", "worker2", "ceiling4", 0.85, True),
    Goal(
        "users worker flat as the collection grows (slowest / fastest fifth)",
        "growth.min",
        "growth.max",
        0.80,
        True,
    ),
    Goal("GET /users/me vs ceiling 5 (no auth)", "api.me", "ceiling5.me", 0.85, True),
    Goal("GET /videos?numItems=20 vs ceiling 5", "api.videos", "ceiling5.videos", 0.85, True),
    Goal(
        "API /healthz vs ceiling 1 (framework overhead; report only)",
        "api.healthz",
        "ceiling1.healthz",
        0.0,
        True,
    ),
    Goal("backlog drain vs ingest rate", "backlog.drain", "backlog.ingest", 10, True, "x"),
]


def medians_of(run: dict[str, Any]) -> dict[str, float]:
    medians = {k: float(f["median"]) for k, f in run["figures"].items()}
    growth = [v for k, v in medians.items() if k.startswith("worker1.growth")]
    if growth:
        medians["growth.min"], medians["growth.max"] = min(growth), max(growth)
    return medians


def table(run: dict[str, Any]) -> str:
    lines = [
        "| figure | median | min | max |",
        "| --- | ---: | ---: | ---: |",
    ]
    for figure in run["figures"].values():
        name = f"{figure['name']} ({note})" if (note := figure.get("note")) else figure["name"]
        if math.isnan(figure["median"]):
            lines.append(f"| {name} | not measured | | |")
            continue
        lines.append(
            f"| {name} | {figure['median']:,.1f} {figure['unit']} | "
            f"{figure['min']:,.1f} | {figure['max']:,.1f} |"
        )
    return "\n".join(lines)


def goals_table(run: dict[str, Any]) -> str:
    medians = medians_of(run)
    lines = ["| target | measured | goal | met |", "| --- | ---: | ---: | :---: |"]
    for goal in GOALS:
        value = goal.value(medians)
        met = goal.met(value)
        verdict = "—" if met is None or goal.bound == 0 else ("yes" if met else "**no**")
        bound = "report" if goal.bound == 0 else goal.bound_shown()
        if goal.unit == "x" and not math.isnan(value):
            shown = f"{value:.1f}x"
        else:
            shown = goal.shown(value)
        lines.append(f"| {goal.label} | {shown} | {bound} | {verdict} |")
    return "\n".join(lines)


def load_note(run: dict[str, Any]) -> str:
    """The run's length and the machine's load average around it (runs recorded before
    these were kept have neither)."""
    if "load" not in run:
        return ""
    start, end = run["load"]
    return (
        f" The run took {run['minutes']:g} min; the 1-minute load average was {start:g} at its "
        f"start and {end:g} at its end."
    )


def section(run: dict[str, Any]) -> str:
    settings = run["settings"]
    return "\n".join(
        [
            f"### Backend: {run['backend']} — {run['backend_description']}",
            "",
            f"Run started {run['started']} on {run['machine']}; {run['cpus']}. Each figure: "
            f"{settings['repeats']} runs of {settings['seconds']:g} s after a "
            f"{settings['warmup']:g} s warm-up (workers: {settings['events']:,} events per run); "
            f"gateway concurrency {settings['concurrency']}, API concurrency "
            f"{settings['api_concurrency']}; end to end at {settings['e2e_rate']:g} events/s."
            + load_note(run),
            "",
            "Ratios and targets (medians):",
            "",
            goals_table(run),
            "",
            "Raw figures:",
            "",
            table(run),
        ]
    )


def chart(runs: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratio_goals = [g for g in GOALS if g.against is not None and g.unit == "" and g.bound > 0]
    fig, axes = plt.subplots(
        len(runs), 1, figsize=(10, 0.45 * len(ratio_goals) * len(runs) + 1.5), squeeze=False
    )
    for axis, run in zip(axes[:, 0], runs, strict=True):
        medians = medians_of(run)
        labels = [g.label for g in ratio_goals]
        values = [g.value(medians) for g in ratio_goals]
        colors = [
            "tab:green" if g.met(v) else "tab:red" for g, v in zip(ratio_goals, values, strict=True)
        ]
        y = range(len(labels))
        axis.barh(list(y), [0 if math.isnan(v) else v * 100 for v in values], color=colors)
        axis.scatter(
            [g.bound * 100 for g in ratio_goals],
            list(y),
            marker="|",
            s=300,
            color="black",
            label="target",
        )
        axis.set_yticks(list(y), labels, fontsize=8)
        axis.invert_yaxis()
        axis.set_xlabel("% of ceiling (median)")
        axis.set_title(f"{run['backend']}: {run['backend_description']}", fontsize=9)
        axis.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def render(repo: Path, latest: Path) -> str:
    """Rewrite BENCHMARKS.md's generated part from every backend's latest results, draw the
    chart, and answer the latest run's section."""
    results = sorted((repo / "bench" / "results").glob("*.json"))
    runs = [json.loads(p.read_text()) for p in results]
    generated = "\n\n".join(section(run) for run in runs)
    doc = repo / "BENCHMARKS.md"
    text = doc.read_text() if doc.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    chart_line = "![ratios against the targets](BENCHMARKS.png)"
    doc.write_text(f"{head}{BEGIN}\n{chart_line}\n\n{generated}\n{END}{tail}")
    chart(runs, repo / "BENCHMARKS.png")
    return section(json.loads(latest.read_text()))


if __name__ == "__main__":
    path = Path(sys.argv[1])
    print(render(Path(__file__).resolve().parent.parent, path))
