"""Delivery mechanics every worker shares (no service's rules): decode a Kafka batch, skip
events the service already applied (the Svix-id ledger), send poison messages to the topic's
dead-letter queue, apply the rest through the service's handler, then record them.

Offsets are committed by the subscriber's ack policy only after all of this returned; when
anything raises, the batch is rewound and redelivered after a back-off, and since every write
is idempotent the retry is harmless. A poison message never blocks its partition: it is parked
in `<topic>.dlq` with the reason, and the partition moves on. A message whose *parse* fails is
parked at once; a batch whose *apply* keeps failing the same way is redelivered a bounded
number of times, then applied in halves until each failing command stands alone, and those are
parked. A transient failure (an outage: see `failures.is_transient`) is never parked: its batch
is redelivered, with a capped back-off, until it applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker
from prometheus_client import Counter, Gauge, Histogram
from tenacity import AsyncRetrying, RetryCallState, wait_exponential_jitter

from siteview_common.events import (
    HEADER_DLQ_REASON,
    HEADER_DLQ_SOURCE,
    HEADER_EVENT_ID,
    HEADER_EVENT_TYPE,
    PoisonMessageError,
    PublishedEvent,
    Topics,
)
from siteview_common.failures import failure_class, is_transient
from siteview_common.ledger import EventLedger
from siteview_common.settings import DeliverySettings

log = logging.getLogger(__name__)

C = TypeVar("C")

EVENTS = Counter(
    "siteview_events_total",
    "Events consumed, by outcome (applied, stale, duplicate, ignored, dead_lettered)",
    ["group", "topic", "outcome"],
)
BATCH_SECONDS = Histogram("siteview_batch_seconds", "Time to apply one batch", ["group"])
END_TO_END_LAG = Gauge(
    "siteview_event_lag_seconds", "Gateway receipt to apply, last batch", ["group"]
)
REDELIVERIES = Counter(
    "siteview_redeliveries_total",
    "Failed batches rewound for redelivery, by failure class (transient or permanent)",
    ["group", "failure"],
)
CONSUMER_LAG = Gauge(
    "siteview_consumer_lag",
    "Messages not yet consumed: the partition's end offset minus the group's position",
    ["group", "topic", "partition"],
)
DEAD_LETTERS = Counter(
    "siteview_dead_letters_total",
    "Messages parked in a dead-letter queue, by stage (parse or apply) and error type",
    ["group", "topic", "stage", "error"],
)

#: Longest `dlq-reason` header: the exception's type and message, cut to this many characters.
DLQ_REASON_MAX_CHARS = 1000


@dataclass(frozen=True, slots=True)
class Inbound(Generic[C]):
    #: The ledger's id of the record: the Svix id of the gateway's records (`Decoded`).
    svix_id: str
    command: C
    record: ConsumerRecord[Any, Any]


@dataclass(frozen=True, slots=True)
class RedeliveryPolicy:
    """How often a batch failing the same non-transient way is redelivered whole before its
    commands are isolated, and how long to wait before each redelivery."""

    max_redeliveries: int = 5
    initial_seconds: float = 0.2
    max_seconds: float = 10.0

    @classmethod
    def from_settings(cls, settings: DeliverySettings) -> RedeliveryPolicy:
        return cls(
            settings.worker_max_redeliveries,
            settings.worker_retry_initial_seconds,
            settings.worker_retry_max_seconds,
        )

    def delay(self, attempt: int) -> float:
        """Seconds to wait before redelivering after the `attempt`-th consecutive failure
        (1-based): tenacity's exponential back-off from `initial_seconds`, doubling, with up
        to `initial_seconds` of jitter, never more than `max_seconds`."""
        wait = wait_exponential_jitter(
            multiplier=self.initial_seconds, max=self.max_seconds, jitter=self.initial_seconds
        )
        state = RetryCallState(retry_object=AsyncRetrying(), fn=None, args=(), kwargs={})
        state.attempt_number = max(1, attempt)
        return float(wait(state))


@dataclass(slots=True)
class _PartitionFailures:
    """Consecutive failed deliveries of one partition from the same offset."""

    offset: int
    attempts: int = 0
    permanent: int = 0


Parse = Callable[[PublishedEvent], C | None]


@dataclass(frozen=True, slots=True)
class Decoded(Generic[C]):
    """One record's value, decoded: the id the ledger dedupes it by, the command (None: not
    this consumer's business) and, when known, when it entered the system (ms since the
    epoch, for `siteview_event_lag_seconds`)."""

    dedupe_id: str
    command: C | None
    received_at: int | None = None


#: Decodes one record's value. Pure, like `Parse`: whatever it raises would happen again on
#: every redelivery, so that record is dead-lettered.
Decode = Callable[[bytes], Decoded[C]]


def clerk_decoder(parse: Parse[C]) -> Decode[C]:
    """The gateway's records: a `PublishedEvent`, deduped by its Svix id, turned into a
    command by `parse`."""

    def decode(value: bytes) -> Decoded[C]:
        event = PublishedEvent.model_validate_json(value)
        return Decoded(event.svix_id, parse(event), event.received_at)

    return decode


#: Writes a batch of commands; returns how many of them were stale (superseded by what is
#: stored or by a newer command of the same batch, so ignored), or None when it does not tell.
Apply = Callable[[Sequence[C]], Awaitable[int | None]]


def _header(record: ConsumerRecord[Any, Any], name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            return bytes(value).decode(errors="replace")
    return None


class BatchProcessor(Generic[C]):
    """Applies one consumer group's batches. `decode` turns a record into the service's
    command (None: not this service's business; for the gateway's records, `clerk_decoder`
    of the service's `parse`); it is pure, so whatever it raises (pydantic's
    `ValidationError`, `PoisonMessageError`, or a bug meeting unexpected input) would happen
    again on every redelivery: that message is dead-lettered. `apply` writes a batch of
    commands; when it raises, the whole batch is redelivered (`handle`), and when it keeps
    raising the same non-transient way, the culprits are found and dead-lettered."""

    def __init__(
        self,
        *,
        group: str,
        broker: KafkaBroker,
        ledger: EventLedger,
        decode: Decode[C],
        apply: Apply[C],
        policy: RedeliveryPolicy | None = None,
    ) -> None:
        self._group = group
        self._broker = broker
        self._ledger = ledger
        self._decode = decode
        self._apply = apply
        self._policy = policy or RedeliveryPolicy()
        self._failures: dict[tuple[str, int], _PartitionFailures] = {}

    async def handle(self, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        """One delivery of a batch. On failure: count it against each partition's starting
        offset, wait the back-off, and re-raise so the subscriber rewinds the batch. Once a
        batch starting there failed permanently more than `max_redeliveries` times, the next
        delivery isolates the failing commands instead of applying the batch whole."""
        starts = _starting_offsets(records)
        tracked = [
            failures
            for key, offset in starts.items()
            if (failures := self._failures.get(key)) is not None and failures.offset == offset
        ]
        isolate = any(f.permanent > self._policy.max_redeliveries for f in tracked)
        try:
            await self.process(records, isolate=isolate)
        except Exception as exc:
            kind = failure_class(exc)
            attempt = 1 + max((f.attempts for f in tracked), default=0)
            for key, offset in starts.items():
                failures = self._failures.get(key)
                if failures is None or failures.offset != offset:
                    failures = self._failures[key] = _PartitionFailures(offset)
                failures.attempts += 1
                if kind == "permanent":
                    failures.permanent += 1
            delay = self._policy.delay(attempt)
            REDELIVERIES.labels(self._group, kind).inc()
            extra = {
                "group": self._group,
                "failure": kind,
                "attempt": attempt,
                "retryInSeconds": round(delay, 3),
                "error": _reason(exc),
            }
            if kind == "transient":
                log.warning("batch failed (transient); it will be redelivered", extra=extra)
            else:
                log.exception("batch failed; it will be redelivered", extra=extra)
            await asyncio.sleep(delay)
            raise
        for key in starts:
            self._failures.pop(key, None)

    async def process(
        self, records: Sequence[ConsumerRecord[Any, Any]], *, isolate: bool = False
    ) -> None:
        """Decode, skip what the ledger holds, dead-letter what cannot parse, apply the rest
        and record it. `isolate`: apply in halves, dead-lettering each command that fails
        alone for a non-transient reason (any transient failure still raises)."""
        started = time.perf_counter()
        inbound: list[Inbound[C]] = []
        received: list[int] = []
        seen_in_batch: set[str] = set()
        for record in records:
            try:
                decoded = self._decode(record.value or b"")
            except Exception as exc:  # decoding is pure: it would fail the same way forever
                await self._dead_letter(record, exc, stage="parse")
                continue
            if decoded.command is None:
                self._count(record.topic, "ignored")
                continue
            if decoded.dedupe_id in seen_in_batch:
                self._count(record.topic, "duplicate")
                continue
            seen_in_batch.add(decoded.dedupe_id)
            inbound.append(Inbound(decoded.dedupe_id, decoded.command, record))
            if decoded.received_at is not None:
                received.append(decoded.received_at)

        already = await self._ledger.seen([i.svix_id for i in inbound])
        fresh = [i for i in inbound if i.svix_id not in already]
        applied = stale = 0
        if fresh and isolate:
            log.warning(
                "isolating the commands of a batch that keeps failing",
                extra={"group": self._group, "commands": len(fresh)},
            )
            applied, stale = await self._apply_in_halves(fresh)
        elif fresh:
            stale = await self._apply([i.command for i in fresh]) or 0
            await self._ledger.record([i.svix_id for i in fresh])
            applied = len(fresh) - stale
        topic = records[0].topic if records else ""
        self._count(topic, "applied", applied)
        self._count(topic, "stale", stale)
        self._count(topic, "duplicate", len(already))
        BATCH_SECONDS.labels(self._group).observe(time.perf_counter() - started)
        if received:
            END_TO_END_LAG.labels(self._group).set(max(0.0, time.time() - max(received) / 1000))

    async def _apply_in_halves(self, part: Sequence[Inbound[C]]) -> tuple[int, int]:
        """Apply each half of `part` (known to fail as a whole); a half that fails again is
        split in turn, until a command failing on its own is dead-lettered. Each half that
        applies is recorded at once, so a later transient failure does not apply it again.
        Returns how many commands applied, and how many of the others were stale."""
        middle = len(part) // 2
        applied = stale = 0
        for half in (part[:middle], part[middle:]):
            if not half:
                continue
            try:
                half_stale = await self._apply([i.command for i in half]) or 0
            except Exception as exc:
                if is_transient(exc):
                    raise
                if len(half) == 1:
                    await self._dead_letter(half[0].record, exc, stage="apply")
                else:
                    more_applied, more_stale = await self._apply_in_halves(half)
                    applied, stale = applied + more_applied, stale + more_stale
                continue
            await self._ledger.record([i.svix_id for i in half])
            applied += len(half) - half_stale
            stale += half_stale
        return applied, stale

    def _count(self, topic: str, outcome: str, n: int = 1) -> None:
        if n:
            EVENTS.labels(self._group, topic, outcome).inc(n)

    async def _dead_letter(
        self, record: ConsumerRecord[Any, Any], exc: Exception, *, stage: str
    ) -> None:
        reason = _reason(exc)
        log.warning(
            "dead-lettering message",
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "eventId": _header(record, HEADER_EVENT_ID),
                "stage": stage,
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
        DEAD_LETTERS.labels(self._group, record.topic, stage, type(exc).__name__).inc()


class LagRecorder:
    """Keeps `siteview_consumer_lag` for the partitions one consumer of `group` is assigned:
    each partition's end offset (the high watermark of its last fetch) minus the consumer's
    position, which the subscriber commits once a batch applied. A partition this consumer no
    longer holds (after a rebalance) is dropped from the metric; its new owner reports it."""

    def __init__(self, group: str) -> None:
        self._group = group
        self._reported: set[tuple[str, int]] = set()

    async def record(self, consumer: AIOKafkaConsumer | None) -> None:
        held: set[tuple[str, int]] = set()
        if consumer is not None:
            for tp in consumer.assignment():
                end = consumer.highwater(tp)
                if end is None:  # nothing fetched from it yet
                    continue
                try:
                    position = await asyncio.wait_for(consumer.position(tp), LAG_CHECK_SECONDS)
                except (TimeoutError, KafkaError):  # mid-rebalance: the next round reports it
                    continue
                CONSUMER_LAG.labels(self._group, tp.topic, str(tp.partition)).set(
                    max(0, end - position)
                )
                held.add((tp.topic, tp.partition))
        for topic, partition in self._reported - held:
            with contextlib.suppress(KeyError):
                CONSUMER_LAG.remove(self._group, topic, str(partition))
        self._reported = held


#: Longest wait for a consumer's position while recording lag.
LAG_CHECK_SECONDS = 1.0


def _reason(exc: BaseException) -> str:
    """The exception's type and message, bounded: what `dlq-reason` and the logs carry."""
    return f"{type(exc).__name__}: {exc}"[:DLQ_REASON_MAX_CHARS]


def _starting_offsets(records: Sequence[ConsumerRecord[Any, Any]]) -> dict[tuple[str, int], int]:
    """Each (topic, partition) of a batch and its earliest offset there: where the subscriber
    rewinds it to, so a redelivery of the same batch starts at the same offsets."""
    starts: dict[tuple[str, int], int] = {}
    for record in records:
        key = (record.topic, record.partition)
        starts[key] = min(record.offset, starts.get(key, record.offset))
    return starts


__all__ = [
    "HEADER_EVENT_TYPE",
    "BatchProcessor",
    "Decode",
    "Decoded",
    "EventLedger",
    "Inbound",
    "LagRecorder",
    "PoisonMessageError",
    "RedeliveryPolicy",
]
