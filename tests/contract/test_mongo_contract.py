"""The MongoDB operations the services use, run on every database we run them on.

Each test runs on the wire-protocol stand-in and on FerretDB (each started once for this
module), and on a real MongoDB too when `SITEVIEW_CONTRACT_MONGODB_URL` names one. Where the
engines differ, each one's behaviour is asserted explicitly (`Engine.kind`): MongoDB's is the
contract; the stand-in is fixed to follow it; FerretDB's deviations are pinned here, and
`bulk_upsert_guarded` and the ledger are shown to be correct on all of them.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument, UpdateMany, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, OperationFailure, WriteConcernError

from siteview_common.ledger import APPLIED_AT_INDEX, LEDGER_TTL_SECONDS, EventLedger
from siteview_common.pagination import CursorCodec, PageParams, paginate
from siteview_common.writes import (
    DUPLICATE_KEY,
    NOT_IMPLEMENTED,
    bulk_upsert_guarded,
    bulk_write_unordered,
)
from siteview_devstack.broker import free_port
from siteview_devstack.engines import FerretDBServer, is_provisioned
from siteview_devstack.mongo.server import StandInThread, start_in_thread
from support import scratch_database

TYPE_MISMATCH = 14
COMMAND_NOT_FOUND = 59

#: A MongoDB replica set's answer when too few members acknowledged in time.
WRITE_CONCERN_ERROR = {
    "code": 64,
    "codeName": "WriteConcernFailed",
    "errmsg": "waiting for replication timed out",
    "errInfo": {"wtimeout": True},
}


@dataclass(frozen=True)
class Engine:
    kind: str  # "standin", "ferretdb" or "mongodb"
    url: str

    @property
    def is_ferretdb(self) -> bool:
        return self.kind == "ferretdb"


#: FerretDB where `make engines` built it (`make test` does, before either pass, wherever Java,
#: Maven and Go exist, and says loudly where they do not); MongoDB where a URL names one.
ENGINES = (
    ["standin"]
    + (["ferretdb"] if is_provisioned() else [])
    + (["mongodb"] if os.environ.get("SITEVIEW_CONTRACT_MONGODB_URL") else [])
)


@pytest.fixture(scope="module")
def standin_server() -> Iterator[StandInThread]:
    handle = start_in_thread(port=0)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def ferretdb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerretDBServer]:
    data_dir = Path(tmp_path_factory.mktemp("ferretdb"))
    server = FerretDBServer(data_dir=data_dir, port=free_port())
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module", params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Engine:
    kind: str = request.param
    if kind == "standin":
        return Engine(kind, request.getfixturevalue("standin_server").url)
    if kind == "ferretdb":
        return Engine(kind, request.getfixturevalue("ferretdb_server").url)
    return Engine(kind, os.environ["SITEVIEW_CONTRACT_MONGODB_URL"])


@pytest.fixture
async def client(engine: Engine) -> AsyncIterator[AsyncMongoClient[Any]]:
    mongo: AsyncMongoClient[Any] = AsyncMongoClient(
        engine.url, tz_aware=True, serverSelectionTimeoutMS=10_000
    )
    try:
        yield mongo
    finally:
        await mongo.close()


@pytest.fixture
async def db(client: AsyncMongoClient[Any]) -> AsyncIterator[AsyncDatabase[Any]]:
    async with scratch_database(client, "contract") as database:
        yield database


def _user_write(external_id: str, version: int, name: str) -> UpdateOne:
    """The users service's guarded upsert (unique `externalId`, tombstones never revived)."""
    return UpdateOne(
        {"externalId": external_id, "version": {"$lt": version}, "deleted": {"$ne": True}},
        {"$set": {"name": name, "version": version, "deleted": False}},
        upsert=True,
    )


def _user_delete(external_id: str, version: int) -> UpdateOne:
    return UpdateOne(
        {"externalId": external_id, "deleted": {"$ne": True}},
        {
            "$set": {"deleted": True, "deletedAt": version},
            "$max": {"version": version},
            "$unset": {"name": ""},
        },
        upsert=True,
    )


