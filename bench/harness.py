"""What every benchmark phase shares: the backends, the system under test, CPU pinning, the load
generator (vegeta, in its own process), and the figures (repeats → median, min, max).

Pinning: with two or more CPUs, this process and everything it starts (the broker, the
database, the services, the ceilings' own programs) run on every CPU but the last, and the load
generators on the last one, so the generator never takes CPU from what it measures. With one
CPU nothing is pinned and the report says so.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from siteview_devstack.broker import TansuBroker, free_port, wait_for_port
from siteview_devstack.engines import (
    VEGETA_BIN,
    FerretDBServer,
    KafkaServer,
    provision,
    provision_vegeta,
)
from siteview_devstack.processes import ProcessSpec, Supervisor, explicit_env
from siteview_devstack.tokens import mint_token

REPO = Path(__file__).resolve().parent.parent
WEBHOOK_SECRET = "whsec_YmVuY2htYXJrLXNlY3JldC1mb3Itc2l0ZXZpZXc="  # noqa: S105 - bench only
ISSUER = "https://clerk.bench.siteview.test"
AZP = "https://app.bench.siteview.test"
KID = "bench-key"


# --- CPUs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cpus:
    sut: tuple[int, ...]
    load: tuple[int, ...]

    @property
    def pinned(self) -> bool:
        return self.sut != self.load

    def describe(self) -> str:
        if not self.pinned:
            return f"not pinned (one CPU: {self.sut})"
        return (
            f"system under test on CPU {_ids(self.sut)}, load generators on CPU {_ids(self.load)}"
        )


def _ids(cpus: Sequence[int]) -> str:
    return ",".join(str(c) for c in cpus)


def pin() -> Cpus:
    """Pin this process (and so all it starts) to the system-under-test CPUs."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or shutil.which("taskset") is None:
        return Cpus(tuple(cpus), tuple(cpus))
    chosen = Cpus(tuple(cpus[:-1]), (cpus[-1],))
    os.sched_setaffinity(0, chosen.sut)
    return chosen


def on_load_cpus(cpus: Cpus, argv: list[str]) -> list[str]:
    return ["taskset", "-c", _ids(cpus.load), *argv] if cpus.pinned else argv


# --- figures --------------------------------------------------------------------------------


@dataclass
class Figure:
    """One variant's repeated measurements of one quantity."""

    name: str
    unit: str
    values: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "values": self.values,
            "median": self.median,
            "min": min(self.values) if self.values else None,
            "max": max(self.values) if self.values else None,
            "note": self.note,
        }


class Results:
    def __init__(self) -> None:
        self.figures: dict[str, Figure] = {}

    def add(self, key: str, name: str, unit: str, value: float, note: str = "") -> None:
        figure = self.figures.setdefault(key, Figure(name, unit, note=note))
        figure.values.append(value)
        print(f"  {name}: {value:,.1f} {unit}", flush=True)

    def median(self, key: str) -> float:
        figure = self.figures.get(key)
        return figure.median if figure else float("nan")


