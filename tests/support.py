"""Test helpers: sign webhooks as Clerk would, mint tokens with the test key, wait for state."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client.parser import text_string_to_metric_families
from pymongo import AsyncMongoClient, MongoClient
from pymongo.asynchronous.database import AsyncDatabase

from siteview_common.events import HEADER_EVENT_ID
from siteview_devstack.broker import free_port
from siteview_devstack.processes import ProcessSpec, RunningProcess, Supervisor
from siteview_devstack.signing import sign
from siteview_devstack.tokens import mint_token

T = TypeVar("T")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "clerk"

TEST_WEBHOOK_SECRET = "whsec_dGVzdC1zZWNyZXQtZm9yLXRoZS1zaXRldmlldy1zdWl0ZQ=="
OLD_WEBHOOK_SECRET = "whsec_b2xkLXNlY3JldC1zdGlsbC12YWxpZC1mb3ItMjRo"
TEST_ISSUER = "https://clerk.siteview.test"
TEST_AZP = "https://app.siteview.test"
TEST_CURSOR_SECRET = "test-cursor-secret"


def example(name: str) -> dict[str, Any]:
    """A fresh copy of one of the composed Clerk events in examples/clerk."""
    return copy.deepcopy(json.loads((EXAMPLES / f"{name}.json").read_text()))


@asynccontextmanager
async def scratch_database(
    client: AsyncMongoClient[Any], prefix: str = "test"
) -> AsyncIterator[AsyncDatabase[Any]]:
    """A database of its own for one test, dropped after it."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        yield client[name]
    finally:
        await client.drop_database(name)


def new_user_id() -> str:
    return f"user_{uuid.uuid4().hex}"


def new_svix_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def user_event(
    kind: str,
    user_id: str,
    *,
    updated_at: int,
    first_name: str | None = "Ada",
    last_name: str | None = "Lovelace",
) -> dict[str, Any]:
    """A user.created / user.updated / user.deleted event for `user_id`."""
    if kind == "user.deleted":
        event = example("user.deleted")
        event["data"]["id"] = user_id
        event["timestamp"] = updated_at
        return event
    event = example("user.created")
    event["type"] = kind
    event["data"].update(id=user_id, first_name=first_name, last_name=last_name)
    event["data"]["updated_at"] = updated_at
    event["timestamp"] = updated_at
    return event


