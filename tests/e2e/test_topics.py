"""Topics are created at start with explicit partitions, replication factor and
min.insync.replicas; a topic the broker refuses stops the worker with one line naming it.

What each backend does with a replication factor larger than the cluster: Apache Kafka (the
"engines" and "testcontainers" backends, one broker each) refuses it with
INVALID_REPLICATION_FACTOR. The embedded broker (Tansu) accepts any replication factor: it
lists its one broker as every replica. The tests assert exactly that, per backend.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from conftest import Backend
from siteview_common.events import Topics
from siteview_common.kafka import all_topics, create_topics
from siteview_common.settings import KafkaSettings
from siteview_devstack.broker import free_port
from siteview_devstack.processes import base_env
from support import eventually, eventually_async

pytestmark = pytest.mark.e2e

WORKER = Path(__file__).with_name("single_topic_worker.py")

#: Backends running Apache Kafka, which refuses more replicas than it has brokers.
APACHE_KAFKA = ("engines", "testcontainers")


@pytest.fixture
async def admin(backend: Backend) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=backend.kafka)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def describe(admin: AIOKafkaAdminClient, topic: str) -> dict[str, Any]:
    """Partitions (each with its replicas) and the topic's min.insync.replicas, once the
    broker's metadata knows the topic (Apache Kafka publishes a new topic asynchronously)."""

    async def known() -> Any:
        (metadata,) = await admin.describe_topics([topic])
        return metadata if metadata["error_code"] != UNKNOWN_TOPIC_OR_PARTITION else None

    metadata = await eventually_async(known, timeout=15)
    # Every config, filtered here: Tansu drops the connection when asked for named ones.
    (configs,) = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic, None)]
    )
    entries = {entry[0]: entry[1] for entry in configs.resources[0][4]}
    return {
        "error": metadata["error_code"],
        "replicas": sorted(len(p["replicas"]) for p in metadata["partitions"]),
        "min.insync.replicas": entries.get("min.insync.replicas"),
    }


#: Kafka's error code for a topic its metadata does not (yet) know.
UNKNOWN_TOPIC_OR_PARTITION = 3


def unique_topic() -> str:
    return f"topics-{uuid.uuid4().hex[:10]}"


async def test_topics_are_created_with_partitions_replicas_and_min_insync(
    backend: Backend, admin: AIOKafkaAdminClient
) -> None:
    settings = KafkaSettings(
        app_env="development", kafka_bootstrap_servers=backend.kafka, kafka_topic_partitions=3
    )
    topic = unique_topic()
    brokers = len((await admin.describe_cluster())["brokers"])
    replication = min(3, brokers)

    assert await create_topics(settings, [topic, Topics.dlq(topic)]) == [
        topic,
        Topics.dlq(topic),
    ]
    for name in (topic, Topics.dlq(topic)):
        assert await describe(admin, name) == {
            "error": 0,
            "replicas": [replication] * 3,
            "min.insync.replicas": str(max(1, replication - 1)),
        }
    assert await create_topics(settings, [topic]) == []  # it exists: nothing to do


async def test_processes_racing_to_create_a_topic_all_succeed(
    backend: Backend, admin: AIOKafkaAdminClient
) -> None:
    settings = KafkaSettings(
        app_env="development", kafka_bootstrap_servers=backend.kafka, kafka_topic_partitions=2
    )
    topic = unique_topic()
    # All four look the topic up before any creates it; the broker creates it once and answers
    # the others TOPIC_ALREADY_EXISTS, which is not an error.
    created = await asyncio.gather(*(create_topics(settings, [topic]) for _ in range(4)))
    assert sorted(created) == [[], [], [], [topic]]
    assert (await describe(admin, topic))["error"] == 0


def worker_env(backend: Backend, topic: str, **extra: str) -> dict[str, str]:
    env = base_env()
    env.update(
        APP_ENV="development",
        KAFKA_BOOTSTRAP_SERVERS=backend.kafka,
        MONGODB_URL=backend.mongo,
        MONGODB_DATABASE=f"topics_{uuid.uuid4().hex[:8]}",
        HOST="127.0.0.1",
        PORT=str(free_port()),
        LOG_LEVEL="INFO",
        TEST_TOPIC=topic,
        **extra,
    )
    return env


def start_worker(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.terminate()
    _, stderr = process.communicate(timeout=30)
    return stderr


def wait_for_exit_or_readiness(process: subprocess.Popen[str], port: str) -> str:
    """`exited` or `ready`, whichever the worker does first."""

    def settled() -> str | None:
        if process.poll() is not None:
            return "exited"
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
        except httpx.HTTPError:
            return None
        return "ready" if response.status_code == 200 else None

    return eventually(settled, timeout=90, interval=0.2)


#: What a worker does with KAFKA_REPLICATION_FACTOR=3 on each backend's one-broker cluster
#: (an `env` cluster may be either: whichever happens is asserted in full).
EXPECTED_OUTCOME = {"engines": "exited", "testcontainers": "exited", "embedded": "ready"}


async def test_a_replication_factor_larger_than_the_cluster(
    backend: Backend, admin: AIOKafkaAdminClient
) -> None:
    # The system's topics exist (as once any process started): the worker's own are missing.
    await create_topics(
        KafkaSettings(app_env="development", kafka_bootstrap_servers=backend.kafka), all_topics()
    )
    topic = unique_topic()
    env = worker_env(backend, topic, KAFKA_REPLICATION_FACTOR="3", KAFKA_TOPIC_PARTITIONS="3")
    process = start_worker(env)
    try:
        outcome = await asyncio.to_thread(wait_for_exit_or_readiness, process, env["PORT"])
        if backend.name in EXPECTED_OUTCOME:
            assert outcome == EXPECTED_OUTCOME[backend.name], stop(process)
        if outcome == "ready":
            # Accepted (Tansu lists its one broker as each of the three replicas): the topics
            # have the requested partitions, replicas and min.insync.replicas.
            for name in (topic, Topics.dlq(topic)):
                assert await describe(admin, name) == {
                    "error": 0,
                    "replicas": [3, 3, 3],
                    "min.insync.replicas": "2",
                }
    finally:
        stderr = stop(process)
    if outcome == "ready":
        assert "siteview:" not in stderr
    else:
        # Refused (Apache Kafka: INVALID_REPLICATION_FACTOR): one line naming the topic.
        assert process.returncode != 0
        lines = stderr.splitlines()
        assert len(lines) == 1, stderr
        assert lines[0].startswith("siteview: cannot create Kafka topic"), stderr
        assert topic in lines[0] and "INVALID_REPLICATION_FACTOR" in lines[0], stderr
        assert topic not in await admin.list_topics()


def test_an_unreachable_broker_stops_the_worker_with_one_line(backend: Backend) -> None:
    env = worker_env(backend, unique_topic())
    env["KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{free_port()}"
    process = start_worker(env)
    try:
        code = process.wait(timeout=90)
    finally:
        stderr = stop(process)
    assert code != 0
    assert (
        stderr == "siteview: cannot reach Kafka at KAFKA_BOOTSTRAP_SERVERS: KafkaConnectionError\n"
    )
