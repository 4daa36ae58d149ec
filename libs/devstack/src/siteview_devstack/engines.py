"""Real engines without Docker: Apache Kafka and FerretDB, built from the package registries.

- **Apache Kafka**: the broker's own server jars (`org.apache.kafka:kafka_2.13`) and their
  runtime dependencies, resolved by Maven with checksums checked, run as one KRaft node that
  is both broker and controller (`java -cp … kafka.Kafka server.properties`).
- **FerretDB v1**: a MongoDB-compatible server over SQLite, built by Go (checksums from our
  `go.sum`) as a ten-line program that embeds its `ferretdb` package.
- **kustomize**: not an engine but a tool the deployment checks (tests/deploy) need, built by
  Go the same way from its `sigs.k8s.io/kustomize/kustomize/v5` module.
- **vegeta**: the load generator of `make bench`, built by Go the same way (its command is
  the root package of `github.com/tsenart/vegeta/v12`); only `make bench` builds it.

`make engines` provisions all three into `.tools/engines/` at the versions pinned in
`libs/devstack/engines/` and prints what it built; a second run does nothing. The test suite's
`engines` backend and `make dev ENGINES=1` start them from there.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from siteview_devstack.broker import free_port, wait_for_port
from siteview_devstack.processes import die_with_parent

KAFKA_VERSION = "3.9.1"
FERRETDB_VERSION = "1.24.2"
KUSTOMIZE_VERSION = "5.8.2"
VEGETA_VERSION = "12.13.0"

REPO = Path(__file__).resolve().parents[4]
SOURCES = REPO / "libs" / "devstack" / "engines"
ENGINES_DIR = Path(os.environ.get("SITEVIEW_ENGINES_DIR") or REPO / ".tools" / "engines")
KAFKA_HOME = ENGINES_DIR / f"kafka-{KAFKA_VERSION}"
FERRETDB_BIN = ENGINES_DIR / f"ferretdb-{FERRETDB_VERSION}" / "ferretdb"
KUSTOMIZE_BIN = ENGINES_DIR / f"kustomize-{KUSTOMIZE_VERSION}" / "kustomize"
VEGETA_BIN = ENGINES_DIR / f"vegeta-{VEGETA_VERSION}" / "vegeta"

TOOLCHAINS = ("java", "mvn", "go")


class EngineError(RuntimeError):
    """An engine could not be provisioned or did not start."""


def missing_toolchains() -> list[str]:
    """The commands the engines need that this machine lacks."""
    return [tool for tool in TOOLCHAINS if shutil.which(tool) is None]


def is_provisioned() -> bool:
    return (
        _up_to_date(KAFKA_HOME, _kafka_inputs())
        and _up_to_date(FERRETDB_BIN.parent, _ferretdb_inputs())
        and kustomize_is_provisioned()
    )


def kustomize_is_provisioned() -> bool:
    return _up_to_date(KUSTOMIZE_BIN.parent, _kustomize_inputs())


# --- provisioning -------------------------------------------------------------------------


def _kafka_inputs() -> list[Path]:
    return [SOURCES / "kafka" / "pom.xml"]


def _go_inputs(module: str) -> list[Path]:
    """What a Go tool under libs/devstack/engines/<module> is built from."""
    return [SOURCES / module / name for name in ("go.mod", "go.sum", "main.go")]


def _ferretdb_inputs() -> list[Path]:
    return _go_inputs("ferretdb")


def _kustomize_inputs() -> list[Path]:
    return _go_inputs("kustomize")


def _fingerprint(inputs: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in inputs:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _up_to_date(home: Path, inputs: list[Path]) -> bool:
    stamp = home / ".provisioned"
    return stamp.is_file() and stamp.read_text().strip() == _fingerprint(inputs)


def _run(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=1800
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise EngineError(f"{' '.join(argv[:3])} … failed ({result.returncode}):\n{tail}")


def provision_kafka() -> bool:
    """Copy Kafka's server jars into KAFKA_HOME/libs; False when already there."""
    if _up_to_date(KAFKA_HOME, _kafka_inputs()):
        return False
    staging = Path(tempfile.mkdtemp(prefix="kafka-", dir=ENGINES_DIR))
    try:
        # -C: fail on a checksum mismatch instead of warning (Maven's own verification).
        _run(
            [
                "mvn",
                "--batch-mode",
                "--quiet",
                "--strict-checksums",
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={staging / 'libs'}",
            ],
            cwd=SOURCES / "kafka",
        )
        (staging / ".provisioned").write_text(_fingerprint(_kafka_inputs()) + "\n")
        shutil.rmtree(KAFKA_HOME, ignore_errors=True)
        staging.rename(KAFKA_HOME)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(SOURCES / "kafka" / "target", ignore_errors=True)
    return True


