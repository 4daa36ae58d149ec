"""What operators scale and alert on, read from the users worker's `/metrics` after real events
flowed through the gateway: consumer lag per partition (0 once caught up), FastStream's own
per-batch metrics, and stale events counted as such.

Every check first waits for a marker event in the worker's ledger: the partition it is on is
consumed in order, so everything delivered before it there has been processed."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Backend, Stack
from siteview_common.events import Topics
from support import (
    eventually,
    key_on_partition_of,
    metric_value,
    new_svix_id,
    new_user_id,
    partition_count_sync,
    user_event,
    wait_in_ledger,
)

pytestmark = pytest.mark.e2e

GROUP = "users-service"


def samples(base_url: str, name: str) -> list[tuple[dict[str, str], float]]:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def deliver_and_settle(stack: Stack, backend: Backend, events: list[dict[str, object]]) -> None:
    """Deliver `events` (all for one user), then a marker on that user's partition, and wait
    until the worker recorded the marker."""
    for event in events:
        assert stack.gateway.deliver(event).status_code == 202
    user_id = str(events[0]["data"]["id"])  # type: ignore[index]
    marker = key_on_partition_of(user_id, partition_count_sync(backend.kafka, Topics.USERS))
    svix_id = new_svix_id()
    event = user_event("user.created", marker, updated_at=1, first_name="Marker")
    assert stack.gateway.deliver(event, svix_id=svix_id).status_code == 202
    wait_in_ledger(backend.mongo, stack.databases["users"], svix_id)


def test_consumer_lag_is_reported_per_partition_and_is_zero_once_caught_up(
    stack: Stack, backend: Backend
) -> None:
    worker = stack.urls["users-worker"]
    partitions = partition_count_sync(backend.kafka, Topics.USERS)
    uid = new_user_id()
    deliver_and_settle(stack, backend, [user_event("user.created", uid, updated_at=100)])

    def lag_by_partition() -> dict[str, float] | None:
        lag = {
            labels["partition"]: value
            for labels, value in samples(worker, "siteview_consumer_lag")
            if labels.get("group") == GROUP and labels.get("topic") == Topics.USERS
        }
        caught_up = len(lag) == partitions and all(v == 0 for v in lag.values())
        return lag if caught_up else None

    # The only worker of its group holds every partition; refreshed after each batch and on
    # a timer, every partition's lag is reported and, with nothing left to consume, 0.
    lag = eventually(lag_by_partition, timeout=30, interval=0.5)
    assert sorted(lag, key=int) == [str(p) for p in range(partitions)]


def test_faststream_middleware_measures_the_batches_the_worker_received(
    stack: Stack, backend: Backend
) -> None:
    worker = stack.urls["users-worker"]
    deliver_and_settle(stack, backend, [user_event("user.created", new_user_id(), updated_at=1)])
    received = [
        labels
        for labels, value in samples(worker, "faststream_received_messages_total")
        if value > 0
    ]
    assert any(labels.get("app_name") == "users-worker" for labels in received), received
    processed = metric_value(
        worker, "faststream_received_processed_messages_total", app_name="users-worker"
    )
    assert processed > 0


def test_a_stale_event_is_counted_as_stale_not_applied(stack: Stack, backend: Backend) -> None:
    worker = stack.urls["users-worker"]

    def stale() -> float:
        return metric_value(
            worker, "siteview_events_total", group=GROUP, topic=Topics.USERS, outcome="stale"
        )

    uid = new_user_id()
    deliver_and_settle(stack, backend, [user_event("user.created", uid, updated_at=200)])
    before = stale()
    # An older state of the same user, delivered later under a new Svix id: a replay.
    deliver_and_settle(stack, backend, [user_event("user.updated", uid, updated_at=100)])
    assert stale() >= before + 1