def _versioned(record_id: str, version: int, **fields: Any) -> UpdateOne:
    """The payments service's guarded upsert keyed by `_id`."""
    return UpdateOne(
        {"_id": record_id, "version": {"$lt": version}},
        {"$set": {**fields, "version": version}},
        upsert=True,
    )


def _retries(collection: str) -> float:
    value = REGISTRY.get_sample_value(
        "siteview_duplicate_key_retries_total", {"collection": collection}
    )
    return value or 0.0


# -- guarded upserts ------------------------------------------------------------------------


async def test_guarded_upserts_apply_newer_and_refuse_stale(
    engine: Engine, db: AsyncDatabase[Any]
) -> None:
    users = db["users"]
    await users.create_index([("externalId", ASCENDING)], unique=True, name="externalId")
    assert (
        await bulk_upsert_guarded(users, [_user_write("a", 1, "A1"), _user_write("b", 5, "B5")])
        == 0
    )

    stale = await bulk_upsert_guarded(
        users,
        [
            _user_write("a", 2, "A2"),  # newer: applies
            _user_write("b", 4, "B4"),  # older than what is stored: stale
            _user_write("c", 1, "C1"),  # new: inserted
            _user_delete("d", 3),  # a deletion of a user never seen: a tombstone
        ],
    )

    names = {d["externalId"]: d.get("name") async for d in users.find({}, {"_id": 0})}
    assert names == {"a": "A2", "b": "B5", "c": "C1", "d": None}
    if engine.is_ferretdb:
        # FerretDB stops at the stale write and misreports it, so the batch is run again one
        # statement at a time: the write before it ("a", applied the first time) is refused
        # the second time and counted as stale too. The data is right; the count is high.
        assert stale == 2
    else:
        assert stale == 1

    # A tombstone is final: neither a newer update nor a replay revives it.
    assert await bulk_upsert_guarded(users, [_user_write("d", 9, "D9")]) == 1
    assert await users.find_one({"externalId": "d"}, {"_id": 0, "name": 1}) == {}


async def test_stale_writes_are_retried_once_and_counted(
    engine: Engine, db: AsyncDatabase[Any]
) -> None:
    records = db[f"records_{uuid.uuid4().hex[:8]}"]
    await bulk_upsert_guarded(records, [_versioned("r1", 5, status="paid")])
    before = _retries(records.name)

    assert await bulk_upsert_guarded(records, [_versioned("r1", 3, status="pending")]) == 1

    assert _retries(records.name) == before + 1
    assert await records.find_one({"_id": "r1"}) == {"_id": "r1", "status": "paid", "version": 5}


