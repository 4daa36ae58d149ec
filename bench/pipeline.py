"""Benchmark: webhook → gateway → Kafka → users worker → MongoDB, on a stack it starts itself.

Reports the gateway's latency (signed POST to 202, i.e. to the broker's ack) and how long the
users worker takes to make every event readable. Run with `make bench` (N=1000 by default:
`make bench BENCH_ARGS="--events 5000 --concurrency 32"`). On the embedded stack the numbers
measure Tansu and the MongoDB stand-in too; point KAFKA_BOOTSTRAP_SERVERS and MONGODB_URL at
real servers to measure the services alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import httpx
from pymongo import MongoClient

from siteview_devstack.broker import TansuBroker, free_port, wait_for_port
from siteview_devstack.processes import ProcessSpec, Supervisor, base_env
from siteview_devstack.signing import sign

SECRET = "whsec_YmVuY2htYXJrLXNlY3JldC1mb3Itc2l0ZXZpZXc="  # noqa: S105 - a throwaway secret for the benchmark stack
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "clerk" / "user.created.json"


def backend(stack: ExitStack) -> tuple[str, str]:
    kafka, mongo = os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), os.environ.get("MONGODB_URL")
    if not kafka:
        kafka = stack.enter_context(TansuBroker(port=free_port()).start_context())
    if not mongo:
        # its own process, as in `make dev`: in this one it would compete with the client
        port = free_port()
        standin = subprocess.Popen(
            [sys.executable, "-m", "siteview_devstack.mongo.server", "--port", str(port)],
            stderr=subprocess.DEVNULL,
        )
        stack.callback(standin.wait)
        stack.callback(standin.terminate)
        wait_for_port("127.0.0.1", port)
        mongo = f"mongodb://127.0.0.1:{port}"
    return kafka, mongo


async def deliver_all(url: str, bodies: list[bytes], concurrency: int) -> list[float]:
    latencies: list[float] = []
    queue = list(reversed(bodies))
    async with httpx.AsyncClient(timeout=30) as client:

        async def sender() -> None:
            while queue:
                body = queue.pop()
                started = time.perf_counter()
                response = await client.post(url, content=body, headers=sign(body, SECRET))
                latencies.append(time.perf_counter() - started)
                response.raise_for_status()

        await asyncio.gather(*(sender() for _ in range(concurrency)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    template = json.loads(EXAMPLE.read_text())
    bodies = []
    for i in range(args.events):
        template["data"]["id"] = f"user_bench{uuid.uuid4().hex}"
        template["data"]["updated_at"] = 1_773_152_525_000 + i
        bodies.append(json.dumps(template).encode())

    with ExitStack() as stack:
        kafka, mongo = backend(stack)
        database = f"users_bench_{uuid.uuid4().hex[:8]}"
        env = base_env()
        env.update(
            APP_ENV="development",
            KAFKA_BOOTSTRAP_SERVERS=kafka,
            MONGODB_URL=mongo,
            CLERK_WEBHOOK_SIGNING_SECRET=SECRET,
            MONGODB_DATABASE=database,
            LOG_LEVEL="WARNING",
        )
        supervisor = Supervisor(env, echo=False)
        stack.callback(supervisor.stop_all)
        gateway = ProcessSpec("webhooks", "siteview_webhooks", (), free_port())
        worker = ProcessSpec("users-worker", "siteview_users", ("worker",), free_port())
        supervisor.start(gateway)
        supervisor.start(worker)
        supervisor.wait_ready(timeout=90)

        users = MongoClient(mongo)[database]["users"]
        started = time.perf_counter()
        latencies = asyncio.run(
            deliver_all(f"http://127.0.0.1:{gateway.port}/webhooks/clerk", bodies, args.concurrency)
        )
        accepted = time.perf_counter() - started
        while users.count_documents({}) < args.events:
            time.sleep(0.02)
        applied = time.perf_counter() - started

    latencies.sort()
    ms = [x * 1000 for x in latencies]
    print(f"events                 {args.events} (concurrency {args.concurrency})")
    print(
        f"gateway 202 latency    p50 {statistics.median(ms):.1f} ms   "
        f"p99 {ms[int(len(ms) * 0.99) - 1]:.1f} ms   max {ms[-1]:.1f} ms"
    )
    print(f"gateway throughput     {args.events / accepted:.0f} events/s")
    print(
        f"all applied after      {applied:.2f} s  ({args.events / applied:.0f} events/s end to end)"
    )
    print(f"backend                kafka={kafka} mongo={mongo}")


if __name__ == "__main__":
    main()
