"""`siteview export` / `siteview import`: a collection round-trips exactly through JSONL, and a
second import of the same file changes nothing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from bson import Int64, ObjectId, json_util
from bson.json_util import CANONICAL_JSON_OPTIONS
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from conftest import Backend
from siteview_devstack.processes import base_env
from support import run_module, scratch_database

OPTIONS = CANONICAL_JSON_OPTIONS.with_options(tz_aware=True)


def cli_env(backend: Backend) -> dict[str, str]:
    env = base_env()
    env.update(APP_ENV=backend.app_env, MONGODB_URL=backend.mongo)
    return env


def siteview(backend: Backend, *argv: str) -> Any:
    return run_module(["siteview_ops.cli", *argv], cli_env(backend))


DOCS: list[dict[str, Any]] = [
    {
        "_id": "user_a",
        "externalId": "user_a",
        "version": Int64(1773152525000),
        "count": 3,
        "ratio": 0.25,
        "seen": dt.datetime(2026, 3, 10, 12, 0, 0, 123000, tzinfo=dt.UTC),
        "nested": {"list": [1, "two", None, {"x": True}], "empty": {}},
        "name": "Zoë Ñandú",
    },
    {"_id": ObjectId("65f0c0ffee0000000000beef"), "deletedAt": None, "views": Int64(7)},
]


def canonical(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(json_util.dumps(d, json_options=OPTIONS) for d in docs)


async def test_export_import_round_trips_and_second_import_changes_nothing(
    backend: Backend, db: AsyncDatabase[Any], mongo_client: AsyncMongoClient[Any], tmp_path: Path
) -> None:
    await db["users"].insert_many([dict(d) for d in DOCS])
    out = tmp_path / "users.jsonl"
    done = siteview(backend, "export", "users", "users", "--database", db.name, "--out", str(out))
    assert done.returncode == 0, done.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == len(DOCS)
    assert '"$numberLong": "1773152525000"' in out.read_text()  # canonical: Int64 stays Int64

    async with scratch_database(mongo_client, "import") as target:
        await target["users"].insert_one({"_id": "user_a", "externalId": "stale"})
        first = siteview(backend, "import", "users", "users", str(out), "--database", target.name)
        assert first.returncode == 0, first.stderr
        assert "inserted 1, unchanged 0, updated 1" in first.stdout
        copied = await target["users"].find({}).to_list()
        assert canonical(copied) == canonical(await db["users"].find({}).to_list())
        assert {type(d["_id"]) for d in copied} == {str, ObjectId}

        second = siteview(backend, "import", "users", "users", str(out), "--database", target.name)
        assert second.returncode == 0, second.stderr
        assert "inserted 0, unchanged 2, updated 0" in second.stdout
        assert canonical(await target["users"].find({}).to_list()) == canonical(copied)