def _go_build(module: str, binary: Path, package: str = ".") -> bool:
    """Build the Go program in libs/devstack/engines/<module> (or `package`, a command of a
    module it requires) into `binary`, checked against its committed go.sum; False when the
    binary is already built from these inputs."""
    home = binary.parent
    if _up_to_date(home, _go_inputs(module)):
        return False
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "GOFLAGS": "-mod=readonly",  # go.sum is the law: a changed checksum fails the build
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",
    }
    partial = binary.with_name(f"{binary.name}.partial")
    _run(["go", "build", "-o", str(partial), package], cwd=SOURCES / module, env=env)
    partial.rename(binary)
    (home / ".provisioned").write_text(_fingerprint(_go_inputs(module)) + "\n")
    return True


def provision_ferretdb() -> bool:
    """Build the FerretDB server into FERRETDB_BIN; False when already built."""
    return _go_build("ferretdb", FERRETDB_BIN)


def provision_kustomize() -> bool:
    """Build the kustomize CLI into KUSTOMIZE_BIN; False when already built."""
    return _go_build("kustomize", KUSTOMIZE_BIN)


def provision_vegeta() -> bool:
    """Build the vegeta load generator (for `make bench`) into VEGETA_BIN; False when built."""
    return _go_build("vegeta", VEGETA_BIN, "github.com/tsenart/vegeta/v12")


def provision(out: IO[str] = sys.stdout) -> None:
    """Provision the engines and kustomize, saying what was built and what was already there."""
    if missing := missing_toolchains():
        raise EngineError(f"cannot provision the engines: {', '.join(missing)} not found")
    ENGINES_DIR.mkdir(parents=True, exist_ok=True)
    for name, version, step, where in (
        ("Apache Kafka", KAFKA_VERSION, provision_kafka, KAFKA_HOME),
        ("FerretDB", FERRETDB_VERSION, provision_ferretdb, FERRETDB_BIN),
        ("kustomize", KUSTOMIZE_VERSION, provision_kustomize, KUSTOMIZE_BIN),
    ):
        started = time.monotonic()
        built = step()
        took = f" in {time.monotonic() - started:.0f} s" if built else ""
        state = f"built{took}" if built else "up to date"
        print(f"engines: {name} {version} {state}: {where.relative_to(REPO)}", file=out)


# --- running ------------------------------------------------------------------------------


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop(process: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _cluster_id() -> str:
    """A cluster id as Kafka's own `random-uuid` makes one: never starting with "-"."""
    while (cluster := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))[0] == "-":
        pass
    return cluster


