"""The commands docker-compose.yml runs inside the images, run here on the test backend: the
kafka-init job creates every topic on a fresh broker, and each process's healthcheck passes
against that process running and fails where nothing answers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from compose.files import healthcheck_argv, services

from conftest import Backend, Stack, broker_of_its_own
from siteview_common.kafka import all_topics
from siteview_devstack.broker import free_port
from siteview_devstack.processes import base_env
from support import eventually_async

pytestmark = pytest.mark.e2e


def in_this_environment(argv: list[str]) -> list[str]:
    """`argv` with the image's `python` (its environment's, first on PATH) as this one's."""
    assert argv[0] == "python", argv
    return [sys.executable, *argv[1:]]


async def partitions_of(kafka: str, topics: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:

        async def described() -> dict[str, int] | None:
            found = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(topics)}
            return found if all(found.get(topic) for topic in topics) else None

        # Apache Kafka publishes a new topic's metadata asynchronously.
        return await eventually_async(described, timeout=15)
    finally:
        await admin.close()


@contextmanager
def topicless_broker(backend: Backend) -> Iterator[dict[str, str]]:
    """A broker of its own where starting one is cheap (Tansu). On the engines backend, whose
    brokers are Apache Kafka (slow to start), the session's own: this test runs before the
    suite's processes there (tests/compose sorts first), but may find the topics created."""
    if backend.name == "engines":
        yield {"KAFKA_BOOTSTRAP_SERVERS": backend.kafka}
        return
    with broker_of_its_own(backend) as (_, kafka_env):
        yield kafka_env


def test_kafka_init_creates_every_topic_with_12_partitions(backend: Backend) -> None:
    init = services()["kafka-init"]
    argv = in_this_environment(init["entrypoint"])
    with topicless_broker(backend) as kafka_env:
        env: dict[str, Any] = {**base_env(), "APP_ENV": "production", **kafka_env}
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=90)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-1] == "kafka-init: every topic exists"
        kafka = kafka_env["KAFKA_BOOTSTRAP_SERVERS"]
        assert asyncio.run(partitions_of(kafka, all_topics())) == dict.fromkeys(all_topics(), 12)
        again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=90)
        assert again.returncode == 0, again.stderr  # a second run finds them and leaves them


def test_every_process_healthcheck_passes_on_that_process_and_fails_on_nothing(
    stack: Stack,
) -> None:
    checked = []
    for name, service in services().items():
        if name not in stack.urls:
            continue
        argv = in_this_environment(healthcheck_argv(service))
        port = stack.urls[name].rsplit(":", 1)[1]
        env = {**base_env(), "PORT": port}
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"{name}: {done.stderr}"
        checked.append(name)
    assert sorted(checked) == sorted(stack.urls)
    nothing = {**base_env(), "PORT": str(free_port())}
    done = subprocess.run(argv, env=nothing, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
