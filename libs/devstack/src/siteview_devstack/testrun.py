"""`make test`: the whole suite on the embedded stack, then on Apache Kafka + FerretDB.

The engines pass leaves out the unit tests and the stand-in's own tests (they touch no
backend) and runs wherever Java, Maven and Go exist, provisioning the engines first. Each pass
prints one summary line; where the toolchains are missing, the last line says so loudly, and
with `SITEVIEW_REQUIRE_ENGINES=1` (CI sets it) that is a failure.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass

from siteview_devstack.engines import EngineError, missing_toolchains, provision

#: Folders that touch no backend: run once, in the embedded pass.
BACKEND_FREE = ("--ignore-glob=*/unit/*", "--ignore=tests/common", "--ignore=tests/devstack")
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

    def count(self, outcome: str) -> int:
        return sum(int(n) for n, word in COUNT.findall(self.summary) if word.startswith(outcome))


def run_pass(backend: str, args: list[str]) -> PassResult:
    print(f"\n===== tests on the {backend} backend =====", flush=True)
    env = {**os.environ, "SITEVIEW_TEST_BACKEND": backend}
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", *args],
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
    if not summary:
        summary = f"no summary (pytest exited {code} after {time.monotonic() - started:.0f}s)"
    return PassResult(backend, code, summary)


def main() -> None:
    args = sys.argv[1:]
    missing = missing_toolchains()
    provisioned = False
    if not missing:  # first: the embedded pass's contract suite runs on FerretDB too
        try:
            provision()
            provisioned = True
        except EngineError as exc:
            print(f"engines: {exc}", flush=True)
    results = [run_pass("embedded", [*NEEDS_TOOLCHAINS, *FAULTS, *args])]
    if provisioned:
        results.append(run_pass("engines", [*BACKEND_FREE, *FAULTS, *args]))
    elif not missing:
        results.append(PassResult("engines", 1, "provisioning failed"))

    print(flush=True)
    for result in results:
        print(f"backend {result.backend}: {result.summary}", flush=True)
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
    sys.exit(code)


if __name__ == "__main__":
    main()
