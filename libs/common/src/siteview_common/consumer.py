"""Delivery mechanics every worker shares (no service's rules): decode a Kafka batch, skip
events the service already applied (the Svix-id ledger), send poison messages to the topic's
dead-letter queue, apply the rest through the service's handler, then record them.

Offsets are committed by the subscriber's ack policy only after all of this returned; when
anything raises, the batch is rewound and redelivered, and since every write is idempotent the
retry is harmless. A poison message never blocks its partition: it is parked in `<topic>.dlq`
with the reason, and the partition moves on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker
from prometheus_client import Counter, Gauge, Histogram

from siteview_common.events import (
    HEADER_DLQ_REASON,
    HEADER_DLQ_SOURCE,
    HEADER_EVENT_ID,
    HEADER_EVENT_TYPE,
    PoisonMessageError,
    PublishedEvent,
    Topics,
)
from siteview_common.ledger import EventLedger

log = logging.getLogger(__name__)

C = TypeVar("C")

EVENTS = Counter(
    "siteview_events_total", "Events consumed, by outcome", ["group", "topic", "outcome"]
)
BATCH_SECONDS = Histogram("siteview_batch_seconds", "Time to apply one batch", ["group"])
END_TO_END_LAG = Gauge(
    "siteview_event_lag_seconds", "Gateway receipt to apply, last batch", ["group"]
)


@dataclass(frozen=True, slots=True)
class Inbound(Generic[C]):
    svix_id: str
    command: C


Parse = Callable[[PublishedEvent], C | None]
Apply = Callable[[Sequence[C]], Awaitable[None]]


def _header(record: ConsumerRecord[Any, Any], name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            return bytes(value).decode(errors="replace")
    return None


class BatchProcessor(Generic[C]):
    """Applies one consumer group's batches. `parse` turns a published event into the service's
    command (None: not this service's business); it is pure, so whatever it raises (pydantic's
    `ValidationError`, `PoisonMessageError`, or a bug meeting unexpected input) would happen
    again on every redelivery: that message is dead-lettered. `apply` writes a batch of
    commands; when it raises, the whole batch is redelivered."""

    def __init__(
        self,
        *,
        group: str,
        broker: KafkaBroker,
        ledger: EventLedger,
        parse: Parse[C],
        apply: Apply[C],
    ) -> None:
        self._group = group
        self._broker = broker
        self._ledger = ledger
        self._parse = parse
        self._apply = apply

    async def process(self, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        started = time.perf_counter()
        inbound: list[Inbound[C]] = []
        received: list[int] = []
        seen_in_batch: set[str] = set()
        for record in records:
            try:
                event = PublishedEvent.model_validate_json(record.value or b"")
                command = self._parse(event)
            except Exception as exc:  # parse is pure: it would fail the same way forever
                await self._dead_letter(record, exc)
                continue
            if command is None:
                self._count(record.topic, "ignored")
                continue
            if event.svix_id in seen_in_batch:
                self._count(record.topic, "duplicate")
                continue
            seen_in_batch.add(event.svix_id)
            inbound.append(Inbound(event.svix_id, command))
            received.append(event.received_at)

        already = await self._ledger.seen([i.svix_id for i in inbound])
        fresh = [i for i in inbound if i.svix_id not in already]
        if fresh:
            await self._apply([i.command for i in fresh])
            await self._ledger.record([i.svix_id for i in fresh])
        topic = records[0].topic if records else ""
        self._count(topic, "applied", len(fresh))
        self._count(topic, "duplicate", len(already))
        BATCH_SECONDS.labels(self._group).observe(time.perf_counter() - started)
        if received:
            END_TO_END_LAG.labels(self._group).set(max(0.0, time.time() - max(received) / 1000))

    def _count(self, topic: str, outcome: str, n: int = 1) -> None:
        if n:
            EVENTS.labels(self._group, topic, outcome).inc(n)

    async def _dead_letter(self, record: ConsumerRecord[Any, Any], exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {exc}"[:1000]
        log.warning(
            "dead-lettering message",
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "eventId": _header(record, HEADER_EVENT_ID),
                "reason": reason,
            },
        )
        headers = {k: bytes(v).decode(errors="replace") for k, v in record.headers or ()}
        headers.update(
            {
                HEADER_DLQ_REASON: reason,
                HEADER_DLQ_SOURCE: f"{record.topic}/{record.partition}/{record.offset}",
                "dlq-group": self._group,
            }
        )
        await self._broker.publish(
            record.value or b"",
            topic=Topics.dlq(record.topic),
            key=record.key,
            headers=headers,
        )
        self._count(record.topic, "dead_lettered")


__all__ = [
    "HEADER_EVENT_TYPE",
    "BatchProcessor",
    "EventLedger",
    "Inbound",
    "PoisonMessageError",
]
