"""`make test`: the whole suite on the embedded stack, then on Apache Kafka + FerretDB.

The engines pass leaves out the unit tests and the stand-in's own tests (they touch no
backend) and runs wherever Java, Maven and Go exist, provisioning the engines first. Each pass
prints one summary line; where the toolchains are missing, the last line says so loudly, and
with `SITEVIEW_REQUIRE_ENGINES=1` (CI sets it) that is a failure.

The browser tests (tests/browser: the demo page in headless Chromium, on `make dev`'s own
embedded stack) run in the embedded pass. Chromium is provisioned before it (browser.py);
where it cannot be had they are left out and the last line says so loudly. Each pass's line
says whether they ran, from the pass's JUnit report.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from siteview_devstack import browser
from siteview_devstack.engines import EngineError, missing_toolchains, provision

#: The browser tests: they run `make dev`'s own embedded stack, whatever the backend.
BROWSER_TESTS = "tests/browser"
#: Folders that touch no backend: run once, in the embedded pass.
BACKEND_FREE = (
    "--ignore-glob=*/unit/*",
    "--ignore=tests/common",
    "--ignore=tests/devstack",
    f"--ignore={BROWSER_TESTS}",
)
#: Checks that need the engines' toolchains (Go-built tools), not a backend: run once, in the
#: engines pass, so that a machine without them says so in the last line instead.
NEEDS_TOOLCHAINS = ("--ignore=tests/deploy",)
#: The fault-injection scenarios: `make test-faults` runs them, on both backends, on its own.
FAULTS = ("--ignore=tests/faults",)

SUMMARY = re.compile(r"^=+ (?P<summary>.+ in [\d.]+s.*?) =+$")
COUNT = re.compile(r"(\d+) (passed|failed|errors?)")


@dataclass
class PassResult:
    backend: str
    code: int
    summary: str
    #: Whether the browser tests ran in this pass, and how they ended.
    browser: str = ""

    def count(self, outcome: str) -> int:
        return sum(int(n) for n, word in COUNT.findall(self.summary) if word.startswith(outcome))

    def line(self) -> str:
        browser = f"; {self.browser}" if self.browser else ""
        return f"backend {self.backend}: {self.summary}{browser}"


def browser_outcome(junit: Path) -> str:
    """What a pass's JUnit report says of the browser tests: how many ran and how they ended
    ("" when none ran)."""
    try:
        cases = ET.parse(junit).getroot().iter("testcase")  # noqa: S314 - our own pytest's report
    except (OSError, ET.ParseError):
        return "browser tests: unknown (no JUnit report)"
    prefix = BROWSER_TESTS.replace("/", ".") + "."
    outcomes: Counter[str] = Counter()
    for case in cases:
        if case.get("classname", "").startswith(prefix):
            tags = {child.tag for child in case}
            if tags & {"failure", "error"}:
                outcomes["failed"] += 1
            else:
                outcomes["skipped" if "skipped" in tags else "passed"] += 1
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items()))
    return f"browser tests ran: {counts}" if counts else ""


def run_pass(backend: str, args: list[str], *, no_browser: str) -> PassResult:
    """Run pytest on `backend`; `no_browser` says why, if no browser test ran."""
    print(f"\n===== tests on the {backend} backend =====", flush=True)
    env = {**os.environ, "SITEVIEW_TEST_BACKEND": backend}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="siteview-testrun-") as scratch:
        junit = Path(scratch) / "junit.xml"
        process = subprocess.Popen(
            [sys.executable, "-m", "pytest", f"--junitxml={junit}", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        summary = ""
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            if match := SUMMARY.match(line.strip()):
                summary = match["summary"]
        code = process.wait()
        ran = browser_outcome(junit)
    if not summary:
        summary = f"no summary (pytest exited {code} after {time.monotonic() - started:.0f}s)"
    return PassResult(backend, code, summary, ran or no_browser)


def main() -> None:
    args = sys.argv[1:]
    chromium = browser.provision()
    print(chromium.said, flush=True)
    leave_out_browser = () if chromium.available else (f"--ignore={BROWSER_TESTS}",)
    missing = missing_toolchains()
    provisioned = False
    if not missing:  # first: the embedded pass's contract suite runs on FerretDB too
        try:
            provision()
            provisioned = True
        except EngineError as exc:
            print(f"engines: {exc}", flush=True)
    no_browser = "browser tests: none selected" if chromium.available else "browser tests NOT RUN"
    embedded = [*NEEDS_TOOLCHAINS, *FAULTS, *leave_out_browser, *args]
    results = [run_pass("embedded", embedded, no_browser=no_browser)]
    if provisioned:
        not_here = "browser tests not in this pass (they run make dev's own stack)"
        results.append(run_pass("engines", [*BACKEND_FREE, *FAULTS, *args], no_browser=not_here))
    elif not missing:
        results.append(PassResult("engines", 1, "provisioning failed"))

    print(flush=True)
    for result in results:
        print(result.line(), flush=True)
    failed = sum(r.count("failed") + r.count("error") for r in results)
    failed += sum(1 for r in results if r.code != 0 and not r.count("failed") + r.count("error"))
    print(f"total: {sum(r.count('passed') for r in results)} passed, {failed} failed", flush=True)
    code = 0 if all(r.code == 0 for r in results) else 1
    if missing:
        print(
            f"WARNING: Apache Kafka + FerretDB pass NOT RUN ({', '.join(missing)} not found): "
            "this run proved the embedded stack only",
            flush=True,
        )
        if os.environ.get("SITEVIEW_REQUIRE_ENGINES") == "1":
            code = 1
    if not chromium.available:
        print(
            f"WARNING: browser tests NOT RUN ({chromium.said}): "
            "this run did not prove the demo page in a browser",
            flush=True,
        )
    sys.exit(code)


if __name__ == "__main__":
    main()
