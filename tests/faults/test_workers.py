"""Workers die and come and go under load: SIGKILL before a batch's write and right after one,
SIGTERM, and a second worker joining and leaving the group. What was fetched and not committed
is redelivered to whoever holds the partition next; what was written twice in Kafka's view is
absorbed by the ledger; nothing is lost and nothing applies twice in effect."""

from __future__ import annotations

import signal

import pytest
from faults.kit import Retrying, System, WorkerTally, deliver_until_acked, ledger_count, outcomes
from faults.reliability import Record

from siteview_common.runtime import WORKER_GRACEFUL_SECONDS
from support import SteadyLoad, UserVersions, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

#: uvicorn's graceful shutdown of HTTP connections (serve.py), then the broker's.
GRACE_SECONDS = 10 + WORKER_GRACEFUL_SECONDS
#: Rounds per second under load: a round of 20 events every 2 s, 10 events/s, which the
#: users worker on FerretDB/SQLite (12-14 events/s) keeps up with, so a scenario's backlog
#: stays a few rounds and settles; unpaced, the gateway's ~100 acks/s left thousands behind.
LOAD_PACE = 0.5
#: uvicorn shuts down cleanly, then re-raises the signal: -SIGTERM is a clean exit too.
CLEAN_EXITS = (0, -signal.SIGTERM)


def applied(worker_url: str) -> int:
    return outcomes(worker_url)["applied"]


def test_4_worker_killed_before_and_after_its_write_and_stopped(
    system: System, record: Record
) -> None:
    scenario = record(
        "4", "4. Worker killed (SIGKILL) before and after its write, stopped (SIGTERM)"
    )
    scenario.injected = (
        "under a steady load: SIGKILL while the worker's database connections were "
        "black-holed (the batch fetched, its write hanging); SIGKILL the moment its ledger "
        "grew (a batch written, its offsets maybe not committed); SIGTERM; a restart after each"
    )
    flow, gateway = UserVersions(users=20), system.gateway()
    worker = system.worker
    workers = WorkerTally(worker.url)
    load = SteadyLoad(Retrying(gateway), flow, rounds_per_second=LOAD_PACE).start()
    try:
        eventually(lambda: workers.since(worker.url)["applied"] > 0, timeout=120)

        # Before its write: the database swallows everything, so the fetched batch's write
        # never lands; nothing is written while it hangs, and then the process dies.
        system.mongo_proxy.black_hole()
        written = ledger_count(system.backend.mongo, system.database)
        rounds = load.rounds
        eventually(lambda: load.rounds >= rounds + 1, timeout=120)
        assert ledger_count(system.backend.mongo, system.database) == written
        workers.take(worker.url)
        assert worker.kill() == -signal.SIGKILL
        system.mongo_proxy.forward()
        scenario.observe(
            "killed before its write: the ledger held the same ids before and after a whole "
            "round was acknowledged with the database black-holed"
        )
        worker.start()
        workers.restart(worker.url)

        # After its write: the moment the ledger grows, a batch's writes have landed; the
        # process dies before it can tell whether the commit of that batch went out.
        written = ledger_count(system.backend.mongo, system.database)
        eventually(
            lambda: ledger_count(system.backend.mongo, system.database) > written,
            timeout=120,
            interval=0.01,
        )
        workers.take(worker.url)
        assert worker.kill() == -signal.SIGKILL
        worker.start()
        workers.restart(worker.url)
        eventually(lambda: applied(worker.url) > 0, timeout=150)
        redelivered = workers.take(worker.url)["duplicate"]
        scenario.observe(
            "killed right after a write: the restarted worker found "
            f"{redelivered} redelivered events already in its ledger and skipped them"
        )

        # SIGTERM: it finishes the batch in flight, commits, leaves the group, exits cleanly.
        exit_code = worker.stop(timeout=GRACE_SECONDS)
        left = "worker stopped: consumer group left" in worker.output(80)
        scenario.observe(
            f"SIGTERM: exit code {exit_code} ({'clean' if exit_code in CLEAN_EXITS else 'killed'}"
            f" after the {GRACE_SECONDS:.0f} s grace), consumer group "
            f"{'left' if left else 'not left: its partitions waited for the session timeout'}"
        )
        worker.start()
        workers.restart(worker.url)
        rounds = load.rounds
        eventually(lambda: load.rounds >= rounds + 1, timeout=120)
    finally:
        load.stop()
        system.mongo_proxy.forward()
        if worker.process is None or worker.process.popen.poll() is not None:
            worker.start()  # the next scenarios need it
    deliver_until_acked(gateway, flow.next_round())
    system.settle(scenario, gateway, flow, workers)


def test_7_rebalance_under_load(system: System, record: Record) -> None:
    scenario = record("7", "7. Consumer-group rebalance under load")
    scenario.injected = (
        "a second users worker joined the group while deliveries flowed (a rebalance hands it "
        "part of the partitions), applied events, then left with SIGTERM (they come back)"
    )
    flow, gateway = UserVersions(users=20), system.gateway()
    first = system.worker.url
    with system.second_worker() as second:
        workers = WorkerTally(first)
        load = SteadyLoad(Retrying(gateway), flow, rounds_per_second=LOAD_PACE).start()
        try:
            second.start()
            workers.restart(second.url)
            eventually(lambda: applied(second.url) > 0, timeout=150)
            while_both = applied(first)
            eventually(lambda: applied(first) > while_both, timeout=120)
            by_second = workers.take(second.url)["applied"]
            exit_code = second.stop(timeout=GRACE_SECONDS)
            rounds = load.rounds
            eventually(lambda: load.rounds >= rounds + 1, timeout=120)
        finally:
            load.stop()
    deliver_until_acked(gateway, flow.next_round())
    system.settle(scenario, gateway, flow, workers)
    scenario.observe(
        f"the second worker applied {by_second} events while both held partitions, then left "
        f"on SIGTERM (exit code {exit_code}: "
        f"{'clean' if exit_code in CLEAN_EXITS else 'killed after the grace period'}); "
        "the first took its partitions back"
    )