class KeyPair:
    def __init__(self, kid: str) -> None:
        self.kid = kid
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private_pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        self.public_pem = (
            self._key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def token(self, sub: str, **overrides: Any) -> str:
        options: dict[str, Any] = {"issuer": TEST_ISSUER, "azp": TEST_AZP}
        options.update(overrides)
        return mint_token(sub, private_key=self.private_pem, kid=self.kid, **options)


class Gateway:
    """Posts signed deliveries to a running gateway."""

    def __init__(self, base_url: str, secret: str = TEST_WEBHOOK_SECRET) -> None:
        self.base_url = base_url
        self.secret = secret

    def deliver(
        self,
        event: dict[str, Any] | bytes,
        *,
        svix_id: str | None = None,
        path: str = "/webhooks/clerk",
    ) -> httpx.Response:
        body = event if isinstance(event, bytes) else json.dumps(event).encode()
        headers = sign(body, self.secret, msg_id=svix_id or new_svix_id())
        return httpx.post(f"{self.base_url}{path}", content=body, headers=headers, timeout=30)


def eventually(check: Callable[[], T | None], timeout: float = 20.0, interval: float = 0.05) -> T:
    """Poll `check` until it returns something truthy; fail with its last value otherwise."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


async def eventually_async(
    check: Callable[[], Awaitable[T | None]], timeout: float = 20.0, interval: float = 0.05
) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


async def dead_letter_headers(kafka: str, dlq_topic: str, svix_id: str) -> dict[str, str]:
    """The headers of the message `svix_id` once it reached `dlq_topic` (read from the start
    by a consumer group of its own)."""
    consumer = AIOKafkaConsumer(
        dlq_topic,
        bootstrap_servers=kafka,
        group_id=f"dlq-reader-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        headers = {k: v.decode() for k, v in record.headers}
                        if headers.get(HEADER_EVENT_ID) == svix_id:
                            return headers
    finally:
        await consumer.stop()


def run_module(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m <argv>` with exactly `env`, its output captured."""
    argv = [sys.executable, "-m", *argv]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


# --- Markers: proof that a worker got past a point of a partition --------------------------

#: Where a worker records the Svix ids it applied (its ledger), in the service's database.
LEDGER_COLLECTION = "processed_events"


def partition_of(key: str, partitions: int) -> int:
    """The partition a producer puts `key` on: Kafka's default partitioner (murmur2 of the
    key's bytes, as the Java client and aiokafka, under the gateway's producer, compute it)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def key_on_partition_of(key: str, partitions: int, prefix: str = "user_") -> str:
    """A fresh id (`prefix` + random hex) that lands on the same partition as `key`: events
    keyed by it are ordered after everything delivered before them for `key`."""
    target = partition_of(key, partitions)
    while True:
        candidate = f"{prefix}{uuid.uuid4().hex}"
        if partition_of(candidate, partitions) == target:
            return candidate


async def partition_count(kafka: str, topic: str) -> int:
    """How many partitions `topic` has on the broker at `kafka`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    count = len(described["partitions"])
    assert count > 0, f"topic {topic} has no partitions: {described}"
    return count


def partition_count_sync(kafka: str, topic: str) -> int:
    """`partition_count` for synchronous tests (no event loop running in this thread)."""
    return asyncio.run(partition_count(kafka, topic))


def wait_in_ledger(mongo_url: str, database: str, svix_id: str, timeout: float = 30.0) -> None:
    """Wait until the worker writing `database` recorded `svix_id` as applied. A worker records
    a batch's ids only after the batch's writes returned, and applies a partition's batches
    one after the other: once a marker's id is there, every event delivered before the marker
    on the marker's partition has been applied (or found stale) too."""
    client: MongoClient[Any] = MongoClient(mongo_url)
    try:
        ledger = client[database][LEDGER_COLLECTION]
        eventually(lambda: ledger.find_one({"_id": svix_id}) is not None, timeout=timeout)
    finally:
        client.close()


# --- Many users' versions, and more workers in a service's group --------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    svix_id: str
    event: dict[str, Any]


class UserVersions:
    """Many users' profiles changing as Clerk sends them: each round gives every user a newer
    version (`user.created` first, then `user.updated` with an increasing `updated_at` and a
    first name naming the version), in shuffled order, with some deliveries sent twice (a Clerk
    retry: the same Svix id) and some older states sent again under a new Svix id (a replay)."""

    def __init__(self, users: int, *, seed: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.user_ids = [new_user_id() for _ in range(users)]
        self.newest: dict[str, int] = {}
        self.svix_ids: list[str] = []
        self._sent: list[Delivery] = []
        self._clock = 1_773_152_525_000

    @staticmethod
    def name_of(version: int) -> str:
        return f"V{version} Lovelace"

    def event(self, user_id: str, version: int) -> dict[str, Any]:
        kind = "user.updated" if user_id in self.newest else "user.created"
        return user_event(kind, user_id, updated_at=version, first_name=f"V{version}")

    def next_round(self) -> list[Delivery]:
        deliveries = []
        for user_id in self.user_ids:
            self._clock += 1
            delivery = Delivery(new_svix_id(), self.event(user_id, self._clock))
            self.newest[user_id] = self._clock
            deliveries.append(delivery)
        earlier = self._sent
        retries = self.rng.sample(deliveries + earlier, k=len(deliveries) // 4)
        replays = [
            Delivery(new_svix_id(), d.event)
            for d in self.rng.sample(earlier, k=min(len(earlier), len(deliveries) // 4))
        ]
        self._sent = self._sent + deliveries + replays
        self.svix_ids += [d.svix_id for d in deliveries + replays]
        batch = deliveries + retries + replays
        self.rng.shuffle(batch)
        return batch

    def expected(self) -> dict[str, tuple[str, int]]:
        """Each user's (name, version) once everything sent so far is applied."""
        return {uid: (self.name_of(v), v) for uid, v in self.newest.items()}


def deliver_all(gateway: Gateway, deliveries: Sequence[Delivery], threads: int = 6) -> None:
    """Send `deliveries` through the gateway, `threads` at a time; each must answer 202."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        statuses = list(
            pool.map(lambda d: gateway.deliver(d.event, svix_id=d.svix_id).status_code, deliveries)
        )
    assert statuses == [202] * len(deliveries), sorted(set(statuses))


class SteadyLoad:
    """Rounds of `UserVersions` delivered one after the other from a thread until `stop()`,
    which returns after the round in flight was delivered in full. With `rounds_per_second`,
    a round starts no sooner than that pace allows (else as soon as the last one was acked)."""

    def __init__(
        self, gateway: Gateway, flow: UserVersions, *, rounds_per_second: float | None = None
    ) -> None:
        self.gateway = gateway
        self.flow = flow
        self.interval = 1 / rounds_per_second if rounds_per_second else 0.0
        self.rounds = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steady-load", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                started = time.monotonic()
                deliver_all(self.gateway, self.flow.next_round())
                self.rounds += 1
                self._stopping.wait(max(0.0, started + self.interval - time.monotonic()))
        except BaseException as exc:
            self._error = exc

    def start(self) -> SteadyLoad:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=120)
        assert not self._thread.is_alive(), "the load did not stop"
        if self._error is not None:
            raise self._error


def stored_users(mongo_url: str, database: str, user_ids: Sequence[str]) -> dict[str, Any]:
    """The users documents of `user_ids`, by id: (name, version), or the document itself when
    it is deleted or has no name."""
    client: MongoClient[Any] = MongoClient(mongo_url)
    try:
        docs = client[database]["users"].find({"externalId": {"$in": list(user_ids)}})
        return {
            d["externalId"]: (d["name"], d["version"]) if not d.get("deleted") else d for d in docs
        }
    finally:
        client.close()


def ledger_holds(mongo_url: str, database: str, svix_ids: Sequence[str]) -> int:
    """How many of `svix_ids` the ledger of `database` holds (each is recorded at most once:
    the id is the document's `_id`)."""
    client: MongoClient[Any] = MongoClient(mongo_url)
    try:
        ledger = client[database][LEDGER_COLLECTION]
        return ledger.count_documents({"_id": {"$in": list(set(svix_ids))}})
    finally:
        client.close()


def metric_value(base_url: str, name: str, **labels: str) -> float:
    """The sum of the samples `name` with `labels` that the process at `base_url` exposes."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


class ExtraWorker:
    """One more worker process of a service: in the consumer group of the stack's worker, on
    the same database, on a free port. What scaling the worker out does."""

    def __init__(self, env: Mapping[str, str], service: str, database: str) -> None:
        self._supervisor = Supervisor(env, echo=False)
        self.spec = ProcessSpec(
            f"{service}-worker-extra", f"siteview_{service}", ("worker",), free_port()
        )
        self._extra_env = {"MONGODB_DATABASE": database}
        self.process: RunningProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.spec.port}"

    def start(self, timeout: float = 90.0) -> ExtraWorker:
        self.process = self._supervisor.start(self.spec, self._extra_env)
        self._supervisor.wait_ready([self.spec.name], timeout=timeout)
        return self

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (SIGKILL after `timeout` s); the exit code."""
        self._supervisor.stop(self.spec.name, timeout=timeout)
        return None if self.process is None else self.process.popen.returncode

    def kill(self) -> int | None:
        """SIGKILL, as an OOM kill or a lost node would: no shutdown at all; the exit code."""
        assert self.process is not None, "not started"
        self._supervisor.running.pop(self.spec.name, None)
        os.killpg(self.process.popen.pid, signal.SIGKILL)
        return self.process.popen.wait(timeout=30)

    def output(self, lines: int = 40) -> str:
        return "\n".join(self.process.lines[-lines:]) if self.process else ""

    def __enter__(self) -> ExtraWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self._supervisor.stop_all()


def assert_all_applied(mongo_url: str, database: str, flow: UserVersions) -> None:
    """Wait until the users worker(s) recorded every Svix id `flow` delivered (nothing lost;
    the ledger keys each id, so each is recorded once), then, everything being processed,
    check that every user is on its newest version, with that version's fields."""
    distinct = len(set(flow.svix_ids))

    def recorded() -> int | None:
        held = ledger_holds(mongo_url, database, flow.svix_ids)
        return held if held == distinct else None

    try:
        eventually(recorded, timeout=120, interval=0.5)
    except AssertionError:
        held = ledger_holds(mongo_url, database, flow.svix_ids)
        raise AssertionError(f"the ledger holds {held} of the {distinct} delivered ids") from None
    expected = flow.expected()
    stored = stored_users(mongo_url, database, flow.user_ids)
    wrong = {uid: stored.get(uid) for uid, want in expected.items() if stored.get(uid) != want}
    assert wrong == {}, f"{len(wrong)} of {len(expected)} users not on their newest version"


@contextmanager
def served(app: Any) -> Iterator[str]:
    """An ASGI `app` under a real uvicorn on a free port, in a thread; its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
