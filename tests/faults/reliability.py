"""What the fault-injection scenarios recorded, and RELIABILITY.md rendered from it.

Each scenario of tests/faults writes what it injected, what it observed and its counts into
`.data/faults/<backend>.json` as it ends (passed or failed); `python tests/faults/reliability.py`
renders every backend's file into RELIABILITY.md at the repository root. No figure in that file
is written by hand: each is a count or a measurement a test took.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / ".data" / "faults"
REPORT = REPO / "RELIABILITY.md"

#: The counts of a delivery scenario, in the order the report shows them.
DELIVERY_COUNTS = (
    "sent",
    "acked 2xx",
    "refused",
    "applied",
    "duplicates absorbed",
    "dead-lettered",
    "lost",
)

BACKENDS = {
    "engines": "Apache Kafka 3.9.1 (one KRaft node) + FerretDB 1.24.2 on SQLite",
    "embedded": "Tansu (in memory) + the MongoDB wire-protocol stand-in",
}

INVARIANT = (
    "Every Svix id the gateway answered 2xx is applied exactly once in effect (the final state "
    "equals the in-order result); a duplicate inside Kafka is counted, not failed; nothing "
    "acknowledged is lost."
)


@dataclass
class Scenario:
    """One scenario's record: filled in by its test, saved when it ends."""

    key: str
    title: str
    injected: str = ""
    observed: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    outcome: str = "not finished"
    seconds: float = 0.0

    def observe(self, line: str) -> None:
        self.observed.append(line)


#: The `record` fixture: `record(key, title)` answers the scenario a test fills in.
Record = Callable[[str, str], Scenario]


def results_file(backend: str) -> Path:
    return RESULTS / f"{backend}.json"


def save(backend: str, scenario: Scenario) -> None:
    """Add `scenario` to its backend's file (replacing an earlier record under its key)."""
    path = results_file(backend)
    path.parent.mkdir(parents=True, exist_ok=True)
    run = json.loads(path.read_text()) if path.exists() else {"scenarios": {}}
    run["backend"] = backend
    run["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    run["machine"] = f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores"
    run["scenarios"][scenario.key] = asdict(scenario)
    path.write_text(json.dumps(run, indent=2) + "\n")


def load() -> dict[str, dict[str, Any]]:
    """Every backend's recorded run, by backend."""
    runs = {}
    for path in sorted(RESULTS.glob("*.json")):
        run = json.loads(path.read_text())
        runs[run["backend"]] = run
    return runs


def _order(key: str) -> tuple[int, str]:
    number, _, rest = key.partition("-")
    return (int(number), rest) if number.isdigit() else (1000, key)


def _table(counts: dict[str, int]) -> list[str]:
    keys = list(counts)
    return [
        "| " + " | ".join(keys) + " |",
        "|" + "---:|" * len(keys),
        "| " + " | ".join(str(counts[k]) for k in keys) + " |",
    ]


def render(runs: dict[str, dict[str, Any]]) -> str:
    lines = [
        "# Reliability",
        "",
        "Written by `make test-faults` from the counts and measurements the fault-injection "
        "scenarios in `tests/faults` recorded on their last run; not edited by hand.",
        "",
        f"The invariant under every fault: {INVARIANT}",
        "",
        "Counts: *sent* deliveries posted to the gateway (Clerk's retries included), *acked 2xx* "
        "the answers 202, *refused* every other answer (503: Clerk retries those), *applied* the "
        "distinct acknowledged Svix ids the service's ledger holds, *duplicates absorbed* the "
        "events the workers found already applied (a retry or a redelivery inside Kafka), "
        "*dead-lettered* the events parked in a DLQ, *lost* the acknowledged Svix ids never "
        "applied (must be 0).",
        "",
        "## Runs",
        "",
        "| backend | what | finished | machine | scenarios passed |",
        "|---|---|---|---|---|",
    ]
    keys: set[str] = set()
    for name, run in runs.items():
        scenarios = run["scenarios"]
        keys |= set(scenarios)
        passed = sum(1 for s in scenarios.values() if s["outcome"] == "passed")
        lines.append(
            f"| {name} | {BACKENDS.get(name, name)} | {run['finished']} | {run['machine']} "
            f"| {passed} of {len(scenarios)} |"
        )
    names = list(runs)
    lines += [
        "",
        "## Matrix",
        "",
        "| scenario | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for key in sorted(keys, key=_order):
        cells = []
        title = ""
        for name in names:
            scenario = runs[name]["scenarios"].get(key)
            if scenario is None:
                cells.append("not run")
                continue
            title = scenario["title"]
            lost = scenario["counts"].get("lost")
            cells.append(scenario["outcome"] + ("" if lost is None else f", lost {lost}"))
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    for key in sorted(keys, key=_order):
        recorded = {
            name: run["scenarios"][key] for name, run in runs.items() if key in run["scenarios"]
        }
        title = next(iter(recorded.values()))["title"]
        lines += ["", f"## {title}"]
        for name, scenario in recorded.items():
            lines += [
                "",
                f"### {name}: {scenario['outcome']} ({scenario['seconds']:.1f} s)",
                "",
                f"Injected: {scenario['injected']}",
                "",
                "Observed:",
                "",
                *[f"- {line}" for line in scenario["observed"]],
            ]
            if scenario["counts"]:
                lines += ["", *_table(scenario["counts"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    runs = load()
    if not runs:
        sys.exit(f"no recorded scenarios in {RESULTS.relative_to(REPO)}: run `make test-faults`")
    REPORT.write_text(render(runs))
    print(f"wrote {REPORT.relative_to(REPO)} ({', '.join(runs)})")


if __name__ == "__main__":
    main()