async def test_a_workers_batch_of_updates_applies_in_one_call(db: AsyncDatabase[Any]) -> None:
    """500 guarded upserts that each update a stored document, as a worker's batch can be.
    FerretDB 1.x holds a pooled connection for each matched update until its command ends,
    from a pool of 100: sent as one command, this batch waits forever."""
    users = db["users"]
    await users.create_index([("externalId", ASCENDING)], unique=True, name="externalId")
    assert await bulk_upsert_guarded(users, [_user_write(f"u{i}", 1, "v1") for i in range(50)]) == 0
    batch = [_user_write(f"u{i % 50}", 2 + i // 50, f"v{2 + i // 50}") for i in range(500)]

    assert await asyncio.wait_for(bulk_upsert_guarded(users, batch), timeout=120) == 0

    names = {d["externalId"]: d["name"] async for d in users.find({}, {"_id": 0})}
    assert names == {f"u{i}": "v11" for i in range(50)}


async def test_a_bulk_write_of_many_matched_updates_applies(db: AsyncDatabase[Any]) -> None:
    """The same on `bulk_write_unordered` (the videos service's status reports and cascades)."""
    splats = db["splats"]
    await splats.insert_many([{"_id": f"s{i}", "status": "queued"} for i in range(300)])
    reports = [UpdateOne({"_id": f"s{i}"}, {"$set": {"status": "ready"}}) for i in range(300)]

    assert await asyncio.wait_for(bulk_write_unordered(splats, reports), timeout=120) == 300

    assert await splats.count_documents({"status": "ready"}) == 300


async def test_payment_attempt_guards_with_or_and_min(db: AsyncDatabase[Any]) -> None:
    """The payments attempt write: `$or` in the guard, `$min` on insert-or-update."""
    attempts = db["payment_attempts"]

    def attempt(version: int, status: str, terminal: bool) -> UpdateOne:
        guard: dict[str, Any] = {"_id": "pa_1"}
        if terminal:
            guard["$or"] = [{"terminal": {"$ne": True}}, {"version": {"$lt": version}}]
        else:
            guard.update(terminal={"$ne": True}, version={"$lt": version})
        return UpdateOne(
            guard,
            {
                "$set": {"status": status, "version": version, "terminal": terminal},
                "$min": {"createdAt": version},
            },
            upsert=True,
        )

    assert await bulk_upsert_guarded(attempts, [attempt(5, "pending", False)]) == 0
    assert await bulk_upsert_guarded(attempts, [attempt(4, "paid", True)]) == 0
    assert await bulk_upsert_guarded(attempts, [attempt(9, "pending", False)]) == 1
    doc = await attempts.find_one({"_id": "pa_1"})
    assert doc == {
        "_id": "pa_1",
        "status": "paid",
        "version": 4,
        "terminal": True,
        "createdAt": 4,
    }


async def test_a_non_duplicate_write_error_raises_and_is_never_stale(
    engine: Engine, db: AsyncDatabase[Any]
) -> None:
    counters = db["counters"]
    await counters.insert_one({"_id": "s", "v": "not a number"})
    writes = [
        UpdateOne({"_id": "n"}, {"$set": {"v": 1}}, upsert=True),
        UpdateOne({"_id": "s"}, {"$inc": {"v": 1}}, upsert=True),
    ]

    with pytest.raises(BulkWriteError) as raised:
        await bulk_upsert_guarded(counters, writes)

    (error,) = raised.value.details["writeErrors"]
    assert error["code"] == TYPE_MISMATCH
    assert error["errmsg"] == (
        "Cannot apply $inc to a value of non-numeric type. "
        "{_id: \"s\"} has the field 'v' of non-numeric type string"
    )
    assert raised.value.details["writeConcernErrors"] == []
    assert await counters.find_one({"_id": "s"}) == {"_id": "s", "v": "not a number"}


async def test_a_write_concern_error_raises_and_is_never_applied_or_stale(
    engine: Engine, client: AsyncMongoClient[Any], db: AsyncDatabase[Any]
) -> None:
    """MongoDB and the stand-in: a `failCommand` fail point adds a writeConcernError to the
    reply. FerretDB has no fail points and accepts any write concern without ever reporting
    one, so there is nothing to inject there (and nothing it could report)."""
    records = db["records"]
    ledger = EventLedger(db["processed_events"])
    fail_point = {
        "configureFailPoint": "failCommand",
        "mode": {"times": 1},
        "data": {
            "failCommands": ["update", "insert"],
            "namespace": f"{db.name}.records",
            "writeConcernError": WRITE_CONCERN_ERROR,
        },
    }
    if engine.is_ferretdb:
        with pytest.raises(OperationFailure) as refused:
            await client.admin.command(fail_point)
        assert refused.value.code == COMMAND_NOT_FOUND
        reply = await db.command(
            {
                "insert": "records",
                "documents": [{"_id": "w"}],
                "writeConcern": {"w": "majority", "wtimeout": 1},
            }
        )
        assert reply == {"n": 1, "ok": 1.0}
        return

    await client.admin.command(fail_point)
    try:
        with pytest.raises(WriteConcernError) as raised:
            await bulk_upsert_guarded(records, [_versioned("r1", 1, status="pending")])
        assert raised.value.code == WRITE_CONCERN_ERROR["code"]
        # The fail point fired once; the same write now applies, which proves the first
        # one reached the server (and was not counted as stale).
        assert await bulk_upsert_guarded(records, [_versioned("r1", 2, status="paid")]) == 0

        fail_point["data"]["namespace"] = f"{db.name}.processed_events"
        await client.admin.command(fail_point)
        with pytest.raises(WriteConcernError):
            await ledger.record(["msg_1"])
        await ledger.record(["msg_1", "msg_2"])  # msg_1 is there: only a duplicate now
        assert await ledger.seen(["msg_1", "msg_2", "msg_3"]) == {"msg_1", "msg_2"}
    finally:
        await client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})


