"""Start, watch and stop the service processes, the way an operator's supervisor would."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO

import httpx

from siteview_common.cli import WORKER_PORT_OFFSET

NAME_WIDTH = 15


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    name: str
    module: str
    args: tuple[str, ...]
    port: int

    def argv(self) -> list[str]:
        return [sys.executable, "-m", self.module, *self.args]


SERVICES = ("users", "payments", "videos")


def service_specs(base_port: int = 8000, services: Iterable[str] = SERVICES) -> list[ProcessSpec]:
    """Every process of the system, on DESIGN's ports (workers: their API's port + 100)."""
    specs = [ProcessSpec("webhooks", "siteview_webhooks", (), base_port)]
    for service in services:
        if importlib.util.find_spec(f"siteview_{service}.__main__") is None:
            continue  # a service package without process entrypoints yet
        api_port = base_port + 1 + SERVICES.index(service)
        specs.append(ProcessSpec(f"{service}-api", f"siteview_{service}", ("api",), api_port))
        specs.append(
            ProcessSpec(
                f"{service}-worker",
                f"siteview_{service}",
                ("worker",),
                api_port + WORKER_PORT_OFFSET,
            )
        )
    return specs


@dataclass
class RunningProcess:
    spec: ProcessSpec
    popen: subprocess.Popen[bytes]
    lines: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.spec.port}"


class Supervisor:
    """Runs processes with their output prefixed by name (echoed, and kept for tests)."""

    def __init__(self, env: Mapping[str, str], *, echo: bool = True) -> None:
        self._env = dict(env)
        self._echo = echo
        self._print_lock = threading.Lock()
        self.running: dict[str, RunningProcess] = {}

    def start(
        self, spec: ProcessSpec, extra_env: Mapping[str, str] | None = None
    ) -> RunningProcess:
        env = {**self._env, "PORT": str(spec.port), "HOST": "127.0.0.1", **(extra_env or {})}
        popen = subprocess.Popen(
            spec.argv(), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        proc = RunningProcess(spec, popen)
        self.running[spec.name] = proc
        threading.Thread(target=self._pump, args=(proc, popen.stdout), daemon=True).start()
        return proc

    def _pump(self, proc: RunningProcess, stream: IO[bytes] | None) -> None:
        assert stream is not None
        for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            proc.lines.append(line)
            if self._echo:
                with self._print_lock:
                    print(f"{proc.spec.name:<{NAME_WIDTH}} | {line}", flush=True)

    def wait_ready(self, names: Iterable[str] | None = None, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for name in names or list(self.running):
            proc = self.running[name]
            while True:
                if proc.popen.poll() is not None:
                    tail = "\n".join(proc.lines[-20:])
                    raise RuntimeError(f"{name} exited with {proc.popen.returncode}:\n{tail}")
                try:
                    if httpx.get(f"{proc.base_url}/readyz", timeout=1.0).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} not ready after {timeout}s")
                time.sleep(0.1)

    def stop(self, name: str, timeout: float = 10.0) -> None:
        proc = self.running.pop(name, None)
        if proc is None or proc.popen.poll() is not None:
            return
        proc.popen.send_signal(signal.SIGTERM)
        try:
            proc.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait()

    def stop_all(self) -> None:
        for name in reversed(list(self.running)):
            self.stop(name)

    def exited(self) -> list[RunningProcess]:
        return [p for p in self.running.values() if p.popen.poll() is not None]


def base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
