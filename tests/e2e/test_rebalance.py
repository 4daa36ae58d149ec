"""A consumer group rebalancing under load: a second users worker joins the group while
webhook deliveries keep flowing, takes over part of the partitions, then leaves (SIGTERM) and
hands them back. Nothing is lost and nothing applies twice in effect.

This runs on Apache Kafka (the engines backend) and on Tansu (embedded): both coordinate
consumer groups (JoinGroup/SyncGroup, LeaveGroup on a clean stop), so a member joining or
leaving moves partitions between the two workers on either.
"""

from __future__ import annotations

import signal

import pytest

from conftest import Backend, Stack, service_env
from siteview_common.events import Topics
from support import (
    ExtraWorker,
    KeyPair,
    SteadyLoad,
    UserVersions,
    assert_all_applied,
    deliver_all,
    eventually,
    metric_value,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]


def applied(worker_url: str) -> float:
    """How many events the worker at `worker_url` applied from the users topic so far."""
    return metric_value(
        worker_url,
        "siteview_events_total",
        group="users-service",
        topic=Topics.USERS,
        outcome="applied",
    )


def test_a_worker_joining_and_leaving_under_load_loses_nothing_and_applies_nothing_twice(
    stack: Stack, backend: Backend, signing_key: KeyPair, run_id: str
) -> None:
    database = stack.databases["users"]
    first = stack.urls["users-worker"]
    flow = UserVersions(users=40)
    load = SteadyLoad(stack.gateway, flow)
    env = service_env(backend, signing_key, run_id)
    with ExtraWorker(env, "users", database) as second:
        try:
            before = applied(first)
            load.start()
            eventually(lambda: applied(first) > before, timeout=60)  # the load flows

            # The second worker joins: the group rebalances and it gets partitions of its own
            # while the first keeps the rest; both apply events concurrently.
            second.start()
            eventually(lambda: applied(second.url) > 0, timeout=120)
            while_both = applied(first)
            eventually(lambda: applied(first) > while_both, timeout=60)
            rounds_with_both = load.rounds
            eventually(lambda: load.rounds >= rounds_with_both + 2, timeout=120)

            # It leaves (SIGTERM): its partitions go back to the first worker, from the last
            # offsets it committed.
            by_second = applied(second.url)
            # uvicorn shuts down cleanly, then re-raises the signal: -SIGTERM is a clean exit
            assert second.stop() in (0, -signal.SIGTERM), second.output()
            assert "Application shutdown complete." in second.output(), second.output()
            rounds_after = load.rounds
            eventually(lambda: load.rounds >= rounds_after + 2, timeout=120)
        finally:
            load.stop()

    # One last round after the load; then every Svix id delivered must be recorded as applied
    # (nothing lost, each once), and with everything processed every user must be on its
    # newest version (the name proves the newest fields won, not just the clock).
    deliver_all(stack.gateway, flow.next_round())
    assert_all_applied(backend.mongo, database, flow)
    assert by_second > 0 and load.rounds >= 4