# -- raw reply shapes -----------------------------------------------------------------------


async def test_unordered_update_with_a_duplicate_key(
    engine: Engine, db: AsyncDatabase[Any]
) -> None:
    await db["z"].insert_one({"_id": 1, "v": 3})
    command = {
        "update": "z",
        "updates": [
            {"q": {"_id": 10}, "u": {"$set": {"v": 5}}, "upsert": True},
            {"q": {"_id": 1, "v": {"$lt": 0}}, "u": {"$set": {"v": 9}}, "upsert": True},
            {"q": {"_id": 11}, "u": {"$set": {"v": 5}}, "upsert": True},
        ],
        "ordered": False,
    }

    reply = await db.command(command)

    ids = sorted([d["_id"] async for d in db["z"].find({}, {"_id": 1})])
    (error,) = reply["writeErrors"]
    assert error["code"] == DUPLICATE_KEY
    assert error["errmsg"].startswith(f"E11000 duplicate key error collection: {db.name}.z")
    if engine.is_ferretdb:
        # Stops at the duplicate although unordered, says index 0, and leaves out n and
        # nModified (PyMongo's bulk_write then fails with KeyError: 'nModified').
        assert error["index"] == 0
        assert "n" not in reply and "nModified" not in reply and "upserted" not in reply
        assert ids == [1, 10]
        with pytest.raises(KeyError, match="nModified"):
            await db["z"].bulk_write(
                [UpdateOne({"_id": 1, "v": {"$lt": 0}}, {"$set": {"v": 9}}, upsert=True)],
                ordered=False,
            )
    else:
        assert error["index"] == 1
        assert error["keyValue"] == {"_id": 1}
        assert (reply["n"], reply["nModified"]) == (2, 0)
        assert reply["upserted"] == [{"index": 0, "_id": 10}, {"index": 2, "_id": 11}]
        assert ids == [1, 10, 11]


async def test_unordered_insert_with_a_duplicate_key(
    engine: Engine, db: AsyncDatabase[Any]
) -> None:
    await db["z"].insert_one({"_id": 1})

    reply = await db.command(
        {"insert": "z", "documents": [{"_id": 40}, {"_id": 1}, {"_id": 41}], "ordered": False}
    )

    assert reply["n"] == 2
    (error,) = reply["writeErrors"]
    assert (error["index"], error["code"]) == (1, DUPLICATE_KEY)
    assert sorted([d["_id"] async for d in db["z"].find()]) == [1, 40, 41]
    with pytest.raises(BulkWriteError) as raised:
        await db["z"].insert_many([{"_id": 50}, {"_id": 40}], ordered=False)
    assert raised.value.details["nInserted"] == 1
    assert [e["index"] for e in raised.value.details["writeErrors"]] == [1]


# -- the ledger -----------------------------------------------------------------------------


async def test_ttl_index_on_the_ledger(engine: Engine, db: AsyncDatabase[Any]) -> None:
    events = db["processed_events"]
    if engine.is_ferretdb:
        with pytest.raises(OperationFailure) as refused:
            await events.create_index([("appliedAt", ASCENDING)], expireAfterSeconds=60)
        assert refused.value.code == NOT_IMPLEMENTED
        assert "expireAfterSeconds" in str(refused.value.details)

    ledger = EventLedger(events)
    await ledger.create_indexes()
    await ledger.create_indexes()  # a restart: nothing changes

    indexes = {i["name"]: i async for i in await events.list_indexes()}
    assert dict(indexes[APPLIED_AT_INDEX]["key"]) == {"appliedAt": 1}
    if engine.is_ferretdb:
        assert ledger.expires_by_sweeping
        assert "expireAfterSeconds" not in indexes[APPLIED_AT_INDEX]
    else:
        assert not ledger.expires_by_sweeping
        assert indexes[APPLIED_AT_INDEX]["expireAfterSeconds"] == LEDGER_TTL_SECONDS


