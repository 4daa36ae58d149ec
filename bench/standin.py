"""Benchmark: bulk upserts into the MongoDB stand-in as its collection grows.

Starts the stand-in in its own process (as `make dev` does) and drives it with PyMongo over
TCP. Two collections hold documents shaped like the users service's, each with its unique
index on `externalId`; they are filled with `insert_many`, and at each size MEASURED_BATCHES
`bulk_write` batches of BATCH `UpdateOne(filter, {"$set": ...}, upsert=True)` are timed, half
of them newer versions of stored documents and half new documents; the median batch counts.
The filters are the services' guards: `{_id, version: {$lt}}` (payments' subscriptions and
items) and `{externalId, version: {$lt}, deleted: {$ne: true}}` (users). Prints upserts/s
per size; writes nothing else.

    python bench/standin.py                       # 1k, 10k, 50k and 100k documents
    python bench/standin.py --sizes 1000,10000
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from pymongo import ASCENDING, MongoClient, UpdateOne
from pymongo.collection import Collection

from siteview_devstack.broker import free_port, wait_for_port

BATCH = 500
MEASURED_BATCHES = 7
FILL_BATCH = 1000
SIZES = (1_000, 10_000, 50_000, 100_000)


def user_fields(n: int, version: int) -> dict[str, Any]:
    return {
        "externalId": f"user_{n:09d}",
        "name": f"User {n}",
        "email": f"user{n}@example.com",
        "imageUrl": f"https://img.example.com/{n}.png",
        "createdAt": 1_700_000_000_000 + n,
        "updatedAt": 1_700_000_000_000 + n + version,
        "version": version,
        "deleted": False,
    }


def by_id(n: int, version: int) -> UpdateOne:
    fields = user_fields(n, version)
    return UpdateOne(
        {"_id": fields["externalId"], "version": {"$lt": version}},
        {"$set": fields},
        upsert=True,
    )


def by_external_id(n: int, version: int) -> UpdateOne:
    fields = user_fields(n, version)
    guard = {
        "externalId": fields["externalId"],
        "version": {"$lt": version},
        "deleted": {"$ne": True},
    }
    return UpdateOne(guard, {"$set": fields}, upsert=True)


class Workload:
    """One collection grown to each size, then measured there."""

    def __init__(self, coll: Collection[dict[str, Any]], write: Callable[[int, int], UpdateOne]):
        self.coll, self.write, self.size, self.version = coll, write, 0, 1
        coll.create_index([("externalId", ASCENDING)], unique=True, name="externalId")

    def fill(self, size: int) -> None:
        while self.size < size:
            stop = min(size, self.size + FILL_BATCH)
            docs = [user_fields(n, 1) for n in range(self.size, stop)]
            if self.write is by_id:
                for doc in docs:
                    doc["_id"] = doc["externalId"]
            self.coll.insert_many(docs, ordered=False)
            self.size = stop

    def measure(self) -> float:
        """Upserts per second of the median of MEASURED_BATCHES batches at the current size
        (the median: the machine's other work shows less)."""
        times = []
        for _ in range(MEASURED_BATCHES):
            self.version += 1
            stride = max(1, self.size // (BATCH // 2))
            updates = [self.write(n, self.version) for n in range(0, self.size, stride)]
            updates = updates[: BATCH // 2]
            inserts = [self.write(self.size + i, 1) for i in range(BATCH - len(updates))]
            started = time.perf_counter()
            result = self.coll.bulk_write(updates + inserts, ordered=False)
            times.append(time.perf_counter() - started)
            if result.matched_count != len(updates) or result.upserted_count != len(inserts):
                raise RuntimeError(f"unexpected bulk result: {result.bulk_api_result}")
            self.size += len(inserts)
        return BATCH / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--sizes",
        default=",".join(str(s) for s in SIZES),
        help="collection sizes to measure at, comma-separated",
    )
    sizes = sorted(int(s) for s in parser.parse_args().sizes.split(","))
    port = free_port()
    standin = subprocess.Popen(
        [sys.executable, "-m", "siteview_devstack.mongo.server", "--port", str(port)],
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port("127.0.0.1", port)
        # one command may run long (the stand-in runs one at a time): no heartbeat may time out
        client: MongoClient[dict[str, Any]] = MongoClient(
            f"mongodb://127.0.0.1:{port}", connectTimeoutMS=3_600_000
        )
        db = client["bench"]
        workloads = [Workload(db["by_id"], by_id), Workload(db["by_external_id"], by_external_id)]
        print(f"MongoDB stand-in: upserts/s, bulk_write batches of {BATCH} (half new documents)")
        print(f"{'documents':>10}  {'by _id':>10}  {'by externalId':>14}")
        for size in sizes:
            rates = []
            for workload in workloads:
                workload.fill(size)
                rates.append(workload.measure())
            print(f"{size:>10,}  {rates[0]:>10,.0f}  {rates[1]:>14,.0f}", flush=True)
        client.close()
    finally:
        standin.terminate()
        standin.wait()


if __name__ == "__main__":
    main()
