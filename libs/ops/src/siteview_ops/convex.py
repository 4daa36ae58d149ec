"""`siteview import --from-convex EXPORT.zip`: a Convex deployment's data, in our shapes.

`npx convex export` writes a ZIP with `<table>/documents.jsonl` per table (one JSON document a
line, with Convex's `_id` and `_creationTime`). Three tables are read:

- `users` (`{name, externalId}`; a "null null" name becomes ""): the users read model,
  keyed by the Clerk user id (`externalId`), written as the users worker writes it but at
  `version` 0: Convex kept no Clerk clock, so anything Clerk's events applied (version =
  Clerk's `updated_at`) is newer and wins, and the next `user.updated` or `siteview reconcile
  users` fills in the e-mail and image Convex never stored. A deleted user's tombstone is
  never touched.
- `paymentAttempts` (Clerk's attempt payload, snake_case, plus Convex's `userId`): through the
  payments service's own rules, as a `paymentAttempt.imported` event, keyed by the attempt's
  `id` when Convex kept it, else by its `payment_id` (Convex stored one row per payment), and
  versioned by Clerk's `updated_at`: a newer state from Clerk is never overwritten.
- `videos` (`{userId, title, url, createdAt, views?, deletedAt?}`): the video keeps its Convex
  id as its id, so links keep working; the owner is the Clerk id of the Convex user it pointed
  to. Versioned by `updatedAt`: a video changed since through the videos API is left alone.
  A video of a user the videos service has a deletion tombstone for is imported deleted.

Every write is a guarded upsert, so a second import of the same ZIP changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bson import json_util
from pydantic import ValidationError
from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from siteview_common.events import ClerkEvent, PoisonMessageError, PublishedEvent
from siteview_common.mongo import make_mongo_client
from siteview_common.settings import load_settings
from siteview_common.writes import bulk_upsert_guarded
from siteview_ops.console import Service, err, fail, one_line, progress
from siteview_ops.transfer import JSON_OPTIONS, OpsMongoSettings
from siteview_payments.domain import attempt_command
from siteview_payments.repository import attempt_write
from siteview_users.domain import UpsertUser
from siteview_users.repository import write_for
from siteview_videos.domain import new_video
from siteview_videos.schema import DELETED_USERS, VIDEOS

USERS_TABLE = "users"
ATTEMPTS_TABLE = "paymentAttempts"
VIDEOS_TABLE = "videos"
#: The version of a user imported from Convex: older than any state from Clerk.
IMPORTED_USER_VERSION = 0
IMPORTED_ATTEMPT_TYPE = "paymentAttempt.imported"
CHUNK = 1000


@dataclass
class Counts:
    inserted: int = 0
    unchanged: int = 0
    updated: int = 0
    skipped: int = 0
    reasons: list[str] = field(default_factory=list)

    def line(self, name: str) -> str:
        text = (
            f"{name}: inserted {self.inserted}, unchanged {self.unchanged}, updated {self.updated}"
        )
        return text + (f", skipped {self.skipped}" if self.skipped else "")

    def skip(self, reason: str) -> None:
        self.skipped += 1
        self.reasons.append(reason)


def read_table(archive: zipfile.ZipFile, table: str) -> list[dict[str, Any]]:
    """The documents of one table (none when the export has no such table)."""
    name = f"{table}/documents.jsonl"
    if name not in archive.namelist():
        return []
    docs = []
    with archive.open(name) as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                doc = json.loads(raw)
            except ValueError as exc:
                fail(f"{name}:{number}: not JSON: {one_line(exc)}")
            if not isinstance(doc, dict) or not isinstance(doc.get("_id"), str):
                fail(f"{name}:{number}: a document with a Convex _id was expected")
            docs.append(doc)
    return docs


def ms(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def convex_name(value: Any) -> str:
    """Convex stored `${first_name} ${last_name}`, so a user without names became "null null"
    (or "undefined undefined"): those words are dropped, as the users service never writes them."""
    words = str(value or "").split()
    return " ".join(w for w in words if w not in ("null", "undefined"))


def user_write(doc: dict[str, Any]) -> UpdateOne:
    created = ms(doc.get("_creationTime")) or 0
    return write_for(
        UpsertUser(
            external_id=str(doc["externalId"]),
            version=IMPORTED_USER_VERSION,
            fields={
                "name": convex_name(doc.get("name")),
                "email": None,
                "imageUrl": None,
                "createdAt": created,
                "updatedAt": created,
            },
        )
    )


def attempt_event(doc: dict[str, Any]) -> PublishedEvent:
    data = {k: v for k, v in doc.items() if not k.startswith("_") and k != "userId"}
    data.setdefault("id", data.get("payment_id"))
    created = ms(doc.get("_creationTime")) or 0
    return PublishedEvent(
        svix_id=f"convex_{doc['_id']}",
        received_at=created,
        event=ClerkEvent(type=IMPORTED_ATTEMPT_TYPE, data=data),
    )


def video_write(doc: dict[str, Any], owner: str, tombstones: dict[str, int]) -> UpdateOne:
    created = ms(doc.get("createdAt")) or ms(doc.get("_creationTime")) or 0
    video = new_video(
        video_id=doc["_id"], user_id=owner, title=doc["title"], url=doc["url"], now=created
    )
    video["views"] = ms(doc.get("views")) or 0
    video["updatedAt"] = ms(doc.get("updatedAt")) or created
    video["deletedAt"] = ms(doc.get("deletedAt"))
    if video["deletedAt"] is None and owner in tombstones:
        video["deletedAt"] = tombstones[owner]
    video_id = video.pop("_id")
    return UpdateOne(
        {"_id": video_id, "updatedAt": {"$lt": video["updatedAt"]}}, {"$set": video}, upsert=True
    )


async def apply(
    collection: AsyncCollection[Any], key: str, keys: Sequence[Any], writes: Sequence[UpdateOne]
) -> Counts:
    """Run guarded upserts, counting which inserted, updated or left a record as it was.

    The counts come from the records before and after, not from the write's reply: a server
    that stops an unordered batch early (FerretDB) has it rerun one write at a time, and then
    a write that applied the first time reads as stale the second."""
    counts = Counts()
    for start in range(0, len(writes), CHUNK):
        chunk_keys = list(keys[start : start + CHUNK])
        before = await snapshot(collection, key, chunk_keys)
        await bulk_upsert_guarded(collection, writes[start : start + CHUNK])
        after = await snapshot(collection, key, chunk_keys)
        for k in dict.fromkeys(chunk_keys):
            if k not in before:
                counts.inserted += k in after
            elif before[k] == after.get(k):
                counts.unchanged += 1
            else:
                counts.updated += 1
    return counts


async def snapshot(collection: AsyncCollection[Any], key: str, keys: list[Any]) -> dict[Any, str]:
    return {
        doc[key]: json_util.dumps(doc, json_options=JSON_OPTIONS)
        async for doc in collection.find({key: {"$in": keys}})
    }


async def import_archive(path: Path) -> dict[str, Counts]:
    settings = load_settings(OpsMongoSettings, "mongo_url")
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        fail(f"cannot read {path} as a Convex export ZIP: {one_line(exc)}", 2)
    with archive:
        users = read_table(archive, USERS_TABLE)
        attempts = read_table(archive, ATTEMPTS_TABLE)
        videos = read_table(archive, VIDEOS_TABLE)
    client = make_mongo_client(settings, appname="siteview-ops")
    results: dict[str, Counts] = {}
    try:
        with progress() as bar:
            task = bar.add_task("import from Convex", total=3)

            users_coll = client[settings.database_of(Service.users)]["users"]
            good_users = [u for u in users if isinstance(u.get("externalId"), str)]
            results["users"] = await apply(
                users_coll,
                "externalId",
                [u["externalId"] for u in good_users],
                [user_write(u) for u in good_users],
            )
            for u in users:
                if u not in good_users:
                    results["users"].skip(f"users {u['_id']}: no externalId")
            bar.advance(task)

            attempt_writes, attempt_ids, skipped = [], [], Counts()
            for doc in attempts:
                try:
                    command = attempt_command(attempt_event(doc))
                except (ValidationError, PoisonMessageError) as exc:
                    skipped.skip(f"paymentAttempts {doc['_id']}: {one_line(exc)}")
                    continue
                attempt_writes.append(attempt_write(command))
                attempt_ids.append(command.attempt_id)
            payments_db = client[settings.database_of(Service.payments)]
            counts = await apply(
                payments_db["payment_attempts"], "_id", attempt_ids, attempt_writes
            )
            counts.skipped, counts.reasons = skipped.skipped, skipped.reasons
            results["payment_attempts"] = counts
            bar.advance(task)

            videos_db = client[settings.database_of(Service.videos)]
            owners = {u["_id"]: u["externalId"] for u in good_users}
            tombstones = {
                t["_id"]: int(t["deletedAt"])
                async for t in videos_db[DELETED_USERS].find(
                    {"_id": {"$in": sorted(set(owners.values()))}}
                )
            }
            video_writes, video_ids, skipped = [], [], Counts()
            for doc in videos:
                owner = owners.get(doc.get("userId"))
                if owner is None:
                    skipped.skip(f"videos {doc['_id']}: its user is not in the export")
                elif not isinstance(doc.get("title"), str) or not isinstance(doc.get("url"), str):
                    skipped.skip(f"videos {doc['_id']}: no title or url")
                else:
                    video_writes.append(video_write(doc, owner, tombstones))
                    video_ids.append(doc["_id"])
            counts = await apply(videos_db[VIDEOS], "_id", video_ids, video_writes)
            counts.skipped, counts.reasons = skipped.skipped, skipped.reasons
            results["videos"] = counts
            bar.advance(task)
    except PyMongoError as exc:
        fail(f"database error: {one_line(exc)}")
    finally:
        await client.close()
    return results


def import_convex(path: Path) -> None:
    """Import a Convex export ZIP; one summary line per target collection on stdout."""
    if not path.is_file():
        fail(f"no such file: {path}", 2)
    results = asyncio.run(import_archive(path))
    for name, counts in results.items():
        for reason in counts.reasons:
            err.print(f"skipped {reason}", markup=False, highlight=False)
        print(counts.line(name))
