"""Kafka wiring: the broker factory, topic creation and the consumer tuning every worker shares."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, for_code
from faststream.kafka import KafkaBroker

from siteview_common.events import Topics
from siteview_common.settings import KafkaSettings, exit_with

log = logging.getLogger(__name__)

#: Consumer fetch tuning: the 500 ms default wait dominates end-to-end latency.
CONSUMER_OPTIONS: dict[str, Any] = {
    "auto_offset_reset": "earliest",
    "fetch_max_wait_ms": 20,
    "batch_timeout_ms": 50,
    "max_records": 500,
}


def producer_options(settings: KafkaSettings) -> dict[str, Any]:
    """How every producer of the system publishes: acks=all, no lingering, idempotent where
    configured."""
    return {"acks": "all", "linger_ms": 0, "enable_idempotence": settings.idempotent_producer}


def make_broker(settings: KafkaSettings, *, client_id: str, **options: Any) -> KafkaBroker:
    """A FastStream broker whose producer publishes as `producer_options` says. Build it
    inside the running event loop (a composition root), never at import time."""
    return KafkaBroker(
        settings.kafka_servers,
        client_id=client_id,
        logger=logging.getLogger(client_id),
        **producer_options(settings),
        **options,
    )


async def start_producer(settings: KafkaSettings, *, client_id: str) -> AIOKafkaProducer:
    """A started aiokafka producer that publishes as `make_broker`'s does (`producer_options`).
    One that cannot start is closed, and raises."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_servers,
        client_id=client_id,
        **producer_options(settings),
    )
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise
    return producer


def all_topics() -> list[str]:
    """Every topic of the system: the Clerk topics, their dead-letter topics, the notices,
    the splat jobs and statuses (and the statuses' dead-letter topic)."""
    return [
        *Topics.ALL,
        *(Topics.dlq(t) for t in Topics.ALL),
        Topics.CHANGES,
        Topics.SPLAT_JOBS,
        Topics.SPLAT_STATUS,
        Topics.dlq(Topics.SPLAT_STATUS),
    ]


#: Configs a topic is created with besides `min.insync.replicas`.
TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    Topics.CHANGES: {"retention.ms": str(Topics.CHANGES_RETENTION_MS)},
}


#: Kafka's TOPIC_ALREADY_EXISTS: another process created the topic first, which is fine.
TOPIC_ALREADY_EXISTS = 36


class TopicSetupError(RuntimeError):
    """The topics could not be created as configured (one line, naming what is wrong)."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    partitions: int
    replication_factor: int
    min_insync_replicas: int

    @classmethod
    def resolve(cls, settings: KafkaSettings, brokers: int) -> TopicSpec:
        """The settings, with the defaults that depend on the cluster's size filled in."""
        replication = settings.kafka_replication_factor or max(1, min(3, brokers))
        min_insync = settings.kafka_min_insync_replicas or max(1, replication - 1)
        if min_insync > replication:
            raise TopicSetupError(
                f"KAFKA_MIN_INSYNC_REPLICAS ({min_insync}) is larger than the replication "
                f"factor ({replication}): no write with acks=all could ever succeed"
            )
        return cls(settings.kafka_topic_partitions, replication, min_insync)

    def new_topic(self, name: str) -> NewTopic:
        return NewTopic(
            name,
            self.partitions,
            self.replication_factor,
            topic_configs={
                "min.insync.replicas": str(self.min_insync_replicas),
                **TOPIC_CONFIGS.get(name, {}),
            },
        )


def _topic_errors(response: Any) -> list[str]:
    """`<topic> (<ERROR_NAME>: <message>)` for every topic the broker refused to create."""
    errors = []
    for entry in response.topic_errors:
        topic, code = entry[0], entry[1]
        if code in (0, TOPIC_ALREADY_EXISTS):
            continue
        message = entry[2] if len(entry) > 2 and entry[2] else for_code(code).description
        errors.append(f"{topic} ({for_code(code).message}: {message})")
    return errors


def _created(response: Any) -> list[str]:
    return [entry[0] for entry in response.topic_errors if entry[1] == 0]


async def create_topics(settings: KafkaSettings, topics: Sequence[str]) -> list[str]:
    """Create those of `topics` that do not exist yet, with the configured partitions,
    replication factor and `min.insync.replicas`; return the ones created. A topic the broker
    refuses raises `TopicSetupError` naming it and the broker's error; one that exists already
    (or that another process creates meanwhile: TOPIC_ALREADY_EXISTS) is left as it is."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_servers, client_id="siteview-admin"
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in dict.fromkeys(topics) if t not in existing]
        if not wanted:
            return []
        cluster = await admin.describe_cluster()
        spec = TopicSpec.resolve(settings, len(cluster["brokers"]))
        response = await admin.create_topics([spec.new_topic(t) for t in wanted])
        errors = _topic_errors(response)
        if errors:
            noun = "topic" if len(errors) == 1 else "topics"
            raise TopicSetupError(f"cannot create Kafka {noun} {', '.join(errors)}")
        created = _created(response)
        log.info(
            "created topics",
            extra={
                "topics": created,
                "partitions": spec.partitions,
                "replicationFactor": spec.replication_factor,
                "minInsyncReplicas": spec.min_insync_replicas,
            },
        )
        return created
    finally:
        await admin.close()


async def ensure_topics(settings: KafkaSettings, topics: Sequence[str] | None = None) -> None:
    """At start-up: create the missing topics (all of the system's by default), or end the
    process with one line naming the topic and the broker's error, or the unreachable broker.
    Production clusters may pre-create the topics instead."""
    try:
        await create_topics(settings, all_topics() if topics is None else topics)
    except TopicSetupError as exc:
        exit_with(str(exc))
    except KafkaConnectionError as exc:
        exit_with(f"cannot reach Kafka at KAFKA_BOOTSTRAP_SERVERS: {type(exc).__name__}")
