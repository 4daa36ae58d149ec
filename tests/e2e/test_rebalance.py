"""A consumer group rebalancing under load: a second users worker joins the group while
webhook deliveries keep flowing and takes over part of the partitions; it is killed (SIGKILL)
and restarted, then leaves cleanly (SIGTERM) and hands them back. Nothing is lost and nothing
applies twice in effect: each Svix id once in the ledger, every user on its newest version.

This runs on Apache Kafka (the engines backend) and on Tansu (embedded): both coordinate
consumer groups (JoinGroup/SyncGroup, LeaveGroup on a clean stop), so a member joining or
leaving moves partitions between the two workers on either.
"""

from __future__ import annotations

import signal

import pytest

from conftest import Backend, Stack, service_env
from siteview_common.events import Topics
from siteview_common.runtime import WORKER_GRACEFUL_SECONDS
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

#: uvicorn's graceful shutdown of HTTP connections (serve.py), then the broker's.
GRACE_SECONDS = 10 + WORKER_GRACEFUL_SECONDS
#: uvicorn shuts down cleanly, then re-raises the signal: -SIGTERM is a clean exit too.
CLEAN_EXITS = (0, -signal.SIGTERM)


def applied(worker_url: str) -> float:
    """How many events the worker at `worker_url` applied from the users topic so far."""
    return metric_value(
        worker_url,
        "siteview_events_total",
        group="users-service",
        topic=Topics.USERS,
        outcome="applied",
    )


def test_a_worker_joining_killed_and_leaving_under_load_loses_nothing_and_applies_nothing_twice(
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

            # SIGKILL mid-stream (an OOM kill, a lost node): no shutdown at all; what it
            # fetched is not committed, and its partitions wait until the group drops it.
            # Deliveries are still acknowledged meanwhile. Restarted, it rejoins, and the
            # group redelivers from the last committed offsets.
            assert second.kill() == -signal.SIGKILL
            rounds_killed = load.rounds
            eventually(lambda: load.rounds >= rounds_killed + 1, timeout=120)
            second.start()
            eventually(lambda: applied(second.url) > 0, timeout=120)
            rounds_back = load.rounds
            eventually(lambda: load.rounds >= rounds_back + 1, timeout=120)

            # It leaves (SIGTERM, a rollout or a scale-in): it stops fetching, applies and
            # commits the batch in flight, leaves the group and exits cleanly within the grace
            # period; its partitions go back to the first worker.
            by_second = applied(second.url)
            exit_code = second.stop(timeout=GRACE_SECONDS)
            output = second.output(80)
            assert exit_code in CLEAN_EXITS, output
            assert "worker stopping: finishing the batch in flight" in output, output
            assert "worker stopped: consumer group left" in output, output
            assert "Application shutdown complete." in output, output
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
