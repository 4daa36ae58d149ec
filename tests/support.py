"""Test helpers: sign webhooks as Clerk would, mint tokens with the test key, wait for state."""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pymongo import MongoClient

from siteview_common.events import HEADER_EVENT_ID
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
