"""Start, watch and stop the system's processes, the way an operator's supervisor would.

Every child runs in a process group of its own, so a Ctrl-C in the terminal reaches only the
supervisor, which then stops the children in order; and on Linux the kernel kills every child
when the supervisor dies, even by SIGKILL (PR_SET_PDEATHSIG), so none is left holding its port.

Restarting is opt-in: `Supervisor(env, restart=RestartPolicy())` restarts a crashed process
after a back-off when the caller calls `tend()`; without a policy an exited process stays
exited (the test suite kills processes on purpose and expects them to stay dead).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from typing import IO, Literal

import httpx
import psutil

from siteview_common.cli import WORKER_PORT_OFFSET

NAME_WIDTH = 15
SUPERVISOR_NAME = "devstack"

_print_lock = threading.Lock()


def print_line(name: str, text: str) -> None:
    """One line of the shared terminal, prefixed by who said it."""
    with _print_lock:
        print(f"{name:<{NAME_WIDTH}} | {text}", flush=True)


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """One process: `python -m module args` (or `command`, a program of its own) on `port`."""

    name: str
    module: str
    args: tuple[str, ...]
    port: int
    #: A program to run instead of `python -m module args` (a broker's binary, say).
    command: tuple[str, ...] = ()
    #: Ready when GET /readyz answers 200 ("http"), or when the port accepts a connection.
    probe: Literal["http", "tcp"] = "http"
    #: Whether a supervisor with a restart policy restarts it after a crash. A process that
    #: keeps state only in memory (the embedded broker and database) is not: a restart would
    #: silently come back empty.
    restart: bool = True

    @classmethod
    def program(
        cls,
        name: str,
        command: Iterable[str],
        port: int,
        *,
        probe: Literal["http", "tcp"] = "tcp",
        restart: bool = False,
    ) -> ProcessSpec:
        return cls(name, "", (), port, command=tuple(command), probe=probe, restart=restart)

    def argv(self) -> list[str]:
        if self.command:
            return list(self.command)
        return [sys.executable, "-m", self.module, *self.args]

    def is_ready(self) -> bool:
        if self.probe == "tcp":
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                return False
        try:
            response = httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200


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


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """When to restart a crashed process: `first` seconds after its first crash, doubling with
    every further crash in a row up to `longest`. A process that ran at least `healthy_after`
    seconds before it crashed counts as healthy: its next wait is `first` again."""

    first: float = 0.5
    longest: float = 30.0
    healthy_after: float = 60.0

    def delay(self, crashes: int) -> float:
        """The wait before the restart after `crashes` crashes in a row (1: the first)."""
        return float(min(self.first * 2 ** max(crashes - 1, 0), self.longest))


@dataclass
class RunningProcess:
    spec: ProcessSpec
    popen: subprocess.Popen[bytes]
    lines: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)
    #: Crashes in a row (reset by a healthy run); how many times it was restarted in all.
    crashes: int = 0
    restarts: int = 0
    #: While a crashed process waits for its restart: when it is due.
    restart_at: float | None = None
    #: Restarted, and not yet seen ready again.
    returning: bool = False
    #: The thread copying its output into `lines`; it ends at the output's end.
    pump: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.spec.port}"

    def tail(self, lines: int = 20) -> str:
        """The last `lines` lines it printed, to say why it failed."""
        return "\n".join(self.lines[-lines:])


# --- Children that die with their parent ---------------------------------------------------

_PR_SET_PDEATHSIG = 1


@cache
def die_with_parent() -> Callable[[], None] | None:
    """The function a child runs between fork and exec so the kernel SIGKILLs it when its
    parent dies (Linux only; elsewhere children only get a process group of their own)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
    prctl.restype = ctypes.c_int
    parent = os.getpid()

    def set_death_signal() -> None:
        if prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before the call: no signal will come
            os._exit(1)

    return set_death_signal


# The kernel sends the death signal when the *thread* that forked the child ends, not the
# process. So every child is forked by this one thread, which lives as long as the process:
# a child started from a short-lived thread (asyncio.to_thread, say) would otherwise be
# killed as soon as that thread finished.
_spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="siteview-spawner")