async def test_ledger_records_once_and_sweeps_where_there_is_no_ttl(
    engine: Engine, db: AsyncDatabase[Any]
) -> None:
    events = db["processed_events"]
    ledger = EventLedger(events)
    await ledger.create_indexes()
    long_ago = datetime.now(UTC) - timedelta(seconds=LEDGER_TTL_SECONDS + 3600)
    await events.insert_many(
        [{"_id": "old_1", "appliedAt": long_ago}, {"_id": "recent", "appliedAt": datetime.now(UTC)}]
    )

    await ledger.record(["msg_1", "recent"])  # "recent" already there: not an error

    assert await ledger.seen(["msg_1", "recent", "msg_2"]) == {"msg_1", "recent"}
    if not ledger.expires_by_sweeping:
        return  # the server's TTL monitor expires entries (lazily, on the stand-in)
    assert await events.find_one({"_id": "old_1"}) is None

    # At most one sweep per interval: an entry expiring now stays until the next one.
    await events.insert_one({"_id": "old_2", "appliedAt": long_ago})
    await ledger.record(["msg_2"])
    assert await ledger.seen(["msg_2"]) == {"msg_2"}
    assert await events.find_one({"_id": "old_2"}) is not None


async def test_ledger_sweep_deletes_only_expired_entries(db: AsyncDatabase[Any]) -> None:
    events = db["processed_events"]
    now = datetime.now(UTC)
    await events.insert_many(
        [
            {"_id": "expired", "appliedAt": now - timedelta(seconds=LEDGER_TTL_SECONDS + 60)},
            {"_id": "kept", "appliedAt": now - timedelta(seconds=LEDGER_TTL_SECONDS - 3600)},
        ]
    )

    assert await EventLedger(events).sweep() == 1

    assert [d["_id"] async for d in events.find()] == ["kept"]


async def test_a_failed_sweep_does_not_fail_the_record(standin_server: StandInThread) -> None:
    """Sweeping is housekeeping: when the delete fails, the ids are still recorded, and the
    next record sweeps again."""
    client: AsyncMongoClient[Any] = AsyncMongoClient(standin_server.url, tz_aware=True)
    db = client[f"contract_{uuid.uuid4().hex[:12]}"]
    events = db["processed_events"]
    ledger = EventLedger(events, sweep=True)
    long_ago = datetime.now(UTC) - timedelta(seconds=LEDGER_TTL_SECONDS + 60)
    await events.insert_one({"_id": "old", "appliedAt": long_ago})
    await client.admin.command(
        {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {
                "failCommands": ["delete"],
                "namespace": f"{db.name}.processed_events",
                "errorCode": 2,
            },
        }
    )
    try:
        await ledger.record(["msg_1"])
        assert await ledger.seen(["msg_1", "old"]) == {"msg_1", "old"}

        await ledger.record(["msg_2"])
        assert await ledger.seen(["msg_1", "msg_2", "old"]) == {"msg_1", "msg_2"}
    finally:
        await client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
        await client.drop_database(db.name)
        await client.close()


# -- indexes --------------------------------------------------------------------------------


async def test_unique_and_compound_index_creation(engine: Engine, db: AsyncDatabase[Any]) -> None:
    users, videos = db["users"], db["videos"]
    keys = [("userId", ASCENDING), ("deletedAt", ASCENDING), ("createdAt", DESCENDING)]
    for _ in range(2):  # every process creates its indexes at start: the second is a no-op
        await users.create_index([("externalId", ASCENDING)], unique=True, name="externalId")
        await videos.create_index([*keys, ("_id", DESCENDING)], name="by_user")

    user_indexes = {i["name"]: i async for i in await users.list_indexes()}
    assert set(user_indexes) == {"_id_", "externalId"}
    assert user_indexes["externalId"]["unique"] is True
    video_indexes = {i["name"]: i async for i in await videos.list_indexes()}
    assert list(video_indexes["by_user"]["key"].items()) == [
        ("userId", 1),
        ("deletedAt", 1),
        ("createdAt", -1),
        ("_id", -1),
    ]

    await users.insert_one({"externalId": "a"})
    with pytest.raises(BulkWriteError) as raised:
        await users.insert_many([{"externalId": "b"}, {"externalId": "a"}], ordered=False)
    assert [e["code"] for e in raised.value.details["writeErrors"]] == [DUPLICATE_KEY]
    assert await users.count_documents({}) == 2


