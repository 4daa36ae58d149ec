"""What the fault scenarios share: a gateway client that counts every answer, Clerk's retries,
the workers' outcome counters, and the counts that check the invariant."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from faults.reliability import Scenario
from prometheus_client.parser import text_string_to_metric_families
from pymongo import MongoClient
from tcpproxy import TcpProxy

from conftest import Backend
from siteview_common.events import HEADER_EVENT_ID, Topics
from support import (
    LEDGER_COLLECTION,
    Delivery,
    ExtraWorker,
    Gateway,
    UserVersions,
    assert_all_applied,
    eventually,
    ledger_holds,
    metric_value,
    new_svix_id,
    new_user_id,
    user_event,
    wait_in_ledger,
)

USERS_GROUP = "users-service"
#: Below the first version `UserVersions` hands out: later ones are newer.
FIRST_VERSION = 1_773_000_000_000


class TallyingGateway(Gateway):
    """A `Gateway` that remembers every answer: how many deliveries were posted, which Svix
    ids were acknowledged (2xx) and how many answers were anything else."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url)
        self._lock = threading.Lock()
        self.statuses: Counter[int] = Counter()
        self.acked_ids: set[str] = set()
        self.answer_seconds: list[float] = []

    def deliver(
        self,
        event: dict[str, Any] | bytes,
        *,
        svix_id: str | None = None,
        path: str = "/webhooks/clerk",
    ) -> httpx.Response:
        svix_id = svix_id or new_svix_id()
        started = time.monotonic()
        try:
            response = super().deliver(event, svix_id=svix_id, path=path)
        except httpx.TransportError:
            with self._lock:
                self.statuses[0] += 1  # no answer at all: a refusal for Clerk
            raise
        with self._lock:
            self.statuses[response.status_code] += 1
            self.answer_seconds.append(time.monotonic() - started)
            if response.is_success:
                self.acked_ids.add(svix_id)
        return response

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())

    @property
    def acked(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def refused(self) -> int:
        return self.sent - self.acked


def new_versions(flow: UserVersions, count: int) -> list[Delivery]:
    """`count` new versions of `flow`'s users, round-robin, in order: each a fresh Svix id,
    none a retry or a replay (`flow.expected()` knows them all)."""
    clock = max(flow.newest.values(), default=FIRST_VERSION)
    deliveries = []
    for i in range(count):
        user_id = flow.user_ids[i % len(flow.user_ids)]
        clock += 1
        deliveries.append(Delivery(new_svix_id(), flow.event(user_id, clock)))
        flow.newest[user_id] = clock
    flow.svix_ids += [d.svix_id for d in deliveries]
    return deliveries


class Retrying(Gateway):
    """Posts through `gateway`, and posts again (the same Svix id) after `retry_after` s while
    the answer is not 2xx, as Clerk retries; fails if still refused after `give_up_after` s.
    Under a `SteadyLoad`, a fault that makes the gateway answer 503 is retried, not fatal."""

    def __init__(
        self, gateway: Gateway, *, retry_after: float = 0.5, give_up_after: float = 90.0
    ) -> None:
        super().__init__(gateway.base_url, gateway.secret)
        self.gateway = gateway
        self.retry_after = retry_after
        self.give_up_after = give_up_after

    def deliver(
        self,
        event: dict[str, Any] | bytes,
        *,
        svix_id: str | None = None,
        path: str = "/webhooks/clerk",
    ) -> httpx.Response:
        svix_id = svix_id or new_svix_id()
        deadline = time.monotonic() + self.give_up_after
        while True:
            try:
                response = self.gateway.deliver(event, svix_id=svix_id, path=path)
                if response.is_success:
                    return response
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{svix_id} never acknowledged"
            time.sleep(self.retry_after)


def deliver_once_acked(gateway: Gateway, delivery: Delivery) -> float:
    """Deliver until acknowledged (`Retrying`); the seconds that took."""
    started = time.monotonic()
    Retrying(gateway).deliver(delivery.event, svix_id=delivery.svix_id)
    return time.monotonic() - started


def deliver_until_acked(gateway: Gateway, deliveries: Sequence[Delivery], threads: int = 6) -> None:
    """`deliver_once_acked` for each of `deliveries`, `threads` at a time."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda d: deliver_once_acked(gateway, d), deliveries))


def outcomes(worker_url: str, topic: str = Topics.USERS) -> Counter[str]:
    """What the worker at `worker_url` counted per outcome on `topic` so far."""
    text = httpx.get(f"{worker_url}/metrics", timeout=10).text
    counted: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "siteview_events_total"
                and labels.get("group") == USERS_GROUP
                and labels.get("topic") == topic
            ):
                counted[labels["outcome"]] += int(sample.value)
    return counted


def redeliveries(worker_url: str, failure: str) -> float:
    """How many failed batches the worker rewound for redelivery, of one failure class."""
    return metric_value(
        worker_url, "siteview_redeliveries_total", group=USERS_GROUP, failure=failure
    )


class WorkerTally:
    """The outcome counters of the workers a scenario ran, from a starting point: read each
    worker before it is killed or stopped, since its counters die with it."""

    def __init__(self, *urls: str) -> None:
        self._start = {url: outcomes(url) for url in urls}
        self._taken: Counter[str] = Counter()

    def since(self, url: str) -> Counter[str]:
        """What `url` counted since the tally started (or last took it)."""
        return outcomes(url) - self._start[url]

    def restart(self, url: str) -> None:
        """`url` is a new process (its counters start at zero)."""
        self._start[url] = Counter()

    def take(self, url: str) -> Counter[str]:
        """Fold in what `url` counted since its start: call before it goes away."""
        now = outcomes(url)
        since = now - self._start[url]
        self._taken += since
        self._start[url] = now
        return since

    def total(self, *alive: str) -> Counter[str]:
        for url in alive:
            self.take(url)
        return Counter(self._taken)


async def _dead_lettered(kafka: str, topic: str, wanted: set[str]) -> set[str]:
    """Which of `wanted` the DLQ of `topic` holds, read up to its end."""
    dlq = Topics.dlq(topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka)
    await consumer.start()
    try:
        partitions = [TopicPartition(dlq, p) for p in consumer.partitions_for_topic(dlq) or ()]
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = [TopicPartition(dlq, p) for p in consumer.partitions_for_topic(dlq) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: set[str] = set()
        async with asyncio.timeout(60):
            for partition in partitions:
                while await consumer.position(partition) < ends[partition]:
                    for records in (await consumer.getmany(partition, timeout_ms=200)).values():
                        for record in records:
                            svix_id = dict(record.headers).get(HEADER_EVENT_ID, b"").decode()
                            if svix_id in wanted:
                                found.add(svix_id)
        return found
    finally:
        await consumer.stop()


def dead_lettered(kafka: str, wanted: Iterable[str], topic: str = Topics.USERS) -> set[str]:
    return asyncio.run(_dead_lettered(kafka, topic, set(wanted)))


def delivery_counts(
    gateway: TallyingGateway,
    mongo_url: str,
    database: str,
    workers: Counter[str],
    parked: Iterable[str] = (),
) -> dict[str, int]:
    """The scenario's counts in the report's order. `parked`: the acknowledged ids found in
    the DLQ (handled, not applied); lost: acknowledged ids neither applied nor parked."""
    acked = gateway.acked_ids
    parked = set(parked) & acked
    applied = ledger_holds(mongo_url, database, sorted(acked - parked))
    return {
        "sent": gateway.sent,
        "acked 2xx": gateway.acked,
        "refused": gateway.refused,
        "applied": applied,
        "duplicates absorbed": workers["duplicate"],
        "dead-lettered": workers["dead_lettered"],
        "lost": len(acked) - applied - len(parked),
    }


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


@dataclass
class System:
    """A gateway and a users worker on a broker of their own, which advertises a fault proxy
    in front of it (every Kafka connection, the gateway's and the worker's, passes through
    `broker_proxy`), the worker's MongoDB reached through `mongo_proxy`."""

    backend: Backend
    broker: Any  # KafkaServer (engines) or TansuBroker (embedded)
    broker_proxy: TcpProxy
    mongo_proxy: TcpProxy
    gateway_url: str
    worker: ExtraWorker
    worker_env: dict[str, str]
    database: str

    @property
    def kafka(self) -> str:
        return f"{self.broker_proxy.host}:{self.broker_proxy.port}"

    def gateway(self) -> TallyingGateway:
        return TallyingGateway(self.gateway_url)

    def second_worker(self) -> ExtraWorker:
        """Another users worker in the worker's consumer group, on the same database."""
        return ExtraWorker(self.worker_env, "users", self.database)

    def settle(
        self,
        scenario: Scenario,
        gateway: TallyingGateway,
        flow: UserVersions,
        workers: WorkerTally,
        *alive: str,
        parked: Iterable[str] = (),
    ) -> dict[str, int]:
        """Wait until every Svix id of `flow` is applied and each user is on its newest
        version; record the scenario's counts; nothing acknowledged may be lost."""
        try:
            assert_all_applied(self.backend.mongo, self.database, flow)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\nthe worker's last lines:\n{self.worker.output(30)}"
            ) from None
        counts = delivery_counts(
            gateway,
            self.backend.mongo,
            self.database,
            workers.total(*(alive or (self.worker.url,))),
            parked,
        )
        scenario.counts = counts
        repeats = gateway.acked - len(gateway.acked_ids)
        scenario.observe(
            f"duplicates absorbed: {counts['duplicates absorbed']}, of which the scenario's "
            f"own repeated deliveries (Clerk's retries of a Svix id already acknowledged) "
            f"account for {repeats}; the rest were written twice into Kafka or redelivered"
        )
        assert counts["lost"] == 0, counts
        scenario.observe(
            f"all {len(set(flow.svix_ids))} Svix ids of the flow in the ledger, each once; "
            f"each of its {len(flow.user_ids)} users on its newest version (the in-order result)"
        )
        return counts

    def warm_up(self) -> None:
        """A delivery through to the worker's ledger: the topics, the producer and the
        worker's group all answer (a fresh broker may take a while to take its first write)."""
        svix_id = new_svix_id()
        event = user_event("user.created", new_user_id(), updated_at=1)
        gateway = Gateway(self.gateway_url)
        eventually(lambda: gateway.deliver(event, svix_id=svix_id).is_success, timeout=60)
        wait_in_ledger(self.backend.mongo, self.database, svix_id, timeout=90)


async def _committed_offsets(kafka: str, group: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, group_id=group)
    await consumer.start()  # not subscribed: it reads the group's offsets, never joins it
    try:
        partitions = await consumer._client.fetch_all_metadata()
        offsets = {}
        for partition in sorted(partitions.partitions_for_topic(topic) or ()):
            offset = await consumer.committed(TopicPartition(topic, partition))
            offsets[partition] = offset if offset is not None else -1
        return offsets
    finally:
        await consumer.stop()


def committed_offsets(
    kafka: str, group: str = USERS_GROUP, topic: str = Topics.USERS
) -> dict[int, int]:
    """The offsets `group` committed on `topic`, by partition."""
    return asyncio.run(_committed_offsets(kafka, group, topic))


def ledger_count(mongo_url: str, database: str) -> int:
    """How many Svix ids the ledger of `database` holds."""
    client: MongoClient[Any] = MongoClient(mongo_url)
    try:
        return client[database][LEDGER_COLLECTION].count_documents({})
    finally:
        client.close()
