"""`make dev`'s supervisor, run as `make dev` runs it (a process of its own, on free ports):
a crashed service process is restarted while the broker and database keep what they hold,
its children die with it even when it is SIGKILLed, and it refuses to start on taken ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import httpx
import psutil
import pytest
from settings_catalog import every_setting

from conftest import free_port_block
from siteview_common.dev import DEV_WEBHOOK_SECRET
from siteview_devstack.broker import free_port
from siteview_devstack.processes import (
    ProcessSpec,
    RestartPolicy,
    Supervisor,
    base_env,
    port_in_use,
)
from siteview_devstack.tokens import mint_token
from support import Gateway, eventually, new_user_id, run_module, user_event

BANNER = "SiteView is up"


def dev_env() -> dict[str, str]:
    """The environment `make dev` gets on a fresh machine: development, nothing configured."""
    env = base_env()
    for key in every_setting():
        env.pop(key, None)
    env["APP_ENV"] = "development"
    return env


def dev_ports(services: str) -> tuple[int, int, int, tuple[str, ...]]:
    """Free ports for a `make dev` of `services` (and the gateway), and its arguments."""
    base, broker_port, mongo_port = free_port_block(), free_port(), free_port()
    args = ("--base-port", str(base), "--services", services)
    args += ("--broker-port", str(broker_port), "--mongo-port", str(mongo_port))
    return base, broker_port, mongo_port, args


class DevCommand:
    """`python -m siteview_devstack.run ARGS`, its output collected line by line."""

    def __init__(self, *args: str) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "siteview_devstack.run", *args],
            env=dev_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip())

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 150.0) -> None:
        def seen() -> bool:
            if self.popen.poll() is not None and text not in self.output():
                raise AssertionError(f"exited with {self.popen.returncode}:\n{self.output()}")
            return text in self.output()

        eventually(seen, timeout=timeout, interval=0.1)

    def children(self) -> dict[str, psutil.Process]:
        """Its child processes by what they run: tansu, python -m siteview_users api, …"""
        found = {}
        for child in psutil.Process(self.popen.pid).children(recursive=True):
            command = child.cmdline()
            if "-m" in command:
                name = " ".join(command[command.index("-m") + 1 :])
            elif "-c" in command:
                name = "mongo-standin"
            else:
                name = child.name().split("-")[0]  # the broker's binary: tansu-v<version>-…
            found[name] = child
        return found

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@contextmanager
def dev_command(*args: str) -> Iterator[DevCommand]:
    command = DevCommand(*args)
    try:
        yield command
    finally:
        command.stop()


def gone(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_crashed_service_process_is_restarted_and_the_stores_keep_their_events() -> None:
    base, _, _, args = dev_ports("users")
    with dev_command(*args) as dev:
        dev.wait_for(BANNER)
        gateway = Gateway(f"http://127.0.0.1:{base}", secret=DEV_WEBHOOK_SECRET)
        api = f"http://127.0.0.1:{base + 1}"
        user_id = new_user_id()
        headers = {"Authorization": f"Bearer {mint_token(user_id)}"}

        def profile() -> dict[str, object] | None:
            response = httpx.get(f"{api}/users/me", headers=headers, timeout=10)
            return response.json() if response.status_code == 200 else None

        created = user_event("user.created", user_id, updated_at=1_700_000_000_000)
        assert gateway.deliver(created).status_code == 202
        before = eventually(profile)
        assert before["externalId"] == user_id

        children = dev.children()
        crashed = children.pop("siteview_users api")
        assert {"tansu", "mongo-standin", "siteview_webhooks", "siteview_users worker"} <= set(
            children
        )
        crashed.send_signal(signal.SIGKILL)

        dev.wait_for("users-api exited with -9; restarting in 0.5 s")
        dev.wait_for("users-api is ready again")
        restarted = dev.children()
        assert restarted["siteview_users api"].pid != crashed.pid
        for name, child in children.items():  # nothing else stopped or restarted
            assert restarted[name].pid == child.pid, name

        # The stand-in kept the record: the restarted API reads it; the broker and the worker
        # carry on: an event sent now is applied.
        assert profile() == before
        updated = user_event(
            "user.updated", user_id, updated_at=1_700_000_000_001, first_name="Grace"
        )
        assert gateway.deliver(updated).status_code == 202
        assert eventually(lambda: (p := profile()) and p["name"] == "Grace Lovelace")

        # Ctrl-C (the terminal signals the supervisor's process group, not its children's)
        # still stops everything in order.
        everything = dev.children()
        dev.popen.send_signal(signal.SIGINT)
        assert dev.popen.wait(timeout=60) == 0
        assert all(gone(child) for child in everything.values())
        assert eventually(lambda: dev.lines[-1].endswith("| stopped"))  # the output drains


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_every_child_dies_with_a_killed_supervisor() -> None:
    base, broker_port, mongo_port, args = dev_ports("none")
    with dev_command(*args) as dev:
        dev.wait_for(BANNER)
        children = dev.children()
        assert {"tansu", "mongo-standin", "siteview_webhooks"} <= set(children)
        assert all(not gone(child) for child in children.values())

        dev.popen.send_signal(signal.SIGKILL)
        dev.popen.wait(timeout=10)

        eventually(lambda: all(gone(child) for child in children.values()), timeout=10)
        for port in (base, broker_port, mongo_port):  # the next `make dev` can bind them
            assert eventually(lambda port=port: not port_in_use(port), timeout=10)


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_dead_broker_is_said_loudly_and_stops_everything() -> None:
    *_, args = dev_ports("none")
    with dev_command(*args) as dev:
        dev.wait_for(BANNER)
        children = dev.children()
        children["tansu"].send_signal(signal.SIGKILL)

        assert dev.popen.wait(timeout=60) == 1
        assert all(gone(child) for child in children.values())
        eventually(lambda: dev.lines[-1].endswith("| stopped"))
        assert (
            "THE BROKER DIED: tansu exited with -9; every event it held (in memory) is gone."
            in dev.output()
        )
        assert "restarting" not in dev.output()


def test_taken_ports_stop_it_before_anything_starts_naming_who_holds_them() -> None:
    base, broker_port, mongo_port = free_port_block(), free_port(), free_port()
    with ExitStack() as stack:
        for port in (base, broker_port):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", port))
            sock.listen()
        result = run_module(
            [
                "siteview_devstack.run",
                "--base-port",
                str(base),
                "--services",
                "none",
                "--broker-port",
                str(broker_port),
                "--mongo-port",
                str(mongo_port),
            ],
            dev_env(),
        )
    me = f"{psutil.Process().name()} (pid {os.getpid()})"
    assert result.returncode == 2
    assert result.stdout == ""  # nothing was started: no broker, database or service said a word
    assert result.stderr.splitlines() == sorted(
        [
            f"siteview-dev: port {base} (webhooks) is already in use by {me}",
            f"siteview-dev: port {broker_port} (tansu) is already in use by {me}",
        ],
        key=lambda line: int(line.split()[2]),
    )


# --- The Supervisor's restart policy, on small real processes ------------------------------


def crashing(name: str, *, after: float = 0.0, restart: bool = True) -> ProcessSpec:
    """A process that exits with 3, after `after` seconds."""
    code = f"import time; time.sleep({after}); raise SystemExit(3)"
    return ProcessSpec.program(name, (sys.executable, "-c", code), free_port(), restart=restart)


def tend_until(supervisor: Supervisor, notes: int) -> list[str]:
    def enough() -> list[str] | None:
        supervisor.tend()
        return supervisor.notes if len(supervisor.notes) >= notes else None

    return eventually(enough, timeout=30, interval=0.01)


def test_restarts_back_off_doubling_up_to_a_ceiling() -> None:
    supervisor = Supervisor(base_env(), echo=False, restart=RestartPolicy(first=0.05, longest=0.2))
    try:
        supervisor.start(crashing("crasher"))
        notes = tend_until(supervisor, 10)
        exits = [note for note in notes if "exited" in note][:5]
        assert exits == [
            f"crasher exited with 3; restarting in {delay} s"
            for delay in ("0.05", "0.1", "0.2", "0.2", "0.2")
        ]
        assert supervisor.running["crasher"].restarts >= 4
    finally:
        supervisor.close()


def test_a_healthy_run_resets_the_back_off() -> None:
    policy = RestartPolicy(first=0.05, longest=10, healthy_after=0.5)
    supervisor = Supervisor(base_env(), echo=False, restart=policy)
    try:
        supervisor.start(crashing("steady", after=0.6))  # each run outlasts healthy_after
        notes = tend_until(supervisor, 5)
        exits = [note for note in notes if "exited" in note][:3]
        assert exits == ["steady exited with 3; restarting in 0.05 s"] * 3
    finally:
        supervisor.close()


def test_without_a_policy_or_for_a_stateful_process_an_exit_is_reported_not_restarted() -> None:
    for policy, spec in (
        (None, crashing("no-policy")),
        (RestartPolicy(first=0.05), crashing("stateful", restart=False)),
    ):
        supervisor = Supervisor(base_env(), echo=False, restart=policy)
        try:
            proc = supervisor.start(spec)
            proc.popen.wait(timeout=30)  # proof it exited before we look
            lost = supervisor.tend()
            assert [p.spec.name for p in lost] == [spec.name]
            assert supervisor.notes == []
            assert proc.restarts == 0
            assert supervisor.tend() == lost  # still reported, still not restarted
        finally:
            supervisor.close()


def test_what_a_stopped_process_printed_last_is_there_when_stop_returns() -> None:
    # Its last line reaches the pipe after its exit (written by a child that outlives it by
    # half a second, as buffered output still in the pipe would be read after the exit):
    # `stop` returns once the output has ended, not merely the process.
    late = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "time.sleep(0.5); print('stopped cleanly', flush=True)"
    )
    code = (
        "import signal, subprocess, sys, time\n"
        "def bye(*_):\n"
        f"    subprocess.Popen([sys.executable, '-c', {late!r}])\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('up', flush=True)\n"
        "while True: time.sleep(0.1)\n"
    )
    spec = ProcessSpec.program("chatty", (sys.executable, "-c", code), free_port())
    supervisor = Supervisor(base_env(), echo=False)
    try:
        proc = supervisor.start(spec)
        eventually(lambda: "up" in proc.lines, timeout=30)
        supervisor.stop("chatty", timeout=30)
        assert proc.popen.returncode == 0
        assert proc.lines == ["up", "stopped cleanly"]
    finally:
        supervisor.close()