# -- the read and write side of the APIs ----------------------------------------------------


async def test_concurrent_increments(engine: Engine, db: AsyncDatabase[Any]) -> None:
    """The videos API's view count: `$inc` by findAndModify (and by update) on one document,
    many at once. MongoDB applies each atomically, so the total is exact and every caller
    sees its own count. FerretDB 1.x on SQLite reads and writes the document in separate
    steps, so concurrent increments overwrite each other; one at a time they are exact."""
    videos = db["videos"]
    live = {"_id": "v1", "userId": "u1", "deletedAt": None}
    await videos.insert_one({**live, "views": 0})

    async def view() -> int:
        doc = await videos.find_one_and_update(
            live, {"$inc": {"views": 1}}, return_document=ReturnDocument.AFTER
        )
        assert doc is not None
        return int(doc["views"])

    async def views() -> int:
        return int((await videos.find_one({"_id": "v1"}) or {})["views"])

    async def concurrent_round() -> tuple[list[int], int]:
        await videos.update_one({"_id": "v1"}, {"$set": {"views": 0}})
        counts = await asyncio.gather(*(view() for _ in range(40)))
        await asyncio.gather(
            *(videos.update_one({"_id": "v1"}, {"$inc": {"views": 1}}) for _ in range(10))
        )
        return sorted(counts), await views()

    if not engine.is_ferretdb:
        counts, total = await concurrent_round()
        assert counts == list(range(1, 41))  # each increment saw its own result
        assert total == 50
        return

    await videos.update_one({"_id": "v1"}, {"$set": {"views": 0}})
    assert [await view() for _ in range(5)] == [1, 2, 3, 4, 5]
    lost = []
    for _ in range(10):  # each round is very likely to lose some; one is proof enough
        counts, total = await concurrent_round()
        assert 1 <= total <= 50 and max(counts) <= 40
        if total < 50:
            lost.append(50 - total)
            break
    assert lost, "FerretDB applied 10 rounds of concurrent increments exactly"


async def test_find_one_and_update_with_a_projection(
    engine: Engine, db: AsyncDatabase[Any]
) -> None:
    videos = db["videos"]
    await videos.insert_one({"_id": "v1", "views": 0, "title": "a"})

    async def view() -> Any:
        return await videos.find_one_and_update(
            {"_id": "v1"},
            {"$inc": {"views": 1}},
            projection={"_id": 0, "views": 1},
            return_document=ReturnDocument.AFTER,
        )

    if engine.is_ferretdb:
        # FerretDB 1.x has no `fields` (projection) in findAndModify, and did not write.
        with pytest.raises(OperationFailure) as refused:
            await view()
        assert refused.value.code == NOT_IMPLEMENTED
        assert (await videos.find_one({"_id": "v1"}) or {})["views"] == 0
    else:
        assert await view() == {"views": 1}


async def test_find_one_and_update_shapes(db: AsyncDatabase[Any]) -> None:
    videos = db["videos"]
    await videos.insert_one({"_id": "v1", "userId": "u1", "deletedAt": None, "title": "a"})
    live = {"_id": "v1", "userId": "u1", "deletedAt": None}

    after = await videos.find_one_and_update(
        live, {"$set": {"title": "b"}}, return_document=ReturnDocument.AFTER
    )
    before = await videos.find_one_and_update(live, {"$set": {"title": "c"}})
    someone_else = await videos.find_one_and_update(
        {**live, "userId": "u2"}, {"$set": {"title": "x"}}, return_document=ReturnDocument.AFTER
    )

    assert after == {"_id": "v1", "userId": "u1", "deletedAt": None, "title": "b"}
    assert before is not None and before["title"] == "b"
    assert someone_else is None
    soft = await videos.update_one(live, {"$set": {"deletedAt": 7}})
    again = await videos.update_one(live, {"$set": {"deletedAt": 8}})
    assert (soft.matched_count, again.matched_count) == (1, 0)
    assert (await videos.find_one({"_id": "v1"}) or {})["deletedAt"] == 7