# --- keys and tokens ------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    private_pem: str
    public_pem: str

    @classmethod
    def generate(cls) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        public = (
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
        return cls(private, public)

    def token(self, user_id: str, ttl: int = 3 * 3600) -> str:
        return mint_token(
            user_id, private_key=self.private_pem, kid=KID, issuer=ISSUER, azp=AZP, ttl=ttl
        )


# --- backends and the system under test -----------------------------------------------------


@dataclass
class Backend:
    name: str
    kafka: str
    mongo: str
    description: str


@contextmanager
def backend(kind: str, workdir: Path) -> Iterator[Backend]:
    """Fresh, empty backends of `kind` ("engines": Apache Kafka + FerretDB; "embedded": Tansu
    + the MongoDB stand-in) for one run."""
    with ExitStack() as stack:
        if kind == "engines":
            provision(sys.stderr)
            kafka = KafkaServer(data_dir=workdir / "kafka", port=free_port(), heap="1g").start()
            stack.callback(kafka.stop)
            ferret = FerretDBServer(data_dir=workdir / "ferretdb", port=free_port()).start()
            stack.callback(ferret.stop)
            yield Backend(
                kind,
                kafka.bootstrap_servers,
                ferret.url,
                "Apache Kafka 3.9.1 (KRaft, one node) + FerretDB 1.24.2 (SQLite)",
            )
        else:
            broker = TansuBroker(port=free_port())
            servers = stack.enter_context(broker.start_context())
            port = free_port()
            run_server = "from siteview_devstack.mongo.server import main; main()"
            standin = subprocess.Popen(
                [sys.executable, "-c", run_server, "--port", str(port)],
                stderr=subprocess.DEVNULL,
            )
            stack.callback(standin.wait)
            stack.callback(standin.terminate)
            wait_for_port("127.0.0.1", port)
            yield Backend(
                kind,
                servers,
                f"mongodb://127.0.0.1:{port}",
                "Tansu (embedded, in memory) + the MongoDB stand-in (mongomock)",
            )


class System:
    """The services, started as `make dev` starts them, with explicit production settings."""

    def __init__(self, backend: Backend, key: SigningKey) -> None:
        self.backend = backend
        env = explicit_env(
            # The stand-in is refused in production: the embedded stack runs as development.
            app_env="production" if backend.name == "engines" else "development",
            kafka=backend.kafka,
            mongo=backend.mongo,
            webhook_secret=WEBHOOK_SECRET,
            jwt_public_key=key.public_pem,
            issuer=ISSUER,
            authorized_party=AZP,
            cursor_secret="bench-cursor-secret",  # noqa: S106 - bench only
            log_level="WARNING",
        )
        self.env = env
        self.supervisor = Supervisor(env, echo=False)
        self.ports: dict[str, int] = {}
        self.databases = {s: f"{s}_bench" for s in ("users", "payments", "videos")}

    def database_env(self, service: str) -> dict[str, str]:
        return {"MONGODB_DATABASE": self.databases[service]} if service in self.databases else {}

    def start(self, name: str, module: str, *args: str, ready: bool = True) -> str:
        port = free_port()
        service = module.removeprefix("siteview_")
        extra = {**self.database_env(service), "PORT": str(port)}
        self.supervisor.start(ProcessSpec(name, module, args, port), extra)
        self.ports[name] = port
        if ready:
            self.supervisor.wait_ready([name], timeout=120)
        return self.url(name)

    def start_program(self, name: str, argv: list[str], service: str = "") -> str:
        """A program of the benchmark's own (a ceiling) on a port of its own, HTTP-probed."""
        port = free_port()
        extra = {**self.database_env(service), "PORT": str(port)}
        spec = ProcessSpec.program(name, [a.replace("{port}", str(port)) for a in argv], port)
        self.supervisor.start(spec, extra)
        self.ports[name] = port
        wait_for_port("127.0.0.1", port, timeout=60)
        return self.url(name)

    def stop(self, name: str) -> None:
        self.supervisor.stop(name, timeout=30)

    def tail(self, name: str, lines: int = 15) -> str:
        """What a running process printed last (its warnings and errors, at the bench's
        log level)."""
        return self.supervisor.running[name].tail(lines)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def close(self) -> None:
        self.supervisor.stop_all()


# --- the load generator ---------------------------------------------------------------------


def vegeta() -> str:
    provision_vegeta()
    return str(VEGETA_BIN)


@dataclass(frozen=True)
class Target:
    method: str
    url: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        target: dict[str, Any] = {
            "method": self.method,
            "url": self.url,
            "header": {k: [v] for k, v in self.headers.items()},
        }
        if self.body:
            target["body"] = base64.b64encode(self.body).decode()
        return json.dumps(target)


def write_targets(targets: Sequence[Target], directory: Path) -> Path:
    handle, name = tempfile.mkstemp(suffix=".targets", dir=directory)
    with os.fdopen(handle, "w") as out:
        for target in targets:
            out.write(target.line() + "\n")
    return Path(name)


@dataclass(frozen=True)
class Attack:
    """What vegeta's JSON report says of one attack."""

    requests: int
    throughput: float  # successful responses per second
    success: float  # 0..1
    p50_ms: float
    p99_ms: float
    status_codes: dict[str, int]


def attack(cpus: Cpus, targets: Path, *, seconds: float, workers: int, rate: float = 0) -> Attack:
    """Run vegeta on the load CPU: at `rate` requests/s (open loop), or, with rate 0, as fast
    as `workers` connections go (closed loop: saturation)."""
    binary = vegeta()
    pacing = (
        [f"-rate={rate:.0f}/1s", f"-workers={workers}"]
        if rate
        else ["-rate=0", f"-max-workers={workers}", f"-workers={workers}"]
    )
    with tempfile.NamedTemporaryFile(suffix=".bin") as results:
        argv = [
            binary,
            "attack",
            "-format=json",
            f"-targets={targets}",
            f"-duration={seconds}s",
            "-timeout=10s",
            "-keepalive=true",
            f"-output={results.name}",
            *pacing,
        ]
        subprocess.run(on_load_cpus(cpus, argv), check=True)
        report = subprocess.run(
            [binary, "report", "-type=json", results.name],
            check=True,
            capture_output=True,
            text=True,
        )
    data = json.loads(report.stdout)
    latencies = data["latencies"]
    return Attack(
        requests=int(data["requests"]),
        throughput=float(data["throughput"]),
        success=float(data["success"]),
        p50_ms=latencies["50th"] / 1e6,
        p99_ms=latencies["99th"] / 1e6,
        status_codes={str(k): int(v) for k, v in (data.get("status_codes") or {}).items()},
    )


def python_program(cpus: Cpus, argv: list[str], *, on_load: bool = False) -> dict[str, Any]:
    """Run one of bench/ceilings' programs and answer the JSON line it prints."""
    command = [sys.executable, *argv]
    done = subprocess.run(
        on_load_cpus(cpus, command) if on_load else command,
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    parsed: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return parsed


def wait_until(check: Any, timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"not reached within {timeout} s")
