"""Disorder and bursts: events delivered shuffled and duplicated end in the in-order result;
a burst of ten times the steady rate is acknowledged and applied like the steady flow."""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from faults.kit import (
    System,
    WorkerTally,
    deliver_once_acked,
    deliver_until_acked,
    new_versions,
    percentile,
)
from faults.reliability import Record

from support import UserVersions

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]


def test_8_shuffled_and_duplicated_deliveries_end_in_the_in_order_result(
    system: System, record: Record
) -> None:
    scenario = record("8", "8. 1,000 events for 50 users, shuffled and duplicated")
    flow, gateway = UserVersions(users=50), system.gateway()
    workers = WorkerTally(system.worker.url)
    in_order = new_versions(flow, 1000)  # 20 versions of each user, oldest first
    rng = random.Random(8)
    everything = in_order + rng.sample(in_order, k=len(in_order) // 10)
    rng.shuffle(everything)
    scenario.injected = (
        f"{len(in_order)} events (20 versions of each of 50 users) delivered in one random "
        f"order, {len(everything) - len(in_order)} of them twice (Clerk's retries: the same "
        "Svix id), 8 at a time"
    )
    deliver_until_acked(gateway, everything, threads=8)
    system.settle(scenario, gateway, flow, workers)
    scenario.observe("each user holds the name and version of its 20th event, its last in order")


def test_9_a_burst_of_ten_times_the_steady_rate(system: System, record: Record) -> None:
    scenario = record("9", "9. A burst of 10x the steady rate")
    steady, burst, seconds = 5.0, 50.0, 3.0
    scenario.injected = (
        f"{steady:.0f} deliveries/s for {seconds:.0f} s, then {burst:.0f}/s for {seconds:.0f} s, "
        f"then {steady:.0f}/s for {seconds:.0f} s, each sent at its planned moment (a refused "
        "one retried as Clerk would)"
    )
    flow, gateway = UserVersions(users=60), system.gateway()
    workers = WorkerTally(system.worker.url)
    phases = {
        name: (rate, new_versions(flow, int(rate * seconds)))
        for name, rate in (("before", steady), ("burst", burst), ("after", steady))
    }
    latencies: dict[str, list[float]] = {}
    with ThreadPoolExecutor(max_workers=64) as pool:
        for name, (rate, batch) in phases.items():
            start = time.monotonic()
            futures = []
            for i, delivery in enumerate(batch):
                time.sleep(max(0.0, start + i / rate - time.monotonic()))
                futures.append(pool.submit(deliver_once_acked, gateway, delivery))
            latencies[name] = [f.result() for f in futures]
    answered = time.monotonic()
    system.settle(scenario, gateway, flow, workers)
    scenario.observe(
        "seconds to acknowledgement: "
        + "; ".join(
            f"{name} p50 {percentile(values, 0.5):.2f}, p99 {percentile(values, 0.99):.2f} "
            f"({len(values)} deliveries)"
            for name, values in latencies.items()
        )
    )
    scenario.observe(
        f"every event applied {time.monotonic() - answered:.1f} s after the last delivery "
        "was acknowledged (measured, not asserted)"
    )