async def test_tombstones_and_cascade_bulk_writes(db: AsyncDatabase[Any]) -> None:
    """The videos worker's deletion: tombstones by upsert with $min/$setOnInsert, then one
    UpdateMany per user."""
    tombstones, videos = db["deleted_users"], db["videos"]
    await videos.insert_many(
        [{"_id": f"v{i}", "userId": "u1", "deletedAt": None, "createdAt": i} for i in range(1, 5)]
    )

    def tombstone(user_id: str, deleted_at: int, now: int) -> UpdateOne:
        return UpdateOne(
            {"_id": user_id},
            {"$min": {"deletedAt": deleted_at}, "$setOnInsert": {"appliedAt": now}},
            upsert=True,
        )

    await tombstones.bulk_write([tombstone("u1", 30, 100), tombstone("u2", 5, 100)], ordered=False)
    await tombstones.bulk_write([tombstone("u1", 20, 200)], ordered=False)
    result = await videos.bulk_write(
        [
            UpdateMany(
                {"userId": "u1", "deletedAt": None, "createdAt": {"$lte": 3}},
                {"$set": {"deletedAt": 20}},
            )
        ],
        ordered=False,
    )

    assert await tombstones.find_one({"_id": "u1"}) == {
        "_id": "u1",
        "deletedAt": 20,
        "appliedAt": 100,
    }
    assert result.modified_count == 3
    assert await videos.count_documents({"userId": "u1", "deletedAt": None}) == 1


async def test_keyset_pagination_walk(db: AsyncDatabase[Any]) -> None:
    videos = db["videos"]
    docs = [
        {"_id": f"v{i:02d}", "userId": "u1", "deletedAt": None, "createdAt": 1000 + i // 3}
        for i in range(23)
    ]
    await videos.insert_many(
        [*docs, {"_id": "other", "userId": "u2", "deletedAt": None, "createdAt": 5}]
    )
    codec = CursorCodec("contract-secret")
    walked: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        page = await paginate(
            videos,
            base_filter={"userId": "u1", "deletedAt": None},
            sort_field="createdAt",
            params=PageParams(num_items=5, cursor=cursor),
            codec=codec,
            scope="videos:u1",
            shape=lambda d: str(d["_id"]),
        )
        walked += page.page
        cursor = page.continue_cursor
        if page.is_done:
            break

    newest_first = sorted(docs, key=lambda d: (d["createdAt"], d["_id"]), reverse=True)
    assert walked == [d["_id"] for d in newest_first]


async def test_find_in_sort_limit_count_and_delete(db: AsyncDatabase[Any]) -> None:
    attempts = db["payment_attempts"]
    await attempts.insert_many(
        [
            {"_id": "pa_1", "paymentId": "p1", "userId": "u1", "createdAt": 10},
            {"_id": "pa_2", "paymentId": "p1", "userId": "u1", "createdAt": 20},
            {"_id": "pa_3", "paymentId": "p1", "userId": "u1", "createdAt": 20},
            {"_id": "pa_4", "paymentId": "p2", "userId": "u2", "createdAt": 30},
        ]
    )

    latest = await (
        attempts.find({"paymentId": "p1", "userId": "u1"}, {"_id": 1})
        .sort([("createdAt", DESCENDING), ("_id", DESCENDING)])
        .limit(1)
        .to_list()
    )
    found = {d["_id"] async for d in attempts.find({"_id": {"$in": ["pa_1", "pa_4", "nope"]}})}
    internal = {"paymentId": 0, "createdAt": 0}  # the APIs leave internal fields out
    shown = await attempts.find({"userId": "u2"}, internal).to_list()

    assert latest == [{"_id": "pa_3"}]
    assert found == {"pa_1", "pa_4"}
    assert shown == [{"_id": "pa_4", "userId": "u2"}]
    assert await attempts.count_documents({"userId": "u1"}) == 3
    assert await attempts.count_documents({"userId": "nobody"}) == 0
    assert (await attempts.delete_one({"_id": "pa_1"})).deleted_count == 1
    assert (await attempts.delete_one({"_id": "pa_1"})).deleted_count == 0
    assert (await attempts.delete_many({"userId": "u1"})).deleted_count == 2
    assert await attempts.count_documents({}) == 1
