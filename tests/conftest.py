"""Backends and the running system. `SITEVIEW_TEST_BACKEND` names one (`env`, `testcontainers`,
`engines`, `embedded`; `make test` runs the embedded and the engines passes this way). Unset,
the order is DESIGN's: KAFKA_BOOTSTRAP_SERVERS and MONGODB_URL when set; else testcontainers'
Kafka and MongoDB when a Docker engine answers; else Apache Kafka + FerretDB when `make engines`
provisioned them; else the embedded stack (Tansu + the MongoDB wire-protocol stand-in). The
same tests run on all; services run with APP_ENV=production on every backend but the stand-in.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from siteview_devstack.broker import TansuBroker, free_port
from siteview_devstack.processes import Supervisor, explicit_env, service_specs
from support import (
    TEST_AZP,
    TEST_CURSOR_SECRET,
    TEST_ISSUER,
    TEST_WEBHOOK_SECRET,
    Gateway,
    KeyPair,
    scratch_database,
)


@dataclass(frozen=True)
class Backend:
    name: str
    kafka: str
    mongo: str

    @property
    def is_standin(self) -> bool:
        return self.name == "embedded"

    @property
    def is_mongodb(self) -> bool:
        """MongoDB itself (a container or a server named in MONGODB_URL), with its planner."""
        return self.name in ("env", "testcontainers")

    @property
    def isolates_concurrent_updates(self) -> bool:
        """Whether concurrent updates of one document are each atomic, as in MongoDB. FerretDB
        1.24 computes an update between a read and a write of its own, with nothing holding
        the document in between: concurrent `$inc`s of one document can lose increments."""
        return self.name != "engines"

    @property
    def app_env(self) -> str:
        """Services run as in production, except on the stand-in, which production refuses."""
        return "development" if self.is_standin else "production"


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


def _testcontainers(stack: ExitStack) -> Backend:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.mongodb import MongoDbContainer

    kafka = stack.enter_context(KafkaContainer().with_kraft())
    mongo = stack.enter_context(MongoDbContainer("mongo:7"))
    return Backend("testcontainers", kafka.get_bootstrap_server(), mongo.get_connection_url())


def _engines(stack: ExitStack) -> Backend:
    from siteview_devstack.engines import FerretDBServer, KafkaServer

    data = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="siteview-engines-")))
    kafka = KafkaServer(data_dir=data / "kafka", port=free_port())
    stack.callback(kafka.stop)
    kafka.start()
    mongo = FerretDBServer(data_dir=data / "ferretdb", port=free_port())
    stack.callback(mongo.stop)
    mongo.start()
    return Backend("engines", kafka.bootstrap_servers, mongo.url)


def _embedded(stack: ExitStack) -> Backend:
    from siteview_devstack.mongo.server import start_in_thread

    broker = TansuBroker(port=free_port()).start()
    stack.callback(broker.stop)
    standin = start_in_thread(port=0)
    stack.callback(standin.stop)
    return Backend("embedded", broker.bootstrap_servers, standin.url)


@contextmanager
def broker_of_its_own(backend: Backend) -> Iterator[tuple[Any, dict[str, str]]]:
    """A broker for one test to kill: Apache Kafka on the engines backend, else Tansu. Answers
    the broker and the settings a process needs on it (Tansu has no idempotent producer)."""
    if backend.name == "engines":
        from siteview_devstack.engines import KafkaServer

        with tempfile.TemporaryDirectory(prefix="siteview-kafka-") as data:
            kafka = KafkaServer(data_dir=Path(data), port=free_port())
            try:
                yield kafka.start(), {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers}
            finally:
                kafka.stop()
        return
    tansu = TansuBroker(port=free_port()).start()
    try:
        yield (
            tansu,
            {
                "KAFKA_BOOTSTRAP_SERVERS": tansu.bootstrap_servers,
                "KAFKA_ENABLE_IDEMPOTENCE": "false",
            },
        )
    finally:
        tansu.stop()


BACKENDS = ("env", "testcontainers", "engines", "embedded")


def _choose_backend() -> str:
    if chosen := os.environ.get("SITEVIEW_TEST_BACKEND"):
        if chosen not in BACKENDS:
            raise pytest.UsageError(f"SITEVIEW_TEST_BACKEND must be one of {', '.join(BACKENDS)}")
        return chosen
    from siteview_devstack.engines import is_provisioned, missing_toolchains

    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("MONGODB_URL"):
        return "env"
    if _docker_answers():
        return "testcontainers"
    if not missing_toolchains() and is_provisioned():
        return "engines"
    return "embedded"


@pytest.fixture(scope="session")
def backend() -> Iterator[Backend]:
    with ExitStack() as stack:
        chosen = _choose_backend()
        if chosen == "env":
            yield Backend("env", os.environ["KAFKA_BOOTSTRAP_SERVERS"], os.environ["MONGODB_URL"])
        elif chosen == "testcontainers":
            yield _testcontainers(stack)
        elif chosen == "engines":
            yield _engines(stack)
        else:
            yield _embedded(stack)


@pytest.fixture(scope="session")
async def mongo_client(backend: Backend) -> AsyncIterator[AsyncMongoClient[Any]]:
    client: AsyncMongoClient[Any] = AsyncMongoClient(backend.mongo, tz_aware=True)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def db(mongo_client: AsyncMongoClient[Any]) -> AsyncIterator[AsyncDatabase[Any]]:
    """A database of its own for one test, dropped after it."""
    async with scratch_database(mongo_client) as database:
        yield database


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def signing_key() -> KeyPair:
    return KeyPair(kid="test-key-1")


def service_env(backend: Backend, signing_key: KeyPair, run_id: str) -> dict[str, str]:
    return explicit_env(
        app_env=backend.app_env,
        kafka=backend.kafka,
        mongo=backend.mongo,
        webhook_secret=TEST_WEBHOOK_SECRET,
        jwt_public_key=signing_key.public_pem,
        issuer=TEST_ISSUER,
        authorized_party=TEST_AZP,
        cursor_secret=TEST_CURSOR_SECRET,
    )


@dataclass
class Stack:
    supervisor: Supervisor
    gateway: Gateway
    urls: dict[str, str]
    databases: dict[str, str]


@pytest.fixture(scope="session")
def stack(backend: Backend, signing_key: KeyPair, run_id: str) -> Iterator[Stack]:
    """Every service's processes, started once for the end-to-end tests."""
    supervisor = Supervisor(service_env(backend, signing_key, run_id), echo=False)
    base = free_port_block()
    databases = {}
    urls = {}
    try:
        for spec in service_specs(base_port=base):
            service = spec.module.removeprefix("siteview_")
            extra = {}
            if service != "webhooks":
                databases[service] = f"{service}_{run_id}"
                extra["MONGODB_DATABASE"] = databases[service]
            supervisor.start(spec, extra)
            urls[spec.name] = f"http://127.0.0.1:{spec.port}"
        supervisor.wait_ready(timeout=90)
        yield Stack(supervisor, Gateway(urls["webhooks"]), urls, databases)
    finally:
        supervisor.stop_all()


#: Where stack blocks are looked for: below the kernel's ephemeral range (32768 and up on
#: Linux), so no outgoing connection's local port can take one between the check and the bind.
PORT_BLOCK_RANGE = (20000, 32000)


def free_port_block() -> int:
    """A base port from which every process of `service_specs` finds its port free now."""
    import random
    import socket

    offsets = [spec.port for spec in service_specs(base_port=0)]
    for _ in range(50):
        base = random.randrange(PORT_BLOCK_RANGE[0], PORT_BLOCK_RANGE[1] - max(offsets))
        sockets = []
        try:
            for offset in offsets:
                sock = socket.socket()
                sock.bind(("127.0.0.1", base + offset))
                sockets.append(sock)
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return base
    raise RuntimeError("no free block of ports")


def pytest_report_header(config: pytest.Config) -> str:
    return f"siteview backend: {_choose_backend()}"