def spawn(argv: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start `argv` in a process group of its own, output piped, dying with this process."""
    return _spawner.submit(
        subprocess.Popen,
        argv,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        process_group=0,
        preexec_fn=die_with_parent(),
    ).result()


def _signal_group(popen: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal the child's whole process group (itself and anything it started)."""
    try:
        os.killpg(popen.pid, sig)
    except ProcessLookupError:
        pass


# --- The supervisor ------------------------------------------------------------------------


class Supervisor:
    """Runs processes with their output prefixed by name (echoed, and kept for tests)."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        echo: bool = True,
        restart: RestartPolicy | None = None,
    ) -> None:
        self._env = dict(env)
        self._echo = echo
        self._restart = restart
        self._closed = False
        self.running: dict[str, RunningProcess] = {}
        #: What the supervisor itself reported (restarts), in order.
        self.notes: list[str] = []

    def say(self, message: str) -> None:
        self.notes.append(message)
        if self._echo:
            print_line(SUPERVISOR_NAME, message)

    def _spawn(self, spec: ProcessSpec, extra_env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        if self._closed:
            raise RuntimeError(f"not starting {spec.name}: the supervisor is stopping")
        env = {**self._env, "PORT": str(spec.port), "HOST": "127.0.0.1", **extra_env}
        popen = spawn(spec.argv(), env)
        return popen

    def start(
        self, spec: ProcessSpec, extra_env: Mapping[str, str] | None = None
    ) -> RunningProcess:
        extra = dict(extra_env or {})
        proc = RunningProcess(spec, self._spawn(spec, extra), extra_env=extra)
        self.running[spec.name] = proc
        self._pump_output(proc)
        return proc

    def _pump_output(self, proc: RunningProcess) -> None:
        proc.pump = threading.Thread(target=self._pump, args=(proc, proc.popen.stdout), daemon=True)
        proc.pump.start()

    def _pump(self, proc: RunningProcess, stream: IO[bytes] | None) -> None:
        assert stream is not None
        for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            proc.lines.append(line)
            if self._echo:
                print_line(proc.spec.name, line)

    def wait_ready(self, names: Iterable[str] | None = None, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for name in names or list(self.running):
            while True:
                proc = self.running.get(name)
                if proc is None or self._closed:
                    raise RuntimeError(f"{name} was stopped before it was ready")
                if proc.popen.poll() is not None:
                    code = proc.popen.returncode
                    raise RuntimeError(f"{name} exited with {code}:\n{proc.tail()}")
                if proc.spec.is_ready():
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} not ready after {timeout}s:\n{proc.tail()}")
                time.sleep(0.1)

    def tend(self) -> list[RunningProcess]:
        """Look after every process once: schedule a crashed one's restart (and say so), restart
        those that are due, report those back up. Call it every fraction of a second.

        Answers the processes that exited and will not be restarted: all of them without a
        restart policy, else those whose spec says `restart=False`."""
        lost = []
        for proc in list(self.running.values()):
            code = proc.popen.poll()
            if code is None:
                if proc.returning and proc.spec.is_ready():
                    proc.returning = False
                    self.say(f"{proc.spec.name} is ready again")
                continue
            if self._restart is None or not proc.spec.restart:
                lost.append(proc)
                continue
            now = time.monotonic()
            if proc.restart_at is None:
                if now - proc.started_at >= self._restart.healthy_after:
                    proc.crashes = 0
                proc.crashes += 1
                delay = self._restart.delay(proc.crashes)
                proc.restart_at = now + delay
                self.say(f"{proc.spec.name} exited with {code}; restarting in {delay:g} s")
            elif now >= proc.restart_at:
                proc.popen = self._spawn(proc.spec, proc.extra_env)
                proc.started_at, proc.restart_at = time.monotonic(), None
                proc.restarts += 1
                proc.returning = True
                self._pump_output(proc)
                self.say(f"{proc.spec.name} restarted (pid {proc.popen.pid})")
        return lost

    def stop(self, name: str, timeout: float = 10.0) -> None:
        """SIGTERM (SIGKILL after `timeout` s); once it returns, `lines` holds all the process
        printed, its shutdown lines included."""
        proc = self.running.pop(name, None)
        if proc is None:
            return
        if proc.popen.poll() is None:
            _signal_group(proc.popen, signal.SIGTERM)
            try:
                proc.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc.popen, signal.SIGKILL)
                proc.popen.wait()
        if proc.pump is not None:
            proc.pump.join(timeout=5)  # the output ends when the last holder of the pipe exits

    def stop_all(self) -> None:
        """Stop every process, the last started first."""
        for name in reversed(list(self.running)):
            self.stop(name)

    def close(self) -> None:
        """Stop everything for good: no start or restart after this, and a `wait_ready` still
        running in another thread gives up."""
        self._closed = True
        self.stop_all()

    def exited(self) -> list[RunningProcess]:
        return [p for p in self.running.values() if p.popen.poll() is not None]


# --- Ports ---------------------------------------------------------------------------------


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could not bind `host:port` now (as our servers bind: SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def port_holder(port: int) -> str:
    """Who holds local TCP `port`: "<process name> (pid N)", else "unknown process" (the
    holder belongs to another user, or the system does not tell)."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.Error:
        connections = []
    candidates = [c for c in connections if c.laddr and c.laddr.port == port and c.pid]
    candidates.sort(key=lambda c: c.status != psutil.CONN_LISTEN)  # listeners first
    for connection in candidates:
        assert connection.pid is not None
        try:
            return f"{psutil.Process(connection.pid).name()} (pid {connection.pid})"
        except psutil.Error:
            continue
    return "unknown process"


def ports_in_use(wanted: Mapping[int, str]) -> list[str]:
    """For each port of `wanted` (port → what is to run there) that is taken: one line naming
    the port, what was to run there and what holds it."""
    return [
        f"port {port} ({name}) is already in use by {port_holder(port)}"
        for port, name in sorted(wanted.items())
        if port_in_use(port)
    ]


def base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}


#: Settings that would change how tokens and webhooks are checked if inherited by accident.
INHERITED_CHECK_SETTINGS = (
    "CLERK_JWKS_URL",
    "CLERK_AUDIENCE",
    "CLERK_INSTANCE_ID",
    "CLERK_WEBHOOK_SECRET",
)


def explicit_env(
    *,
    app_env: str,
    kafka: str,
    mongo: str,
    webhook_secret: str,
    jwt_public_key: str,
    issuer: str,
    authorized_party: str,
    cursor_secret: str,
    log_level: str = "INFO",
) -> dict[str, str]:
    """The environment of services started by the tests and the benchmarks: every secret
    explicit, as production requires, and nothing inherited that would change the checks."""
    env = base_env()
    env.update(
        APP_ENV=app_env,
        KAFKA_BOOTSTRAP_SERVERS=kafka,
        MONGODB_URL=mongo,
        CLERK_WEBHOOK_SIGNING_SECRET=webhook_secret,
        CLERK_JWT_KEY=jwt_public_key,
        CLERK_ISSUER=issuer,
        CLERK_AUTHORIZED_PARTIES=authorized_party,
        CURSOR_SECRET=cursor_secret,
        LOG_LEVEL=log_level,
    )
    for key in INHERITED_CHECK_SETTINGS:
        env.pop(key, None)
    return env
