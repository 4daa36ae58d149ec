"""Backends and the running system, chosen as DESIGN says: KAFKA_BOOTSTRAP_SERVERS and
MONGODB_URL when set; else testcontainers' Kafka and MongoDB when a Docker engine answers;
else the embedded stack (Tansu + the MongoDB wire-protocol stand-in). The same tests run on all.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from siteview_devstack.broker import TansuBroker, free_port
from siteview_devstack.processes import Supervisor, base_env, service_specs
from support import (
    TEST_AZP,
    TEST_CURSOR_SECRET,
    TEST_ISSUER,
    TEST_WEBHOOK_SECRET,
    Gateway,
    KeyPair,
)


@dataclass(frozen=True)
class Backend:
    name: str
    kafka: str
    mongo: str

    @property
    def is_standin(self) -> bool:
        return self.name == "embedded"


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


def _embedded(stack: ExitStack) -> Backend:
    from siteview_devstack.mongo.server import start_in_thread

    broker = TansuBroker(port=free_port()).start()
    stack.callback(broker.stop)
    standin = start_in_thread(port=0)
    stack.callback(standin.stop)
    return Backend("embedded", broker.bootstrap_servers, standin.url)


@pytest.fixture(scope="session")
def backend() -> Iterator[Backend]:
    with ExitStack() as stack:
        kafka, mongo = os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), os.environ.get("MONGODB_URL")
        if kafka and mongo:
            yield Backend("env", kafka, mongo)
        elif _docker_answers():
            yield _testcontainers(stack)
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
    name = f"test_{uuid.uuid4().hex[:12]}"
    try:
        yield mongo_client[name]
    finally:
        await mongo_client.drop_database(name)


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def signing_key() -> KeyPair:
    return KeyPair(kid="test-key-1")


def service_env(backend: Backend, signing_key: KeyPair, run_id: str) -> dict[str, str]:
    env = base_env()
    env.update(
        APP_ENV="development",  # the stand-in is refused otherwise; every secret is explicit
        KAFKA_BOOTSTRAP_SERVERS=backend.kafka,
        MONGODB_URL=backend.mongo,
        CLERK_WEBHOOK_SIGNING_SECRET=TEST_WEBHOOK_SECRET,
        CLERK_JWT_KEY=signing_key.public_pem,
        CLERK_ISSUER=TEST_ISSUER,
        CLERK_AUTHORIZED_PARTIES=TEST_AZP,
        CURSOR_SECRET=TEST_CURSOR_SECRET,
        LOG_LEVEL="INFO",
    )
    for key in ("CLERK_JWKS_URL", "CLERK_AUDIENCE", "CLERK_INSTANCE_ID", "CLERK_WEBHOOK_SECRET"):
        env.pop(key, None)
    return env


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


def free_port_block() -> int:
    """A base port from which every process of `service_specs` finds its port free now."""
    import socket

    offsets = [spec.port for spec in service_specs(base_port=0)]
    for _ in range(50):
        base = free_port()
        if base + max(offsets) > 65535:
            continue
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
