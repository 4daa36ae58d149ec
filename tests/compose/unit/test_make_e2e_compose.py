"""`make e2e-compose` where no Docker engine answers: one clear line and a failure, before
anything is installed or started."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from compose.files import ROOT


@pytest.mark.skipif(shutil.which("make") is None, reason="make runs the target")
def test_without_docker_it_fails_with_one_line_saying_so(tmp_path: Path) -> None:
    make = shutil.which("make")
    assert make is not None
    # A PATH with nothing on it: no `docker` to find, whatever this machine has.
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}
    done = subprocess.run(
        [make, "--no-print-directory", "-C", str(ROOT), "e2e-compose"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert "e2e-compose: needs Docker with its compose plugin and a running engine" in line
