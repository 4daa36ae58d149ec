"""`make bench`: the services measured against their ceilings, side by side, in one run.

One run starts fresh backends (Apache Kafka + FerretDB by default; `--backend embedded` for
Tansu + the MongoDB stand-in), pins the system under test and the load generators apart, and
measures each variant `--repeats` times for `--seconds` after a warm-up. The ceilings are tiny
programs in bench/ceilings, measured in the same run on the same backend:

1. raw ASGI under the same uvicorn (uvloop + httptools), answering 202 to the same POST;
2. bare aiokafka `send_and_wait` (acks=all) at the gateway's concurrency;
3. bare aiokafka `getmany` of the same messages;
4. raw PyMongo bulk upserts of the same documents, built by the users service's write rule;
5. the same API with authentication turned off.

It prints the table, writes bench/results/<backend>.json, rewrites the generated part of
BENCHMARKS.md (between its `bench:begin`/`bench:end` markers, keeping the rest) and draws
BENCHMARKS.png. Benchmarks report; they never gate.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from harness import (
    REPO,
    WEBHOOK_SECRET,
    Attack,
    Backend,
    Cpus,
    Results,
    SigningKey,
    System,
    Target,
    attack,
    backend,
    pin,
    python_program,
    wait_until,
    write_targets,
)
from prometheus_client.parser import text_string_to_metric_families
from pymongo import MongoClient
from report import render, section

from siteview_common.events import (
    HEADER_EVENT_ID,
    HEADER_EVENT_TYPE,
    ClerkEvent,
    PublishedEvent,
    Topics,
)
from siteview_devstack.signing import sign
from siteview_ops.dlq import assign_whole_topic
from siteview_users.bootstrap import GROUP as USERS_GROUP

EXAMPLE = REPO / "examples" / "clerk" / "user.created.json"
RAW_ASGI = "bench/ceilings/raw_asgi.py"
ALL_PHASES = "workers,e2e,backlog,api,gateway"
#: How long a worker variant is followed at least (plus 0.1 s per event) before its rate is
#: taken over what it applied so far.
FOLLOW_SECONDS = 60
T0 = 1_773_152_525_000


class Bench:
    def __init__(self, args: argparse.Namespace, cpus: Cpus, work: Path) -> None:
        self.args = args
        self.cpus = cpus
        self.work = work
        self.results = Results()
        self.template: dict[str, Any] = json.loads(EXAMPLE.read_text())

    # --- events ---------------------------------------------------------------------------

    def user_event_of(self, user_id: str, version: int, kind: str) -> dict[str, Any]:
        event = copy.deepcopy(self.template)
        event["type"] = kind
        event["data"].update(id=user_id, updated_at=version, created_at=T0)
        event["timestamp"] = version
        return event

    def user_event(self, user_id: str, version: int, kind: str = "user.created") -> bytes:
        return json.dumps(self.user_event_of(user_id, version, kind)).encode()

    def published(self, user_id: str, version: int) -> tuple[bytes, bytes, str]:
        body = self.user_event_of(user_id, version, "user.created")
        svix_id = f"msg_{uuid.uuid4().hex}"
        envelope = PublishedEvent(
            svix_id=svix_id, received_at=int(time.time() * 1000), event=ClerkEvent(**body)
        )
        return user_id.encode(), envelope.to_json(), svix_id

    async def produce(self, kafka: str, users: list[str]) -> Path:
        """Publish user.created for `users` as the gateway would; answer the file of them."""
        file = self.work / f"events-{uuid.uuid4().hex[:6]}.jsonl"
        producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=5)
        await producer.start()
        try:
            with file.open("w") as out:
                pending = []
                for user_id in users:
                    key, value, svix_id = self.published(user_id, T0)
                    headers = [
                        (HEADER_EVENT_ID, svix_id.encode()),
                        (HEADER_EVENT_TYPE, b"user.created"),
                    ]
                    pending.append(
                        await producer.send(Topics.USERS, value, key=key, headers=headers)
                    )
                    out.write(json.dumps({"key": user_id, "value": value.decode()}) + "\n")
                await asyncio.gather(*pending)
        finally:
            await producer.stop()
        return file

    def gateway_targets(self, url: str, count: int, kind: str = "user.created") -> Path:
        targets = []
        for _ in range(count):
            body = self.user_event(f"user_{uuid.uuid4().hex[:20]}", T0, kind)
            headers = {**sign(body, WEBHOOK_SECRET), "Content-Type": "application/json"}
            targets.append(Target("POST", f"{url}/webhooks/clerk", body, headers))
        return write_targets(targets, self.work)

    # --- measuring ------------------------------------------------------------------------

    def repeat(self, warm: Callable[[], object], run: Callable[[], None]) -> None:
        warm()
        for _ in range(self.args.repeats):
            run()

    def saturate(self, key: str, name: str, targets: Path, workers: int) -> Attack:
        """Closed-loop attacks: record req/s and p50/p99; answer the last attack."""
        seconds = self.args.seconds
        last: list[Attack] = []

        def warm() -> None:
            attack(self.cpus, targets, seconds=self.args.warmup, workers=workers)

        def run() -> None:
            found = attack(self.cpus, targets, seconds=seconds, workers=workers)
            if found.success < 0.999:
                print(f"  WARNING {name}: only {found.success:.1%} succeeded: {found.status_codes}")
            self.results.add(key, name, "req/s", found.throughput)
            self.results.add(f"{key}.p50", f"{name} p50", "ms", found.p50_ms)
            self.results.add(f"{key}.p99", f"{name} p99", "ms", found.p99_ms)
            last.append(found)

        self.repeat(warm, run)
        return last[-1]

    # --- phases ---------------------------------------------------------------------------

    def workers_phase(self, system: System, back: Backend) -> None:
        """Ceilings 3 and 4, then the users worker applying the same events, with 1 and 2
        worker processes in one group, and how its rate holds as the collection grows."""
        n = self.args.events
        print(f"== workers: {n} user.created events, pre-published", flush=True)
        # What the earlier phases sent and no worker applied is not this phase's work.
        skip_backlog(back.kafka, USERS_GROUP, Topics.USERS)
        users = [f"user_{uuid.uuid4().hex[:20]}" for _ in range(n)]
        events = asyncio.run(self.produce(back.kafka, users))
        for _ in range(self.args.repeats):
            fetched = python_program(
                self.cpus,
                ["bench/ceilings/kafka_clients.py", "fetch", back.kafka, Topics.USERS, str(n)],
            )
            self.results.add(
                "ceiling3",
                "ceiling 3: aiokafka getmany",
                "msg/s",
                fetched["messages"] / fetched["seconds"],
            )
        users_db = MongoClient(back.mongo)[system.databases["users"]]["users"]
        stored = str(users_db.count_documents({}))
        for _ in range(self.args.repeats):
            scratch = f"users_ceiling_{uuid.uuid4().hex[:6]}"
            upserts = python_program(
                self.cpus,
                [
                    "bench/ceilings/mongo_upserts.py",
                    back.mongo,
                    scratch,
                    str(events),
                    "500",
                    stored,
                ],
            )
            self.results.add(
                "ceiling4",
                "ceiling 4: PyMongo bulk upserts",
                "docs/s",
                upserts["documents"] / upserts["seconds"],
            )
            MongoClient(back.mongo).drop_database(scratch)

        for workers in (1, 2):
            if workers == 2:
                more = [f"user_{uuid.uuid4().hex[:20]}" for _ in range(n)]
                asyncio.run(self.produce(back.kafka, more))
            before = users_db.count_documents({})
            names = [f"users-worker-{i}" for i in range(workers)]
            for name in names:
                system.start(name, "siteview_users", "worker", ready=False)
            samples = self.follow(system, names, n)
            note = partial_note(samples, n)
            for name in names:
                if note:  # why it applied less is in its log
                    print(f"  {name}, last lines:\n{textwrap.indent(system.tail(name), '    ')}")
                system.stop(name)
            if note:  # what this run left unapplied is not the next run's work
                skip_backlog(back.kafka, USERS_GROUP, Topics.USERS)
            self.results.add(
                f"worker{workers}",
                f"users worker x{workers}: applied",
                "events/s",
                rate_of(samples),
                note=note,
            )
            if workers == 1:
                for i, segment in enumerate(segment_rates(samples, before, n)):
                    self.results.add(
                        f"worker1.growth{i}",
                        f"  applied while the collection held {before + i * n // 5:,}+",
                        "events/s",
                        segment,
                    )

    def follow(self, system: System, workers: list[str], n: int) -> list[tuple[float, int]]:
        """(time, applied) samples, from the moment the workers started applying their first
        batch to the n-th event, read from their own /metrics (counting in the database would
        load what it measures). The first sample comes when a batch is done; the origin put
        before it is that batch's start (its own duration, `siteview_batch_seconds_sum`), so
        the first batch counts too (with few batches, leaving it out skews the rate)."""
        samples: list[tuple[float, int]] = []
        # A cap, not a pace: on FerretDB a worker applies a few dozen events a second, fewer
        # as its collection grows; a rate over a few minutes is measured well enough.
        deadline = time.monotonic() + FOLLOW_SECONDS + n / 5
        while time.monotonic() < deadline:
            progress = [progress_of(system.url(name)) for name in workers]
            applied = sum(p.events for p in progress)
            if applied > 0:
                now = time.perf_counter()
                if not samples:
                    samples.append((now - max(p.batch_seconds for p in progress), 0))
                samples.append((now, applied))
            if applied >= n:
                return samples
            time.sleep(0.05)
        applied = samples[-1][1] if samples else 0
        print(f"  ({applied:,} of {n:,} applied in the time allowed: the rate is theirs)")
        return samples

    def e2e_phase(self, system: System, key: SigningKey) -> None:
        """Gateway 2xx → visible at GET /users/me, at a steady rate, one worker running."""
        print("== end to end: gateway 2xx -> GET /users/me", flush=True)
        system.start("users-worker-0", "siteview_users", "worker")
        users = []
        for _ in range(50):
            user_id = f"user_{uuid.uuid4().hex[:20]}"
            users.append({"id": user_id, "version": T0, "token": key.token(user_id)})
        # The users exist first, so every probe measures an update.
        asyncio.run(self.produce(system.backend.kafka, [u["id"] for u in users]))
        users_db = MongoClient(system.backend.mongo)[system.databases["users"]]["users"]
        ids = [u["id"] for u in users]
        wait_until(lambda: users_db.count_documents({"externalId": {"$in": ids}}) == 50, 120)
        template = copy.deepcopy(self.template)
        template["type"] = "user.updated"
        probes = (
            ("e2e", "end to end"),
            ("live", "live push (gateway 2xx → SSE event of /users/me/live)"),
        )
        for probe, label in probes:
            for _ in range(self.args.repeats):
                spec = self.work / f"{probe}.json"
                spec.write_text(
                    json.dumps(
                        {
                            "users": users,
                            "template": template,
                            "rate": self.args.e2e_rate,
                            "seconds": self.args.seconds,
                            "secret": WEBHOOK_SECRET,
                        }
                    )
                )
                latencies = python_program(
                    self.cpus,
                    [
                        "bench/probes.py",
                        probe,
                        system.url("webhooks"),
                        system.url("users-api"),
                        str(spec),
                    ],
                    on_load=True,
                )
                for user in users:
                    user["version"] += len(latencies) // len(users) + 1
                assert isinstance(latencies, list)
                latencies.sort()
                self.results.add(f"{probe}.p50", f"{label} p50", "ms", statistics.median(latencies))
                self.results.add(f"{probe}.p99", f"{label} p99", "ms", percentile(latencies, 0.99))

    def backlog_phase(self, system: System) -> None:
        """A worker outage at steady ingest, then how fast the backlog drains."""
        rate, seconds = self.args.backlog_rate, self.args.backlog_seconds
        print(f"== backlog: worker stopped, {rate}/s ingested for {seconds} s", flush=True)
        system.stop("users-worker-0")
        targets = self.gateway_targets(system.url("webhooks"), int(rate * seconds) + 10)
        ingest = attack(self.cpus, targets, seconds=seconds, workers=8, rate=rate)
        backlog = int(ingest.status_codes.get("202", 0))
        system.start("users-worker-0", "siteview_users", "worker", ready=False)
        samples = self.follow(system, ["users-worker-0"], backlog)
        drained = rate_of(samples)
        self.results.add("backlog.ingest", "backlog: ingest rate", "events/s", ingest.throughput)
        self.results.add("backlog.drain", "backlog: drain rate", "events/s", drained)

    def api_phase(self, system: System, key: SigningKey) -> None:
        print("== APIs", flush=True)
        user_id = f"user_{uuid.uuid4().hex[:20]}"
        token = key.token(user_id)
        auth = {"Authorization": f"Bearer {token}"}
        asyncio.run(self.produce(system.backend.kafka, [user_id]))
        users_api, videos_api = system.url("users-api"), system.url("videos-api")
        # A worker applies the user's profile, then stops: nothing competes with the APIs.
        system.start("users-worker-seed", "siteview_users", "worker")
        wait_until(lambda: httpx.get(f"{users_api}/users/me", headers=auth).status_code == 200, 300)
        system.stop("users-worker-seed")
        for i in range(25):
            created = httpx.post(
                f"{videos_api}/videos",
                json={"title": f"video {i}", "url": f"https://videos.example/{i}.mp4"},
                headers=auth,
            )
            created.raise_for_status()
        for service in ("users", "videos"):
            system.start_program(
                f"{service}-noauth",
                [sys.executable, "bench/ceilings/noauth_api.py", service, user_id],
                service=service,
            )
        raw = system.url("raw-asgi")
        w = self.args.api_concurrency
        variants = [
            ("ceiling1.healthz", "ceiling 1: raw ASGI GET", Target("GET", f"{raw}/healthz")),
            ("api.healthz", "users API GET /healthz", Target("GET", f"{users_api}/healthz")),
            ("api.me", "GET /users/me", Target("GET", f"{users_api}/users/me", headers=auth)),
            (
                "ceiling5.me",
                "ceiling 5: GET /users/me, no auth",
                Target("GET", f"{system.url('users-noauth')}/users/me"),
            ),
            (
                "api.videos",
                "GET /videos?numItems=20",
                Target("GET", f"{videos_api}/videos?numItems=20", headers=auth),
            ),
            (
                "ceiling5.videos",
                "ceiling 5: GET /videos?numItems=20, no auth",
                Target("GET", f"{system.url('videos-noauth')}/videos?numItems=20"),
            ),
        ]
        for key_, name, target in variants:
            print(f"-- {name}", flush=True)
            self.saturate(key_, name, write_targets([target], self.work), w)

    def gateway_phase(self, system: System, back: Backend) -> None:
        print("== gateway", flush=True)
        c = self.args.concurrency
        gateway = system.url("webhooks")
        raw = system.url("raw-asgi")
        sample = self.gateway_targets(gateway, 1)
        body_line = json.loads(sample.read_text())
        print(f"-- ceiling 1: raw ASGI POST (body {len(body_line['body']) * 3 // 4} bytes)")
        raw_targets = write_targets(
            [
                Target(
                    "POST",
                    f"{raw}/webhooks/clerk",
                    self.user_event("user_raw", T0),
                    {"Content-Type": "application/json"},
                )
            ],
            self.work,
        )
        self.saturate("ceiling1", "ceiling 1: raw ASGI POST", raw_targets, c)
        print("-- gateway: verified, broker-acked webhooks")
        count = 12000
        self.saturate("gateway", "gateway", self.gateway_targets(gateway, count), c)
        print("-- ceiling 2: aiokafka send_and_wait, acks=all")
        events = asyncio.run(
            self.produce(back.kafka, [f"user_{uuid.uuid4().hex[:20]}" for _ in range(500)])
        )
        for _ in range(self.args.repeats):
            produced = python_program(
                self.cpus,
                [
                    "bench/ceilings/kafka_clients.py",
                    "produce",
                    back.kafka,
                    "bench.ceiling.v1",
                    str(self.args.seconds),
                    str(c),
                    str(events),
                    # As the gateway publishes: idempotent in production (the engines).
                    "1" if back.name == "engines" else "0",
                ],
            )
            self.results.add(
                "ceiling2",
                "ceiling 2: aiokafka send_and_wait",
                "msg/s",
                produced["messages"] / produced["seconds"],
            )
        half = self.results.median("gateway") / 2
        print(f"-- gateway at half its saturation: {half:.0f}/s")
        for _ in range(self.args.repeats):
            found = attack(
                self.cpus,
                self.gateway_targets(gateway, int(half * self.args.seconds) + 10),
                seconds=self.args.seconds,
                workers=c,
                rate=half,
            )
            self.results.add(
                "gateway.half.p50", "gateway at half saturation p50", "ms", found.p50_ms
            )
            self.results.add(
                "gateway.half.p99", "gateway at half saturation p99", "ms", found.p99_ms
            )


@dataclass(frozen=True)
class Progress:
    # Events applied: each of the phase's events (a new user) is applied once whoever
    # consumes it; one consumed again after a rebalance counts as "duplicate" (its ledger
    # entry is there) or "stale" (the other worker's write of it came first), not here.
    events: int = 0
    batch_seconds: float = 0.0  # time spent applying batches


def progress_of(worker: str) -> Progress:
    """What a worker process has done, from its /metrics; nothing until it serves them (it
    consumes while it starts, so it is polled from its first moment)."""
    try:
        response = httpx.get(f"{worker}/metrics", timeout=5)
        response.raise_for_status()
    except httpx.HTTPError:
        return Progress()
    events = seconds = 0.0
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "siteview_events_total" and sample.labels["outcome"] == "applied":
                events += sample.value
            elif sample.name == "siteview_batch_seconds_sum":
                seconds += sample.value
    return Progress(int(events), seconds)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def rate_of(samples: list[tuple[float, int]]) -> float:
    """Events per second between the first sample and the last; NaN (shown as not measured)
    when all of them came in one batch."""
    if len(samples) < 2:
        return float("nan")
    (t0, a0), (t1, a1) = samples[0], samples[-1]
    return (a1 - a0) / (t1 - t0) if t1 > t0 and a1 > a0 else float("nan")


def partial_note(samples: list[tuple[float, int]], n: int) -> str:
    """What a capped follow applied, when it is not all of it."""
    applied = samples[-1][1] if samples else 0
    return "" if applied >= n else f"{applied:,} of {n:,} events applied in the time allowed"


def segment_rates(samples: list[tuple[float, int]], before: int, n: int) -> list[float]:
    """The applied rate over each fifth of the run: flat means size does not slow it."""
    rates = []
    for i in range(5):
        low, high = i * n // 5, (i + 1) * n // 5
        inside = [s for s in samples if low <= s[1] <= high]
        if len(inside) >= 2 and not math.isnan(rate := rate_of(inside)):
            rates.append(rate)
    return rates


def skip_backlog(kafka: str, group: str, topic: str) -> None:
    """Commit `group`'s offsets at the end of every partition of `topic` (no member running),
    so the events a capped phase left behind are not applied in the next one."""

    async def skip() -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            _, _, ends = await assign_whole_topic(consumer, kafka, topic)
            await consumer.commit(ends)
        finally:
            await consumer.stop()

    asyncio.run(skip())


def create_topic(kafka: str, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=12, replication_factor=1)])
        finally:
            await admin.close()

    asyncio.run(create())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=("engines", "embedded"), default="engines")
    parser.add_argument("--seconds", type=float, default=8.0, help="each measurement")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16, help="gateway connections")
    parser.add_argument("--api-concurrency", type=int, default=16)
    parser.add_argument(
        "--events",
        type=int,
        default=None,
        help="events per worker run (default: 1,000 on the engines, 10,000 embedded)",
    )
    parser.add_argument("--e2e-rate", type=float, default=None, help="default 5/s, embedded 20/s")
    parser.add_argument("--backlog-rate", type=float, default=None, help="default 10, embedded 100")
    parser.add_argument("--backlog-seconds", type=float, default=20.0)
    parser.add_argument(
        "--phases", default=ALL_PHASES, help="comma-separated subset (then nothing is recorded)"
    )
    args = parser.parse_args()
    # FerretDB 1.24 on SQLite scans its collection for every `_id` lookup (BENCHMARKS.md), so
    # on the engines the worker phases stay small and the steady rates below its capacity.
    engines = args.backend == "engines"
    for name, on_engines, embedded in (
        # A worker takes up to 500 events a batch: a rate needs two batches at least. More
        # would take long: FerretDB's write cost grows with the collection (BENCHMARKS.md).
        ("events", 1000, 10000),
        ("e2e_rate", 5.0, 20.0),
        ("backlog_rate", 10.0, 100.0),
    ):
        if getattr(args, name) is None:
            setattr(args, name, on_engines if engines else embedded)
    phases = set(args.phases.split(","))
    cpus = pin()
    started = datetime.now(UTC)
    load_at_start = round(os.getloadavg()[0], 2)
    print(f"bench: {args.backend} backend; {cpus.describe()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="siteview-bench-") as tmp:
        work = Path(tmp)
        bench = Bench(args, cpus, work)
        key = SigningKey.generate()
        with backend(args.backend, work) as back:
            system = System(back, key)
            try:
                system.start("webhooks", "siteview_webhooks")
                create_topic(back.kafka, "bench.ceiling.v1")
                system.start("users-api", "siteview_users", "api")
                system.start("videos-api", "siteview_videos", "api")
                if "e2e" in phases:
                    bench.e2e_phase(system, key)
                if "backlog" in phases and "e2e" in phases:
                    bench.backlog_phase(system)
                if "e2e" in phases:
                    # The gateway and the APIs are measured with no worker competing.
                    system.stop("users-worker-0")
                system.start_program("raw-asgi", [sys.executable, RAW_ASGI, "{port}"])
                if "api" in phases:
                    bench.api_phase(system, key)
                if "gateway" in phases:
                    bench.gateway_phase(system, back)
                # Last: after two workers of one group stopped, Tansu's group coordinator does
                # not complete the next member's join, and nothing after this phase needs one.
                if "workers" in phases:
                    bench.workers_phase(system, back)
            finally:
                system.close()
    cpu_count = len(set(cpus.sut) | set(cpus.load))
    run = {
        "backend": args.backend,
        "backend_description": back.description,
        "cpus": cpus.describe(),
        "machine": f"{platform.machine()}, {cpu_count} CPUs, Python {platform.python_version()}",
        "started": started.isoformat(timespec="seconds"),
        "minutes": round((datetime.now(UTC) - started).total_seconds() / 60, 1),
        # The machine's 1-minute load average at the start and the end: anything running
        # beside the benchmark shows here.
        "load": [load_at_start, round(os.getloadavg()[0], 2)],
        "settings": vars(args),
        "figures": {k: f.as_dict() for k, f in bench.results.figures.items()},
    }
    if phases != set(ALL_PHASES.split(",")):
        # A subset is for looking, not for the record: BENCHMARKS.md keeps the full runs.
        print(section(run))
        print("(a subset of the phases: bench/results and BENCHMARKS.md left as they are)")
        return
    out = REPO / "bench" / "results" / f"{args.backend}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(run, indent=2) + "\n")
    print(render(REPO, out))


if __name__ == "__main__":
    main()
