"""Ceiling 4: raw PyMongo bulk upserts of the documents the users worker writes, built by its
own write rule, into the same database engine, in batches as the worker writes them (a
batch in commands of at most `updates_per_command` statements, as `bulk_upsert_guarded` sends it).

`python bench/ceilings/mongo_upserts.py MONGODB_URL DATABASE FILE BATCH STORED` (FILE: one
published envelope per line, as the worker consumes them; STORED: how many other users the
collection holds first, untimed, as many as the worker's collection holds: on an engine whose
upsert cost grows with the collection, FerretDB's, an empty one would flatter the ceiling);
prints `{"documents": n, "seconds": s}`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from pymongo import MongoClient

from siteview_common.events import PublishedEvent
from siteview_common.writes import updates_per_command
from siteview_users.domain import to_command
from siteview_users.repository import write_for


def main(url: str, database: str, file: str, batch: int, stored: int) -> None:
    writes = []
    for line in Path(file).read_text().splitlines():
        command = to_command(PublishedEvent.model_validate_json(json.loads(line)["value"]))
        if command is not None:
            writes.append(write_for(command))
    client: MongoClient[dict[str, object]] = MongoClient(url)
    collection = client[database]["users"]
    collection.create_index("externalId", unique=True, name="externalId")
    for start in range(0, stored, 1000):
        collection.insert_many(
            {"externalId": f"stored_{n}", "name": f"Stored {n}", "version": 1, "deleted": False}
            for n in range(start, min(stored, start + 1000))
        )
    step = min(batch, updates_per_command(client.admin.command("buildInfo")))
    started = time.perf_counter()
    for start in range(0, len(writes), step):
        collection.bulk_write(writes[start : start + step], ordered=False)
    print(json.dumps({"documents": len(writes), "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
