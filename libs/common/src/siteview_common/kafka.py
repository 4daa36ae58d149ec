"""Kafka wiring: the broker factory, topic creation and the consumer tuning every worker shares."""

from __future__ import annotations

import logging
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream.kafka import KafkaBroker

from siteview_common.events import Topics
from siteview_common.settings import KafkaSettings

log = logging.getLogger(__name__)

#: Consumer fetch tuning: the 500 ms default wait dominates end-to-end latency.
CONSUMER_OPTIONS: dict[str, Any] = {
    "auto_offset_reset": "earliest",
    "fetch_max_wait_ms": 20,
    "batch_timeout_ms": 50,
    "max_records": 500,
}


def make_broker(settings: KafkaSettings, *, client_id: str, **options: Any) -> KafkaBroker:
    """A FastStream broker that produces with acks=all and no lingering. Build it inside the
    running event loop (a composition root), never at import time."""
    return KafkaBroker(
        settings.kafka_servers,
        client_id=client_id,
        acks="all",
        linger_ms=0,
        enable_idempotence=settings.idempotent_producer,
        logger=logging.getLogger(client_id),
        **options,
    )


def all_topics() -> list[str]:
    return [*Topics.ALL, *(Topics.dlq(t) for t in Topics.ALL)]


async def ensure_topics(settings: KafkaSettings, topics: list[str] | None = None) -> None:
    """Create the topics (idempotent). Production clusters may pre-create them instead."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_servers, client_id="siteview-admin"
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in (topics or all_topics()) if t not in existing]
        if not wanted:
            return
        new = [NewTopic(t, settings.kafka_topic_partitions, 1) for t in wanted]
        try:
            await admin.create_topics(new)
        except TopicAlreadyExistsError:
            pass  # another process created it first
        log.info("created topics", extra={"topics": wanted})
    finally:
        await admin.close()