@dataclass
class KafkaServer:
    """One Apache Kafka node in KRaft mode (broker and controller), data in `data_dir`.

    The log directory is formatted on first start and reused after, so topics and committed
    offsets survive a restart."""

    data_dir: Path
    port: int = 9092
    host: str = "127.0.0.1"
    controller_port: int = 0
    heap: str = "512m"
    #: The port clients are told to connect to (the listener's own when unset): a proxy's,
    #: for a client to reach the broker only through it.
    advertised_port: int | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.advertised_port or self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "kafka.log"

    def _properties(self) -> str:
        controller = f"{self.host}:{self.controller_port}"
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@{controller}",
                f"listeners=PLAINTEXT://{self.host}:{self.port},CONTROLLER://{controller}",
                f"advertised.listeners=PLAINTEXT://{self.bootstrap_servers}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                f"log.dirs={self.data_dir / 'logs'}",
                "offsets.topic.replication.factor=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "min.insync.replicas=1",
                # Our processes create their topics; a typo must not create one silently.
                "auto.create.topics.enable=false",
                # A group forms at once instead of waiting 3 s for more members.
                "group.initial.rebalance.delay.ms=0",
                "",
            ]
        )

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            "java",
            f"-Xmx{self.heap}",
            "-XX:+UseSerialGC",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-Dorg.slf4j.simpleLogger.log.kafka.server.KafkaRaftServer=info",
            "-cp",
            str(KAFKA_HOME / "libs" / "*"),
            main,
            *args,
        ]

    def prepare(self) -> list[str]:
        """Write the configuration, format the log directory on first use, and answer the
        command that runs the broker."""
        if not _up_to_date(KAFKA_HOME, _kafka_inputs()):
            raise EngineError("Apache Kafka is not provisioned: run `make engines`")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.controller_port:
            self.controller_port = free_port()
        config = self.data_dir / "server.properties"
        config.write_text(self._properties())
        if not (self.data_dir / "logs" / "meta.properties").exists():
            _run(
                self._java(
                    "kafka.tools.StorageTool",
                    "format",
                    # One argument: a generated id may start with "-".
                    f"--cluster-id={_cluster_id()}",
                    f"--config={config}",
                ),
                cwd=self.data_dir,
            )
        return self._java("kafka.Kafka", str(config))

    def start(self, timeout: float = 90.0) -> KafkaServer:
        """Run the broker as a child of this process (it dies with it), logging to a file."""
        argv = self.prepare()
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=self.data_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
                preexec_fn=die_with_parent(),
            )
        deadline = time.monotonic() + timeout
        while "Kafka Server started" not in _tail(self.log_file, 200):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise EngineError(f"Apache Kafka did not start:\n{_tail(self.log_file)}")
            time.sleep(0.1)
        wait_for_port(self.host, self.port)
        return self

    def stop(self) -> None:
        _stop(self.process)
        self.process = None


@dataclass
class FerretDBServer:
    """FerretDB on SQLite, its databases in `data_dir` (kept across restarts)."""

    data_dir: Path
    port: int = 27017
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"mongodb://{self.host}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "ferretdb.log"

    def prepare(self) -> list[str]:
        """The command that runs FerretDB on `data_dir`."""
        if not _up_to_date(FERRETDB_BIN.parent, _ferretdb_inputs()):
            raise EngineError("FerretDB is not provisioned: run `make engines`")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return [
            str(FERRETDB_BIN),
            f"--listen-addr={self.host}:{self.port}",
            f"--data-dir={self.data_dir / 'sqlite'}",
        ]

    def start(self, timeout: float = 30.0) -> FerretDBServer:
        """Run FerretDB as a child of this process (it dies with it), logging to a file."""
        argv = self.prepare()
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
                preexec_fn=die_with_parent(),
            )
        try:
            wait_for_port(self.host, self.port, timeout=timeout)
        except TimeoutError:
            self.stop()
            raise EngineError(f"FerretDB did not start:\n{_tail(self.log_file)}") from None
        return self

    def stop(self) -> None:
        _stop(self.process)
        self.process = None


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="siteview-engines", description="Provision Apache Kafka, FerretDB and kustomize."
    )
    parser.add_argument("command", choices=["provision", "check"])
    args = parser.parse_args()
    try:
        if args.command == "provision":
            provision()
        elif not is_provisioned():
            raise EngineError("the engines are not provisioned: run `make engines`")
    except EngineError as exc:
        print(f"siteview-engines: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
