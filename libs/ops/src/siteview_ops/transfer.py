"""`siteview export` and `siteview import`: one collection of one service's database as JSONL.

Each line is one document in canonical MongoDB Extended JSON (`bson.json_util`), so every
BSON type survives the round trip (Int64 stays Int64, dates stay dates). An import upserts by
`_id`: a document not there is inserted, one that differs is replaced, one that is equal is left
alone, so importing the same file twice changes nothing the second time.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS, JSONOptions
from pymongo import MongoClient, ReplaceOne
from pymongo.database import Database
from pymongo.errors import PyMongoError

from siteview_common.settings import MongoSettings, load_settings
from siteview_ops.console import Service, err, fail, one_line, progress

JSON_OPTIONS: JSONOptions = CANONICAL_JSON_OPTIONS.with_options(tz_aware=True)
BATCH = 500


class OpsMongoSettings(MongoSettings):
    """Where each service's database is: `MONGODB_URL`, and each service's database name
    (`USERS_MONGODB_DATABASE`, … default the service's name, as the services use)."""

    users_mongodb_database: str = "users"
    payments_mongodb_database: str = "payments"
    videos_mongodb_database: str = "videos"

    def database_of(self, service: Service) -> str:
        return str(getattr(self, f"{service.value}_mongodb_database"))


@contextmanager
def mongo_client() -> Iterator[tuple[OpsMongoSettings, MongoClient[dict[str, Any]]]]:
    settings = load_settings(OpsMongoSettings, "mongo_url")
    client: MongoClient[dict[str, Any]] = MongoClient(
        settings.mongo_url, tz_aware=True, serverSelectionTimeoutMS=5000, appname="siteview-ops"
    )
    try:
        yield settings, client
    except PyMongoError as exc:
        fail(f"database error: {one_line(exc)}")
    finally:
        client.close()


def to_line(doc: dict[str, Any]) -> str:
    return json_util.dumps(doc, json_options=JSON_OPTIONS)


def from_line(line: str, where: str) -> dict[str, Any]:
    try:
        doc = json_util.loads(line, json_options=JSON_OPTIONS)
    except (ValueError, TypeError) as exc:
        fail(f"{where}: not MongoDB Extended JSON: {one_line(exc)}")
    if not isinstance(doc, dict) or "_id" not in doc:
        fail(f"{where}: a document with an _id was expected")
    return doc


def export_collection(db: Database[dict[str, Any]], collection: str, out: TextIO) -> int:
    """Write every document, ordered by `_id`; returns how many."""
    coll = db[collection]
    written = 0
    with progress() as bar:
        task = bar.add_task(f"export {db.name}.{collection}", total=coll.count_documents({}))
        for doc in coll.find({}).sort("_id", 1):
            out.write(to_line(doc) + "\n")
            written += 1
            bar.advance(task)
    return written


def upsert_documents(
    db: Database[dict[str, Any]], collection: str, docs: Sequence[dict[str, Any]]
) -> tuple[int, int, int]:
    """Upsert by `_id`: (inserted, unchanged, updated)."""
    coll = db[collection]
    existing = {d["_id"]: d for d in coll.find({"_id": {"$in": [d["_id"] for d in docs]}})}
    writes = []
    inserted = unchanged = updated = 0
    for doc in docs:
        current = existing.get(doc["_id"])
        if current is None:
            inserted += 1
        elif to_line(current) == to_line(doc):
            unchanged += 1
            continue
        else:
            updated += 1
        writes.append(ReplaceOne({"_id": doc["_id"]}, doc, upsert=True))
    if writes:
        coll.bulk_write(writes, ordered=True)
    return inserted, unchanged, updated


def import_file(db: Database[dict[str, Any]], collection: str, path: Path) -> tuple[int, int, int]:
    totals = [0, 0, 0]
    lines = path.read_text(encoding="utf-8").splitlines()
    with progress() as bar:
        task = bar.add_task(f"import {db.name}.{collection}", total=len(lines))
        batch: list[dict[str, Any]] = []
        for number, line in enumerate(lines, start=1):
            if line.strip():
                batch.append(from_line(line, f"{path}:{number}"))
            if len(batch) >= BATCH or number == len(lines):
                counts = upsert_documents(db, collection, batch) if batch else (0, 0, 0)
                totals = [a + b for a, b in zip(totals, counts, strict=True)]
                bar.advance(task, len(batch))
                batch = []
    return totals[0], totals[1], totals[2]


DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database", help="The database name (default: <SERVICE>_MONGODB_DATABASE, else SERVICE)"
    ),
]


def export(
    service: Annotated[Service, typer.Argument(help="The service whose database to read")],
    collection: Annotated[str, typer.Argument(help="The collection, e.g. users")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write here instead of stdout")
    ] = None,
    database: DatabaseOption = None,
) -> None:
    """Write a collection as JSONL (canonical MongoDB Extended JSON, one document a line)."""
    with mongo_client() as (settings, client):
        db = client[database or settings.database_of(service)]
        if out is None:
            count = export_collection(db, collection, sys.stdout)
        else:
            try:
                with out.open("w", encoding="utf-8") as handle:
                    count = export_collection(db, collection, handle)
            except OSError as exc:
                fail(f"cannot write {out}: {exc.strerror or one_line(exc)}")
        err.print(f"exported {count} documents from {db.name}.{collection}")


def import_(
    service: Annotated[
        Service | None, typer.Argument(help="The service whose database to write")
    ] = None,
    collection: Annotated[str | None, typer.Argument(help="The collection, e.g. users")] = None,
    file: Annotated[
        Path | None, typer.Argument(help="A JSONL file written by `siteview export`")
    ] = None,
    from_convex: Annotated[
        Path | None,
        typer.Option(
            "--from-convex",
            help="A ZIP written by `npx convex export`: its users, payment attempts and videos "
            "go to the users, payments and videos databases",
        ),
    ] = None,
    database: DatabaseOption = None,
) -> None:
    """Load a JSONL export, upserting by _id (a second import of the same file changes nothing),
    or, with --from-convex, a Convex export."""
    if from_convex is not None:
        if service is not None or collection is not None or file is not None:
            fail("--from-convex takes no SERVICE, COLLECTION or FILE", 2)
        from siteview_ops.convex import import_convex

        import_convex(from_convex)
        return
    if service is None or collection is None or file is None:
        fail("import needs SERVICE COLLECTION FILE (or --from-convex EXPORT.zip)", 2)
    if not file.is_file():
        fail(f"no such file: {file}", 2)
    with mongo_client() as (settings, client):
        db = client[database or settings.database_of(service)]
        try:
            inserted, unchanged, updated = import_file(db, collection, file)
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read {file}: {one_line(exc)}")
        print(
            f"{db.name}.{collection}: inserted {inserted}, unchanged {unchanged}, updated {updated}"
        )
