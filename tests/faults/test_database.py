"""The database stops mid-batch under the worker: nothing is written and no offset is
committed while it is down, the batch is redelivered with back-off for as long as the outage
lasts (an outage is never dead-lettered), and everything applies once it is back."""

from __future__ import annotations

import threading

import pytest
from faults.kit import (
    System,
    WorkerTally,
    committed_offsets,
    deliver_until_acked,
    ledger_count,
    redeliveries,
)
from faults.reliability import Record

from support import UserVersions, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def test_5_database_stopped_mid_batch(system: System, record: Record) -> None:
    scenario = record("5", "5. Database stopped mid-batch")
    scenario.injected = (
        "the worker's MongoDB connections reset and new ones refused (the fault proxy in front "
        "of the database, as a stopped server) while deliveries flowed, until the worker had "
        "failed several batches; then the database back"
    )
    flow, gateway = UserVersions(users=50), system.gateway()
    worker = system.worker.url
    workers = WorkerTally(worker)
    deliveries = [d for _ in range(4) for d in flow.next_round()]
    sender = threading.Thread(target=deliver_until_acked, args=(gateway, deliveries))
    sender.start()
    try:
        eventually(lambda: workers.since(worker)["applied"] > 0, timeout=60, interval=0.05)
        failed = redeliveries(worker, "transient")
        system.mongo_proxy.refuse()
        eventually(lambda: redeliveries(worker, "transient") >= failed + 2, timeout=60)
        written = ledger_count(system.backend.mongo, system.database)
        committed = committed_offsets(system.kafka)
        eventually(lambda: redeliveries(worker, "transient") >= failed + 5, timeout=60)
        assert ledger_count(system.backend.mongo, system.database) == written
        assert committed_offsets(system.kafka) == committed
        outage = redeliveries(worker, "transient") - failed
    finally:
        system.mongo_proxy.forward()
        sender.join(timeout=180)
    assert not sender.is_alive()
    scenario.observe(
        f"{outage:.0f} batches failed and were rewound for redelivery during the outage, "
        "with back-off (up to 2 s); across the outage the ledger gained no id and the "
        f"group's committed offsets did not move ({sum(committed.values())} in all)"
    )
    counts = system.settle(scenario, gateway, flow, workers)
    assert counts["dead-lettered"] == 0
    scenario.observe("the database back: nothing dead-lettered")
