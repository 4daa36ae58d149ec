"""The broker fails under the gateway: down at request time, stalled mid-stream, and the
connection cut after a produce request reached it but before its ack came back. The gateway
answers 503 to whatever the broker did not acknowledge, so Clerk retries it; what it answered
202 is applied once; a retry or a redelivery that puts an event into Kafka twice is absorbed by
the worker's ledger."""

from __future__ import annotations

import os
import signal
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from faults.kit import System, WorkerTally, deliver_until_acked, percentile
from faults.reliability import Record

from support import UserVersions, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

#: Kafka's request header starts with the frame's length (int32), then the API key (int16).
PRODUCE_API_KEY = 0


def is_produce_request(chunk: bytes) -> bool:
    return len(chunk) >= 6 and struct.unpack(">h", chunk[4:6])[0] == PRODUCE_API_KEY


def test_1_broker_down_at_request_time(system: System, record: Record) -> None:
    scenario = record("1", "1. Broker down at request time")
    flow, gateway = UserVersions(users=50), system.gateway()
    workers = WorkerTally(system.worker.url)
    deliver_until_acked(gateway, flow.next_round())

    engines = system.backend.name == "engines"
    if engines:
        scenario.injected = (
            "the gateway's own Apache Kafka broker stopped (SIGTERM, a clean shutdown) between "
            "two rounds of deliveries, then started again on its data"
        )
        system.broker.stop()
    else:
        scenario.injected = (
            "every connection to the gateway's own Tansu broker refused and reset by the fault "
            "proxy the broker advertises (an in-memory broker restarted would be a new, empty one)"
        )
        system.broker_proxy.refuse()
    during = flow.next_round()
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda d: gateway.deliver(d.event, svix_id=d.svix_id), during))
    statuses = sorted({a.status_code for a in answers})
    slowest = max(a.elapsed.total_seconds() for a in answers)
    scenario.observe(
        f"{len(answers)} deliveries while the broker was down: every answer {statuses} "
        f"(none 2xx), the slowest after {slowest:.2f} s (the gateway's publish timeout: 2 s)"
    )
    assert statuses == [503]

    back = time.monotonic()
    if engines:
        system.broker.start()
    else:
        system.broker_proxy.forward()
    # Clerk retries each refused delivery with its Svix id until one is acknowledged.
    deliver_until_acked(gateway, during)
    scenario.observe(
        f"the broker back: the {len(during)} refused deliveries retried with their Svix ids "
        f"until acknowledged ({time.monotonic() - back:.1f} s after the restart)"
    )
    deliver_until_acked(gateway, flow.next_round())
    system.settle(scenario, gateway, flow, workers)


def test_2_broker_stalled_and_resumed_mid_stream(system: System, record: Record) -> None:
    scenario = record("2", "2. Broker stalled (SIGSTOP) and resumed (SIGCONT) mid-stream")
    stall = 5.0
    scenario.injected = (
        f"SIGSTOP to the broker process while deliveries flowed, SIGCONT {stall:.0f} s later"
    )
    flow, gateway = UserVersions(users=50), system.gateway()
    workers = WorkerTally(system.worker.url)
    deliveries = [d for _ in range(4) for d in flow.next_round()]
    sender = threading.Thread(
        target=deliver_until_acked, args=(gateway, deliveries), kwargs={"threads": 8}
    )
    sender.start()
    eventually(lambda: gateway.acked >= 40, timeout=60)
    pid = system.broker.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        refused_before = gateway.refused
        time.sleep(stall)  # the fault's length, not a check
        refused_while_stalled = gateway.refused - refused_before
    finally:
        os.kill(pid, signal.SIGCONT)
    sender.join(timeout=180)
    assert not sender.is_alive()
    scenario.observe(
        f"{refused_while_stalled} deliveries answered 503 while the broker was stopped; "
        f"answers p50 {percentile(gateway.answer_seconds, 0.5):.3f} s, "
        f"max {max(gateway.answer_seconds):.2f} s; every refused one retried until acknowledged"
    )
    system.settle(scenario, gateway, flow, workers)


def test_3_connection_cut_between_produce_and_ack(system: System, record: Record) -> None:
    scenario = record("3", "3. Connection cut after the produce request, before the ack")
    cuts = 6
    scenario.injected = (
        f"the fault proxy between the gateway and its broker (the broker advertises the proxy) "
        f"let {cuts} produce requests reach the broker, then reset the connection as the "
        "broker's acknowledgement arrived, before the gateway read it"
    )
    flow, gateway = UserVersions(users=50), system.gateway()
    workers = WorkerTally(system.worker.url)
    system.broker_proxy.lose_replies(to=is_produce_request, times=cuts)
    try:
        deliver_until_acked(gateway, [d for _ in range(4) for d in flow.next_round()])
        lost_replies = system.broker_proxy.replies_lost
    finally:
        system.broker_proxy.lose_replies(to=is_produce_request, times=0)
    scenario.observe(
        f"{lost_replies} acknowledgements lost on the wire; the gateway answered "
        f"{gateway.acked} deliveries 202 and {gateway.refused} otherwise (retried until "
        "acknowledged)"
    )
    assert lost_replies > 0
    system.settle(scenario, gateway, flow, workers)
