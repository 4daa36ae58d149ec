"""Chromium for the browser tests (tests/browser): Debian's `chromium` package.

The tests drive it through Playwright with `executable_path` (Playwright's own browser
downloads are never used). Where /usr/bin/chromium is missing and we are root with apt-get, it
is installed (`apt-get update` first only when apt cannot find the package). `provision()`
says what it did in one line and answers whether Chromium is there.

`python -m siteview_devstack.browser` provisions it and prints that line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

CHROMIUM = Path("/usr/bin/chromium")
PACKAGE = "chromium"
#: Flags the tests launch it with: no sandbox (root, containers), no GPU, and none of the
#: background requests Chromium otherwise makes to the network at start.
LAUNCH_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
#: How long one apt-get step may take.
APT_TIMEOUT = 900.0


@dataclass(frozen=True)
class Provisioned:
    path: Path | None  # the executable, None when it could not be had
    said: str  # what was done, in one line

    @property
    def available(self) -> bool:
        return self.path is not None


def chromium_version(path: Path = CHROMIUM) -> str:
    """`Chromium 1xx.…` as the binary reports it (empty when it does not answer)."""
    try:
        result = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip()


def _apt_get(apt_get: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        [apt_get, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=APT_TIMEOUT,
        check=False,
    )


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = (result.stderr or result.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit {result.returncode}"


def _not_found(result: subprocess.CompletedProcess[str]) -> bool:
    text = result.stderr + result.stdout
    return "Unable to locate package" in text or "has no installation candidate" in text


def provision(path: Path = CHROMIUM) -> Provisioned:
    """Chromium at `path`, installed with apt-get if it is missing and we may."""
    if path.exists():
        return Provisioned(path, f"chromium: {chromium_version(path) or path} (already there)")
    apt_get = shutil.which("apt-get")
    if os.geteuid() != 0 or apt_get is None:
        why = "not root" if os.geteuid() != 0 else "no apt-get"
        return Provisioned(None, f"chromium: {path} missing and cannot be installed ({why})")
    try:
        install = ("install", "-y", "--no-install-recommends", PACKAGE)
        result = _apt_get(apt_get, *install)
        updated = False
        if result.returncode != 0 and _not_found(result):
            update = _apt_get(apt_get, "update")
            if update.returncode != 0:
                reason = f"apt-get update failed: {_last_line(update)}"
                return Provisioned(None, f"chromium: not installed ({reason})")
            updated = True
            result = _apt_get(apt_get, *install)
    except subprocess.TimeoutExpired as exc:
        return Provisioned(None, f"chromium: not installed ({exc.cmd} timed out)")
    if result.returncode != 0:
        reason = f"apt-get install {PACKAGE} failed: {_last_line(result)}"
        return Provisioned(None, f"chromium: not installed ({reason})")
    if not path.exists():
        return Provisioned(None, f"chromium: apt-get installed {PACKAGE}, but {path} is missing")
    how = "apt-get update, then apt-get install" if updated else "apt-get install"
    return Provisioned(path, f"chromium: installed {chromium_version(path) or path} ({how})")


def main(out: IO[str] = sys.stdout) -> None:
    provisioned = provision()
    print(provisioned.said, file=out, flush=True)
    sys.exit(0 if provisioned.available else 1)


if __name__ == "__main__":
    main()
