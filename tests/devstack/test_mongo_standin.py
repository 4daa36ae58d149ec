"""The MongoDB wire-protocol stand-in, driven by the real PyMongo driver over TCP.

Reply shapes are pinned to what MongoDB documents for each command; raw replies are read with
``db.command(...)`` where the driver would otherwise hide them.
"""

from __future__ import annotations

import datetime
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import bson
import pytest
from bson import Code, ObjectId
from pymongo import (
    AsyncMongoClient,
    DeleteOne,
    InsertOne,
    MongoClient,
    ReturnDocument,
    UpdateOne,
)
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure
from pymongo.write_concern import WriteConcern

from siteview_devstack.mongo import STANDIN_MARKER, MongoStandIn, StandInThread, start_in_thread


@pytest.fixture(scope="module")
def standin() -> Iterator[StandInThread]:
    handle = start_in_thread(port=0)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def client(standin: StandInThread) -> Iterator[MongoClient[dict[str, Any]]]:
    mongo: MongoClient[dict[str, Any]] = MongoClient(
        standin.url, serverSelectionTimeoutMS=3000, tz_aware=True
    )
    try:
        yield mongo
    finally:
        mongo.close()


@pytest.fixture
def db(client: MongoClient[dict[str, Any]]) -> Database[dict[str, Any]]:
    return client[f"t_{uuid.uuid4().hex[:16]}"]


# -- raw wire helpers -------------------------------------------------------------------------


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _roundtrip(sock: socket.socket, opcode: int, body: bytes, request_id: int = 7) -> tuple:
    sock.sendall(struct.pack("<iiii", 16 + len(body), request_id, 0, opcode) + body)
    length, _rid, response_to, reply_opcode = struct.unpack("<iiii", _recv_exactly(sock, 16))
    return response_to, reply_opcode, _recv_exactly(sock, length - 16)


def _cstring(text: str) -> bytes:
    return text.encode() + b"\x00"


# -- handshake, diagnostics --------------------------------------------------------------------


def test_hello_is_a_marked_standalone(db: Database[dict[str, Any]]) -> None:
    hello = db.command("hello")
    assert hello["ok"] == 1.0
    assert hello["isWritablePrimary"] is True
    assert hello["helloOk"] is True
    assert hello[STANDIN_MARKER] is True
    assert (hello["minWireVersion"], hello["maxWireVersion"]) == (0, 21)
    assert hello["maxBsonObjectSize"] == 16 * 1024 * 1024
    assert hello["maxMessageSizeBytes"] == 48_000_000
    assert hello["maxWriteBatchSize"] == 100_000
    assert hello["logicalSessionTimeoutMinutes"] == 30
    assert isinstance(hello["connectionId"], int)
    assert isinstance(hello["localTime"], datetime.datetime)
    for replica_set_field in ("setName", "hosts", "msg", "topologyVersion", "compression"):
        assert replica_set_field not in hello
    legacy = db.command("isMaster")
    assert legacy["ismaster"] is True and legacy[STANDIN_MARKER] is True
    assert "isWritablePrimary" not in legacy


def test_ping_and_build_info(client: MongoClient[dict[str, Any]]) -> None:
    assert client.admin.command("ping") == {"ok": 1.0}
    info = client.server_info()
    assert info["version"] == "7.0.0"
    assert info["versionArray"] == [7, 0, 0, 0]
    assert info[STANDIN_MARKER] is True
    assert client.admin.command("buildInfo")[STANDIN_MARKER] is True


def test_op_query_handshake_and_refusals(standin: StandInThread) -> None:
    with socket.create_connection(("127.0.0.1", standin.port), timeout=5) as sock:
        query = bson.encode({"isMaster": 1, "helloOk": True})
        body = struct.pack("<i", 0) + _cstring("admin.$cmd") + struct.pack("<ii", 0, -1) + query
        response_to, opcode, payload = _roundtrip(sock, 2004, body, request_id=41)
        assert (response_to, opcode) == (41, 1)
        flags, cursor_id, starting_from, returned = struct.unpack_from("<iqii", payload)
        assert (flags, cursor_id, starting_from, returned) == (0, 0, 0, 1)
        reply = bson.decode(payload[20:])
        assert reply["ismaster"] is True and reply["helloOk"] is True
        assert reply[STANDIN_MARKER] is True

        query = bson.encode({"find": "x"})
        body = struct.pack("<i", 0) + _cstring("db.$cmd") + struct.pack("<ii", 0, -1) + query
        _, opcode, payload = _roundtrip(sock, 2004, body)
        assert opcode == 1 and struct.unpack_from("<i", payload)[0] & 2  # QueryFailure
        assert bson.decode(payload[20:])["code"] == 352

        _, opcode, payload = _roundtrip(sock, 2012, struct.pack("<iib", 2013, 10, 1) + b"x" * 10)
        assert opcode == 2013
        error = bson.decode(payload[5:])
        assert error["ok"] == 0 and error["code"] == 238 and "OP_COMPRESSED" in error["errmsg"]
        assert sock.recv(1) == b""  # and the connection is closed


def test_op_msg_document_sequence_and_checksum(standin: StandInThread) -> None:
    coll = f"c_{uuid.uuid4().hex[:8]}"
    docs = b"".join(bson.encode({"_id": i, "v": str(i)}) for i in range(3))
    sequence = _cstring("documents") + docs
    sections = (
        b"\x00"
        + bson.encode({"insert": coll, "$db": "wire", "ordered": True})
        + b"\x01"
        + struct.pack("<i", 4 + len(sequence))
        + sequence
    )
    body = struct.pack("<I", 1) + sections + b"\xde\xad\xbe\xef"  # checksumPresent + checksum
    with socket.create_connection(("127.0.0.1", standin.port), timeout=5) as sock:
        response_to, opcode, payload = _roundtrip(sock, 2013, body, request_id=99)
        assert (response_to, opcode) == (99, 2013)
        assert payload[:5] == b"\x00\x00\x00\x00\x00"
        assert bson.decode(payload[5:]) == {"n": 3, "ok": 1.0}
        find = struct.pack("<I", 0) + b"\x00" + bson.encode({"find": coll, "$db": "wire"})
        _, _, payload = _roundtrip(sock, 2013, find)
        assert [d["v"] for d in bson.decode(payload[5:])["cursor"]["firstBatch"]] == ["0", "1", "2"]


def test_unknown_command_is_command_not_found(db: Database[dict[str, Any]]) -> None:
    with pytest.raises(OperationFailure) as info:
        db.command("frobnicate", 1)
    assert info.value.code == 59
    assert info.value.details is not None
    assert info.value.details["codeName"] == "CommandNotFound"
    assert "no such command: 'frobnicate'" in info.value.details["errmsg"]


def test_unsupported_options_are_refused(db: Database[dict[str, Any]]) -> None:
    db.c.insert_one({"a": "x"})
    with pytest.raises(OperationFailure) as info:
        db.c.find_one({}, collation={"locale": "fr"})
    assert info.value.code == 238 and "collation" in str(info.value)
    with pytest.raises(OperationFailure) as info:
        db.c.update_one({}, {"$set": {"a.$[e]": 1}}, array_filters=[{"e": 1}])
    assert info.value.code == 238
    with pytest.raises(OperationFailure) as info:
        db.command("find", "c", bogusOption=1)
    assert info.value.code == 40415
    with pytest.raises(OperationFailure) as info:
        db.c.update_one({}, {"$rename": {"a": "b"}})
    assert info.value.code == 238 and "$rename" in str(info.value)
    assert db.c.find_one({}, {"_id": 0}) == {"a": "x"}


# -- CRUD -------------------------------------------------------------------------------------


def test_insert_find_round_trip(db: Database[dict[str, Any]]) -> None:
    when = datetime.datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=datetime.UTC)
    doc = {"name": "ada", "when": when, "tags": ["a", "b"], "nested": {"n": 1.5}, "big": 2**40}
    inserted = db.people.insert_one(doc).inserted_id
    assert isinstance(inserted, ObjectId)
    found = db.people.find_one({"_id": inserted})
    assert found == {"_id": inserted, **{k: v for k, v in doc.items() if k != "_id"}}
    assert list(found) == ["_id", "name", "when", "tags", "nested", "big"]
    raw = db.command("insert", "people", documents=[{"name": "bob"}])
    assert raw == {"n": 1, "ok": 1.0}
    server_made = db.people.find_one({"name": "bob"})
    assert isinstance(server_made["_id"], ObjectId) and list(server_made) == ["_id", "name"]


def test_find_sort_projection_skip_limit(db: Database[dict[str, Any]]) -> None:
    db.items.insert_many([{"i": i, "g": i % 2, "pad": "x"} for i in range(10)])
    got = list(db.items.find({"g": 0}, {"_id": 0, "i": 1}).sort("i", -1).skip(1).limit(3))
    assert got == [{"i": 6}, {"i": 4}, {"i": 2}]
    got = list(db.items.find({}, {"pad": 0, "_id": 0}).sort([("g", 1), ("i", -1)]).limit(2))
    assert got == [{"i": 8, "g": 0}, {"i": 6, "g": 0}]
    raw = db.command("find", "items", filter={"i": {"$gte": 8}}, projection={"_id": 0, "i": 1})
    assert raw["ok"] == 1.0
    assert raw["cursor"] == {"id": 0, "ns": f"{db.name}.items", "firstBatch": [{"i": 8}, {"i": 9}]}


def test_batch_size_pages_with_get_more_and_kill_cursors(db: Database[dict[str, Any]]) -> None:
    db.pages.insert_many([{"_id": i} for i in range(5)])
    first = db.command("find", "pages", sort={"_id": 1}, batchSize=2)["cursor"]
    assert [d["_id"] for d in first["firstBatch"]] == [0, 1]
    cursor_id = first["id"]
    assert cursor_id != 0 and first["ns"] == f"{db.name}.pages"
    nxt = db.command("getMore", cursor_id, collection="pages", batchSize=2)["cursor"]
    assert (nxt["id"], [d["_id"] for d in nxt["nextBatch"]]) == (cursor_id, [2, 3])
    last = db.command("getMore", cursor_id, collection="pages", batchSize=2)["cursor"]
    assert (last["id"], [d["_id"] for d in last["nextBatch"]]) == (0, [4])
    with pytest.raises(OperationFailure) as info:
        db.command("getMore", cursor_id, collection="pages")
    assert info.value.code == 43

    open_id = db.command("find", "pages", batchSize=1)["cursor"]["id"]
    killed = db.command("killCursors", "pages", cursors=[open_id, 12345])
    assert killed == {
        "cursorsKilled": [open_id],
        "cursorsNotFound": [12345],
        "cursorsAlive": [],
        "cursorsUnknown": [],
        "ok": 1.0,
    }
    with pytest.raises(OperationFailure):
        db.command("getMore", open_id, collection="pages")

    db.pages.insert_many([{"_id": i} for i in range(5, 250)])
    assert [d["_id"] for d in db.pages.find().sort("_id", 1).batch_size(7)] == list(range(250))
    cursor = db.pages.find().batch_size(3)
    assert len([next(cursor) for _ in range(4)]) == 4
    cursor.close()
    assert [d["_id"] for d in db.pages.find().sort("_id", -1).limit(5).batch_size(2)] == [
        249,
        248,
        247,
        246,
        245,
    ]


def test_update_with_upsert_reports_upserted(db: Database[dict[str, Any]]) -> None:
    raw = db.command(
        "update",
        "u",
        updates=[
            {"q": {"k": 1}, "u": {"$set": {"v": 1}}, "upsert": True},
            {"q": {"k": 1}, "u": {"$set": {"v": 2}}},
            {"q": {"k": 1}, "u": {"$set": {"v": 2}}},
            {"q": {"k": 9}, "u": {"$set": {"v": 1}}},
        ],
    )
    upserted_id = raw["upserted"][0]["_id"]
    assert isinstance(upserted_id, ObjectId)
    assert raw == {
        "n": 3,
        "nModified": 1,
        "upserted": [{"index": 0, "_id": upserted_id}],
        "ok": 1.0,
    }
    assert db.u.find_one({"k": 1}) == {"_id": upserted_id, "k": 1, "v": 2}
    result = db.u.update_one({"k": 2}, {"$set": {"v": 3}}, upsert=True)
    assert (result.matched_count, result.modified_count) == (0, 0)
    assert isinstance(result.upserted_id, ObjectId)
    result = db.u.update_one({"_id": "fixed"}, {"$set": {"v": 4}}, upsert=True)
    assert result.upserted_id == "fixed"
    assert db.u.count_documents({}) == 3


def test_update_operators_and_replacement(db: Database[dict[str, Any]]) -> None:
    db.ops.insert_one(
        {"_id": 1, "n": 5, "hi": 10, "lo": 3, "tags": ["a"], "xs": [1, 2, 3], "gone": 1}
    )
    db.ops.update_one(
        {"_id": 1},
        {
            "$set": {"name": "x", "sub.deep": True},
            "$unset": {"gone": ""},
            "$setOnInsert": {"created": True},
            "$inc": {"n": 2, "fresh": 1},
            "$max": {"hi": 7, "lo": 9},
            "$min": {"n": 100},
            "$push": {"log": {"$each": [1, 2]}},
            "$addToSet": {"tags": {"$each": ["a", "b"]}},
            "$pull": {"xs": {"$gte": 2}},
        },
    )
    assert db.ops.find_one({"_id": 1}) == {
        "_id": 1,
        "n": 7,
        "hi": 10,
        "lo": 9,
        "tags": ["a", "b"],
        "xs": [1],
        "name": "x",
        "sub": {"deep": True},
        "fresh": 1,
        "log": [1, 2],
    }
    db.ops.update_one(
        {"_id": 2}, {"$setOnInsert": {"created": True}, "$set": {"v": 1}}, upsert=True
    )
    assert db.ops.find_one({"_id": 2}) == {"_id": 2, "created": True, "v": 1}
    result = db.ops.replace_one({"_id": 1}, {"only": "this"})
    assert (result.matched_count, result.modified_count) == (1, 1)
    assert db.ops.find_one({"_id": 1}) == {"_id": 1, "only": "this"}
    result = db.ops.update_many({}, {"$set": {"all": 1}})
    assert (result.matched_count, result.modified_count) == (2, 2)
    raw = db.command("update", "ops", updates=[{"q": {}, "u": {"x": 1}, "multi": True}])
    assert raw["n"] == 0 and [(e["index"], e["code"]) for e in raw["writeErrors"]] == [(0, 9)]


def test_unordered_bulk_write_reports_only_the_duplicate(db: Database[dict[str, Any]]) -> None:
    db.users.create_index("email", unique=True)
    db.users.insert_one({"key": 0, "email": "taken@example.com"})
    with pytest.raises(BulkWriteError) as info:
        db.users.bulk_write(
            [
                UpdateOne({"key": 1}, {"$set": {"email": "one@example.com"}}, upsert=True),
                UpdateOne({"key": 2}, {"$set": {"email": "taken@example.com"}}, upsert=True),
                UpdateOne({"key": 3}, {"$set": {"email": "three@example.com"}}, upsert=True),
                InsertOne({"key": 4, "email": "four@example.com"}),
            ],
            ordered=False,
        )
    details = info.value.details
    assert len(details["writeErrors"]) == 1
    error = details["writeErrors"][0]
    assert error["index"] == 1 and error["code"] == 11000
    assert error["keyPattern"] == {"email": 1}
    assert error["keyValue"] == {"email": "taken@example.com"}
    assert error["errmsg"] == (
        f"E11000 duplicate key error collection: {db.name}.users index: email_1 "
        'dup key: { email: "taken@example.com" }'
    )
    assert (details["nUpserted"], details["nInserted"]) == (2, 1)
    assert sorted(d["key"] for d in db.users.find()) == [0, 1, 3, 4]


def test_ordered_bulk_write_stops_at_first_error(db: Database[dict[str, Any]]) -> None:
    db.o.insert_one({"_id": 1})
    with pytest.raises(BulkWriteError) as info:
        db.o.bulk_write(
            [InsertOne({"_id": 2}), InsertOne({"_id": 1}), InsertOne({"_id": 3})], ordered=True
        )
    assert [e["index"] for e in info.value.details["writeErrors"]] == [1]
    assert info.value.details["nInserted"] == 1
    assert sorted(d["_id"] for d in db.o.find()) == [1, 2]
    raw = db.command(
        "update",
        "o",
        updates=[
            {"q": {"_id": 2}, "u": {"$set": {"_id": 1}}},
            {"q": {"_id": 1}, "u": {"$set": {"x": 1}}},
        ],
        ordered=True,
    )
    assert [(e["index"], e["code"]) for e in raw["writeErrors"]] == [(0, 66)]
    assert raw["nModified"] == 0
    assert db.o.find_one({"_id": 1}) == {"_id": 1}


def test_duplicate_key_error_on_insert(db: Database[dict[str, Any]]) -> None:
    db.d.create_index([("org", 1), ("slug", -1)], unique=True, name="org_slug")
    db.d.insert_one({"_id": "a", "org": 1, "slug": "x"})
    with pytest.raises(DuplicateKeyError) as info:
        db.d.insert_one({"org": 1, "slug": "x"})
    assert info.value.code == 11000
    assert info.value.details is not None
    assert info.value.details["keyPattern"] == {"org": 1, "slug": -1}
    assert info.value.details["keyValue"] == {"org": 1, "slug": "x"}
    assert 'index: org_slug dup key: { org: 1, slug: "x" }' in info.value.details["errmsg"]
    with pytest.raises(DuplicateKeyError) as info:
        db.d.insert_one({"_id": "a"})
    assert info.value.details is not None
    assert info.value.details["keyPattern"] == {"_id": 1}
    assert 'index: _id_ dup key: { _id: "a" }' in info.value.details["errmsg"]
    with pytest.raises(DuplicateKeyError):
        db.d.update_one({"org": 2}, {"$set": {"org": 1, "slug": "x"}}, upsert=True)
    db.d.insert_one({"_id": "b", "org": 1, "slug": "y"})
    with pytest.raises(DuplicateKeyError):
        db.d.update_one({"_id": "b"}, {"$set": {"slug": "x"}})
    assert db.d.find_one({"_id": "b"})["slug"] == "y"
    assert db.d.count_documents({}) == 2


# -- lookups: by `_id` and through unique indexes ----------------------------------------------


def _refused(write: Any) -> dict[str, Any]:
    """The key a write is refused for as a duplicate."""
    with pytest.raises((DuplicateKeyError, BulkWriteError)) as info:
        write()
    details = info.value.details
    assert details is not None
    error = details["writeErrors"][0] if "writeErrors" in details else details
    assert error["code"] == 11000
    key: dict[str, Any] = error["keyValue"]
    return key


def test_guarded_upserts_by_id_apply_only_over_older_versions(
    db: Database[dict[str, Any]],
) -> None:
    db.g.insert_many([{"_id": f"r{i}", "version": 5} for i in range(50)])

    def guarded(doc_id: str, version: int, **fields: Any) -> dict[str, Any]:
        update = {"$set": {"version": version, **fields}}
        return {"q": {"_id": doc_id, "version": {"$lt": version}}, "u": update, "upsert": True}

    raw = db.command(
        "update",
        "g",
        updates=[
            guarded("r7", 6, s="newer"),
            guarded("r8", 5, s="same version"),
            guarded("r9", 4, s="older"),
            guarded("n1", 1, s="new"),
            guarded("r10", 9),
            guarded("r11", 6, s="newer"),
        ],
        ordered=False,
    )
    assert [(e["index"], e["code"], e["keyValue"]) for e in raw.pop("writeErrors")] == [
        (1, 11000, {"_id": "r8"}),
        (2, 11000, {"_id": "r9"}),
    ]
    assert raw == {"n": 4, "nModified": 3, "upserted": [{"index": 3, "_id": "n1"}], "ok": 1.0}
    assert db.g.find_one({"_id": "r7"}) == {"_id": "r7", "version": 6, "s": "newer"}
    assert db.g.find_one({"_id": "r8"}) == {"_id": "r8", "version": 5}
    assert db.g.find_one({"_id": "r9"}) == {"_id": "r9", "version": 5}
    assert db.g.find_one({"_id": "n1"}) == {"_id": "n1", "version": 1, "s": "new"}
    assert db.g.find_one({"_id": "r10"}) == {"_id": "r10", "version": 9}
    raw = db.command("update", "g", updates=[guarded("r10", 10), guarded("r10", 10)])
    assert raw["n"] == 1 and raw["nModified"] == 1 and raw["writeErrors"][0]["index"] == 1
    result = db.g.update_one({"_id": "r12", "version": 5}, {"$set": {"version": 5}})
    assert (result.matched_count, result.modified_count) == (1, 0)
    assert db.g.count_documents({}) == 51
    assert db.g.count_documents({"_id": "r12", "version": {"$gt": 5}}) == 0
    assert db.g.delete_one({"_id": "r13", "version": 4}).deleted_count == 0
    assert db.g.delete_one({"_id": "r13", "version": 5}).deleted_count == 1
    assert db.g.find_one({"_id": "r13"}) is None
    db.g.insert_many([{"_id": 2.0}, {"_id": 3}, {"_id": ObjectId("0123456789ab0123456789ab")}])
    assert db.g.find_one({"_id": 2}) == {"_id": 2.0}
    assert db.g.find_one({"_id": 3.0}) == {"_id": 3}
    assert db.g.find_one({"_id": ObjectId("0123456789ab0123456789ab")}) is not None
    assert db.g.find_one({"_id": "0123456789ab0123456789ab"}) is None


def test_and_wrapped_id(db: Database[dict[str, Any]]) -> None:
    db.a.insert_many([{"_id": f"k{i}", "v": i} for i in range(20)])
    assert list(db.a.find({"$and": [{"_id": "k3"}, {"v": {"$gte": 3}}]})) == [{"_id": "k3", "v": 3}]
    assert list(db.a.find({"$and": [{"_id": "k3"}, {"v": {"$gt": 3}}]})) == []
    assert list(db.a.find({"$and": [{"$and": [{"_id": "k4"}]}, {"v": 4}]})) == [
        {"_id": "k4", "v": 4}
    ]
    assert list(db.a.find({"$and": [{"_id": "nope"}, {"v": 4}]})) == []
    assert db.a.count_documents({"_id": "k1", "$and": [{"_id": "k2"}]}) == 0
    assert db.a.count_documents({"_id": "k1", "$or": [{"v": 1}, {"v": 2}]}) == 1
    assert db.a.count_documents({"$or": [{"_id": "k1"}, {"_id": "k2"}]}) == 2
    result = db.a.update_one({"$and": [{"_id": "k5"}, {"v": {"$lt": 5}}]}, {"$set": {"v": 50}})
    assert (result.matched_count, result.modified_count) == (0, 0)
    result = db.a.update_one({"$and": [{"_id": "k5"}, {"v": {"$lt": 6}}]}, {"$set": {"v": 50}})
    assert (result.matched_count, result.modified_count) == (1, 1)
    assert db.a.find_one({"_id": "k5"}) == {"_id": "k5", "v": 50}
    assert db.a.delete_one({"$and": [{"_id": "k6"}, {"v": 0}]}).deleted_count == 0
    assert db.a.delete_one({"$and": [{"_id": "k6"}, {"v": 6}]}).deleted_count == 1
    assert db.a.count_documents({}) == 19


def test_unique_index_follows_updates_replacements_upserts_and_deletes(
    db: Database[dict[str, Any]],
) -> None:
    db.u.create_index("externalId", unique=True)
    db.u.insert_many([{"_id": i, "externalId": f"e{i}"} for i in range(20)])
    # refused: nothing moves, the document keeps its value
    update = db.u.update_one
    assert _refused(lambda: update({"_id": 1}, {"$set": {"externalId": "e2"}})) == {
        "externalId": "e2"
    }
    assert _refused(lambda: db.u.insert_one({"externalId": "e1"})) == {"externalId": "e1"}
    # an update frees its old value and takes the new one
    update({"_id": 1}, {"$set": {"externalId": "x1"}})
    db.u.insert_one({"_id": "f1", "externalId": "e1"})
    assert _refused(lambda: db.u.insert_one({"externalId": "x1"})) == {"externalId": "x1"}
    assert _refused(lambda: update({"_id": 2}, {"$set": {"externalId": "x1"}})) == {
        "externalId": "x1"
    }
    # and a document can leave a value and come back to it
    update({"_id": 10}, {"$set": {"externalId": "x10"}})
    update({"_id": 10}, {"$set": {"externalId": "e10"}})
    assert _refused(lambda: db.u.insert_one({"externalId": "e10"})) == {"externalId": "e10"}
    db.u.insert_one({"_id": "f10", "externalId": "x10"})
    # replacements
    db.u.replace_one({"_id": 3}, {"externalId": "x3"})
    db.u.insert_one({"_id": "f3", "externalId": "e3"})
    assert _refused(lambda: db.u.insert_one({"externalId": "x3"})) == {"externalId": "x3"}
    assert _refused(lambda: db.u.replace_one({"_id": 4}, {"externalId": "x3"})) == {
        "externalId": "x3"
    }
    # upserts, inserting and updating
    update({"_id": "n"}, {"$set": {"externalId": "xn"}}, upsert=True)
    assert _refused(lambda: update({"_id": "m"}, {"$set": {"externalId": "xn"}}, upsert=True)) == {
        "externalId": "xn"
    }
    update({"_id": "n"}, {"$set": {"externalId": "yn"}}, upsert=True)
    db.u.insert_one({"_id": "fn", "externalId": "xn"})
    # findAndModify
    db.u.find_one_and_update({"_id": 8}, {"$set": {"externalId": "x8"}})
    db.u.insert_one({"_id": "f8", "externalId": "e8"})
    assert _refused(lambda: db.u.insert_one({"externalId": "x8"})) == {"externalId": "x8"}
    # a deleted document's value can be used again
    db.u.delete_one({"_id": 5})
    db.u.find_one_and_delete({"_id": 9})
    db.u.delete_many({"_id": {"$in": [6, 7]}})
    db.u.insert_many([{"_id": f"f{i}", "externalId": f"e{i}"} for i in (5, 6, 7, 9)])
    for i in (5, 6, 7, 9):
        assert _refused(lambda i=i: db.u.insert_one({"externalId": f"e{i}"})) == {
            "externalId": f"e{i}"
        }
    db.u.delete_one({"_id": "f5"})
    update({"_id": 11}, {"$set": {"externalId": "e5"}})
    assert db.u.find_one({"externalId": "e5"}) == {"_id": 11, "externalId": "e5"}
    assert db.u.find_one({"externalId": "e11"}) is None
    values = [doc["externalId"] for doc in db.u.find()]
    assert len(values) == len(set(values)) == db.u.count_documents({}) == 25


def test_unique_index_over_values_it_does_not_hash(db: Database[dict[str, Any]]) -> None:
    db.w.insert_one({"_id": 1, "k": ["a", "b"]})
    db.w.create_index("k", unique=True)
    db.w.insert_many([{"_id": 2, "k": 2.0}, {"_id": 3}, {"_id": 4, "k": {"x": 1}}])
    assert _refused(lambda: db.w.insert_one({"k": "a"})) == {"k": "a"}
    assert _refused(lambda: db.w.insert_one({"k": 2})) == {"k": 2}
    assert _refused(lambda: db.w.insert_one({"k": None})) == {"k": None}
    assert _refused(lambda: db.w.insert_one({"k": {"x": 1}})) == {"k": {"x": 1}}
    assert [d["_id"] for d in db.w.find({"k": "b"})] == [1]
    assert [d["_id"] for d in db.w.find({"k": 2})] == [2]
    assert [d["_id"] for d in db.w.find({"k": None})] == [3]
    db.w.update_one({"_id": 1}, {"$set": {"k": "c"}})
    db.w.update_one({"_id": 2}, {"$set": {"k": ["d", 3]}})
    db.w.insert_many([{"_id": 5, "k": "a"}, {"_id": 6, "k": 2}])
    assert _refused(lambda: db.w.insert_one({"k": 3})) == {"k": 3}
    assert _refused(lambda: db.w.update_one({"_id": 5}, {"$set": {"k": "d"}})) == {"k": "d"}
    assert [d["_id"] for d in db.w.find({"k": "c"})] == [1]
    assert [d["_id"] for d in db.w.find({"k": "b"})] == []
    assert [d["_id"] for d in db.w.find({"k": "a"})] == [5]
    db.w.insert_one({"_id": 7, "k": Code("c")})  # a string subclass, and unhashable
    assert _refused(lambda: db.w.insert_one({"k": Code("c")})) == {"k": Code("c")}
    assert [d["_id"] for d in db.w.find({"k": Code("c")})] == [7]
    assert list(db.w.find({"_id": Code("c")})) == []


def test_unique_index_after_an_update_that_fails_midway(db: Database[dict[str, Any]]) -> None:
    db.p.create_index("k", unique=True)
    db.p.insert_one({"_id": 1, "k": "a", "name": "text"})
    with pytest.raises(OperationFailure):
        db.p.update_one({"_id": 1}, {"$set": {"k": "b"}, "$push": {"name": 1}})
    # whatever the failed update left of the document, the index agrees with it
    (held,) = [doc["k"] for doc in db.p.find({"_id": {"$in": [1]}})]
    free = "a" if held == "b" else "b"
    assert _refused(lambda: db.p.insert_one({"k": held})) == {"k": held}
    db.p.insert_one({"_id": 2, "k": free})
    assert [d["_id"] for d in db.p.find({"k": held})] == [1]


def test_unique_index_after_drops(
    client: MongoClient[dict[str, Any]], db: Database[dict[str, Any]]
) -> None:
    db.v.create_index("k", unique=True)
    db.v.insert_many([{"_id": i, "k": i} for i in range(5)])
    db.v.drop()
    db.v.insert_many([{"_id": "new", "k": 1}, {"_id": "again", "k": 1}])
    assert sorted(doc["_id"] for doc in db.v.find({"k": 1})) == ["again", "new"]
    db.v.delete_many({})
    db.v.create_index("k", unique=True)
    db.v.insert_one({"k": 1})
    assert _refused(lambda: db.v.insert_one({"k": 1})) == {"k": 1}
    db.v.drop_index("k_1")
    db.v.insert_one({"k": 1})
    assert db.v.count_documents({"k": 1}) == 2
    with pytest.raises(OperationFailure) as info:
        db.v.create_index("k", unique=True)
    assert info.value.code == 11000
    db.v.insert_one({"k": 2})
    db.v.delete_one({"k": 1})
    db.v.create_index("k", unique=True)
    assert _refused(lambda: db.v.insert_one({"k": 1})) == {"k": 1}
    assert _refused(lambda: db.v.update_one({"k": 1}, {"$set": {"k": 2}})) == {"k": 2}
    client.drop_database(db.name)
    db.v.create_index("k", unique=True)
    db.v.insert_many([{"k": 1}, {"k": 2}])
    assert db.v.count_documents({"k": 1}) == 1


def test_guarded_upserts_by_a_unique_field(db: Database[dict[str, Any]]) -> None:
    db.users.create_index("externalId", unique=True)

    def write(external_id: str, version: int) -> UpdateOne:
        guard = {"externalId": external_id, "version": {"$lt": version}, "deleted": {"$ne": True}}
        return UpdateOne(guard, {"$set": {"version": version, "deleted": False}}, upsert=True)

    db.users.bulk_write([write(f"user_{i}", 3) for i in range(30)])
    db.users.update_one({"externalId": "user_4"}, {"$set": {"deleted": True}})
    with pytest.raises(BulkWriteError) as info:
        db.users.bulk_write(
            [
                write("user_1", 4),
                write("user_2", 3),
                write("user_3", 2),
                write("new", 1),
                write("user_4", 9),
            ],
            ordered=False,
        )
    details = info.value.details
    assert [(e["index"], e["keyValue"]) for e in details["writeErrors"]] == [
        (1, {"externalId": "user_2"}),
        (2, {"externalId": "user_3"}),
        (4, {"externalId": "user_4"}),
    ]
    assert (details["nMatched"], details["nModified"], details["nUpserted"]) == (1, 1, 1)
    versions = {d["externalId"]: d["version"] for d in db.users.find()}
    assert (versions["user_1"], versions["user_2"], versions["user_3"]) == (4, 3, 3)
    assert (versions["user_4"], versions["new"], len(versions)) == (3, 1, 31)
    found = db.users.find_one({"$and": [{"externalId": "user_5"}, {"version": 3}]})
    assert found is not None and found["externalId"] == "user_5"
    assert db.users.find_one({"$and": [{"externalId": "user_5"}, {"version": 4}]}) is None


def test_find_one_and_update_inc_is_atomic(db: Database[dict[str, Any]]) -> None:
    after = db.counters.find_one_and_update(
        {"_id": "seq"}, {"$inc": {"n": 1}}, upsert=True, return_document=ReturnDocument.AFTER
    )
    assert after == {"_id": "seq", "n": 1}
    before = db.counters.find_one_and_update({"_id": "seq"}, {"$inc": {"n": 1}})
    assert before == {"_id": "seq", "n": 1}

    seen: list[int] = []
    seen_lock = threading.Lock()

    def bump() -> None:
        for _ in range(25):
            doc = db.counters.find_one_and_update(
                {"_id": "seq"}, {"$inc": {"n": 1}}, return_document=ReturnDocument.AFTER
            )
            with seen_lock:
                seen.append(doc["n"])

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert db.counters.find_one({"_id": "seq"})["n"] == 202
    assert sorted(seen) == list(range(3, 203))


def test_inc_on_or_by_a_non_number_is_type_mismatch(db: Database[dict[str, Any]]) -> None:
    db.c.insert_one({"_id": "s", "v": "text", "n": 1})
    raw = db.command(
        "update",
        "c",
        updates=[
            {"q": {"_id": "s"}, "u": {"$inc": {"v": 1}}},
            {"q": {"_id": "s"}, "u": {"$inc": {"n": "1"}}},
            {"q": {"_id": "new"}, "u": {"$inc": {"n": 2}}, "upsert": True},
        ],
        ordered=False,
    )
    assert raw["n"] == 1
    assert raw["writeErrors"] == [
        {
            "index": 0,
            "code": 14,
            "errmsg": "Cannot apply $inc to a value of non-numeric type. "
            "{_id: \"s\"} has the field 'v' of non-numeric type string",
        },
        {"index": 1, "code": 14, "errmsg": 'Cannot increment with non-numeric argument: {n: "1"}'},
    ]
    with pytest.raises(OperationFailure) as info:
        db.c.find_one_and_update({"_id": "s"}, {"$inc": {"v": 1}})
    assert info.value.code == 14
    assert db.c.find_one({"_id": "s"}) == {"_id": "s", "v": "text", "n": 1}
    assert db.c.find_one({"_id": "new"}) == {"_id": "new", "n": 2}


WCE = {"code": 64, "codeName": "WriteConcernFailed", "errmsg": "waiting for replication timed out"}


@pytest.fixture
def fail_point(client: MongoClient[dict[str, Any]]) -> Iterator[Any]:
    def configure(mode: Any, **data: Any) -> dict[str, Any]:
        command = {"configureFailPoint": "failCommand", "mode": mode}
        return client.admin.command({**command, **({"data": data} if data else {})})

    try:
        yield configure
    finally:
        configure("off")


def test_fail_point_adds_a_write_concern_error(
    db: Database[dict[str, Any]], fail_point: Any
) -> None:
    fail_point(
        {"times": 2},
        failCommands=["update", "insert", "find"],
        namespace=f"{db.name}.hit",
        writeConcernError=WCE,
    )
    assert "writeConcernError" not in db.command("insert", "other", documents=[{"_id": 1}])
    assert "writeConcernError" not in db.command("find", "hit")  # writes only

    first = db.command("insert", "hit", documents=[{"_id": 1}])
    second = db.command(
        "update", "hit", updates=[{"q": {"_id": 1}, "u": {"$set": {"v": 1}}}], ordered=False
    )
    third = db.command("insert", "hit", documents=[{"_id": 2}])

    assert first == {"n": 1, "ok": 1.0, "writeConcernError": WCE}  # the write applied
    assert second == {"n": 1, "nModified": 1, "ok": 1.0, "writeConcernError": WCE}
    assert third == {"n": 1, "ok": 1.0}  # {times: 2} ran out
    assert list(db.hit.find()) == [{"_id": 1, "v": 1}, {"_id": 2}]
    assert fail_point("off") == {"count": 2, "ok": 1.0}


def test_fail_point_error_code_fails_without_running(
    db: Database[dict[str, Any]], fail_point: Any
) -> None:
    fail_point("alwaysOn", failCommands=["insert"], errorCode=2)
    for _ in range(2):
        with pytest.raises(OperationFailure) as info:
            db.e.insert_one({"_id": 1})
        assert info.value.code == 2
        assert "failCommand" in str(info.value)
    fail_point("off")
    db.e.insert_one({"_id": 1})
    assert list(db.e.find()) == [{"_id": 1}]


@pytest.mark.parametrize(
    ("command", "code"),
    [
        ({"configureFailPoint": "failCommand", "mode": "sometimes", "data": {}}, 2),
        ({"configureFailPoint": "failCommand", "mode": {"times": 0}, "data": {}}, 2),
        ({"configureFailPoint": "failCommand", "mode": "alwaysOn"}, 9),
        ({"configureFailPoint": "failCommand", "mode": "alwaysOn", "data": {}}, 9),
        (
            {
                "configureFailPoint": "failCommand",
                "mode": "alwaysOn",
                "data": {"failCommands": ["insert"], "closeConnection": True},
            },
            238,
        ),
        ({"configureFailPoint": "hangBeforeCommit", "mode": "off"}, 2),
    ],
)
def test_fail_point_refusals(
    client: MongoClient[dict[str, Any]], command: dict[str, Any], code: int
) -> None:
    with pytest.raises(OperationFailure) as info:
        client.admin.command(command)
    assert info.value.code == code
    client.t.z.insert_one({})  # no fail point was left behind


def test_fail_point_only_on_admin(db: Database[dict[str, Any]]) -> None:
    with pytest.raises(OperationFailure) as info:
        db.command({"configureFailPoint": "failCommand", "mode": "off"})
    assert info.value.code == 13


def test_find_and_modify_reply_shapes(db: Database[dict[str, Any]]) -> None:
    db.f.insert_many([{"_id": 1, "p": 2, "s": "b"}, {"_id": 2, "p": 1, "s": "a"}])
    reply = db.command(
        "findAndModify", "f", query={}, sort={"p": 1}, update={"$set": {"s": "z"}}, fields={"s": 1}
    )
    assert reply == {
        "lastErrorObject": {"n": 1, "updatedExisting": True},
        "value": {"_id": 2, "s": "a"},
        "ok": 1.0,
    }
    reply = db.command("findAndModify", "f", query={"_id": 9}, update={"$set": {"s": "n"}},
                       upsert=True, new=True)  # fmt: skip
    assert reply == {
        "lastErrorObject": {"n": 1, "updatedExisting": False, "upserted": 9},
        "value": {"_id": 9, "s": "n"},
        "ok": 1.0,
    }
    missing = db.command("findAndModify", "f", query={"_id": 7}, update={"$set": {"s": 1}})
    assert missing == {
        "lastErrorObject": {"n": 0, "updatedExisting": False},
        "value": None,
        "ok": 1.0,
    }
    removed = db.command("findAndModify", "f", query={"_id": 1}, remove=True)
    assert removed == {
        "lastErrorObject": {"n": 1},
        "value": {"_id": 1, "p": 2, "s": "b"},
        "ok": 1.0,
    }
    assert db.f.find_one_and_delete({"_id": 1}) is None
    replaced = db.f.find_one_and_replace({"_id": 2}, {"r": 1}, return_document=ReturnDocument.AFTER)
    assert replaced == {"_id": 2, "r": 1}


def test_delete(db: Database[dict[str, Any]]) -> None:
    db.d.insert_many([{"g": i % 3} for i in range(9)])
    assert db.d.delete_one({"g": 0}).deleted_count == 1
    assert db.d.delete_many({"g": 1}).deleted_count == 3
    raw = db.command(
        "delete", "d", deletes=[{"q": {"g": 2}, "limit": 1}, {"q": {"g": 0}, "limit": 0}]
    )
    assert raw == {"n": 3, "ok": 1.0}
    assert db.d.count_documents({}) == 2
    result = db.d.bulk_write([DeleteOne({"g": 2}), DeleteOne({"g": 5})])
    assert result.deleted_count == 1


def test_count_documents_and_count(db: Database[dict[str, Any]]) -> None:
    assert db.n.count_documents({}) == 0
    db.n.insert_many([{"i": i} for i in range(20)])
    assert db.n.count_documents({}) == 20
    assert db.n.count_documents({"i": {"$lt": 10}}) == 10
    assert db.n.count_documents({"i": {"$lt": 10}}, skip=8) == 2
    assert db.n.count_documents({}, skip=5, limit=4) == 4
    assert db.n.estimated_document_count() == 20
    raw = db.command(
        "aggregate",
        "n",
        pipeline=[{"$match": {"i": 1}}, {"$group": {"_id": 1, "n": {"$sum": 1}}}],
        cursor={},
    )
    assert raw["cursor"]["firstBatch"] == [{"_id": 1, "n": 1}] and raw["cursor"]["id"] == 0
    with pytest.raises(OperationFailure) as info:
        list(db.n.aggregate([{"$project": {"i": 1}}]))
    assert info.value.code == 238


def test_indexes(db: Database[dict[str, Any]]) -> None:
    assert db.ix.create_index("email", unique=True) == "email_1"
    assert db.ix.create_index([("a", 1), ("b", -1)]) == "a_1_b_-1"
    assert list(db.ix.list_indexes()) == [
        {"v": 2, "key": {"_id": 1}, "name": "_id_"},
        {"v": 2, "key": {"email": 1}, "name": "email_1", "unique": True},
        {"v": 2, "key": {"a": 1, "b": -1}, "name": "a_1_b_-1"},
    ]
    again = db.command(
        "createIndexes", "ix", indexes=[{"key": {"email": 1}, "name": "email_1", "unique": True}]
    )
    assert again == {
        "numIndexesBefore": 3,
        "numIndexesAfter": 3,
        "note": "all indexes already exist",
        "ok": 1.0,
    }
    fresh = db.command("createIndexes", "ix2", indexes=[{"key": {"x": 1}, "name": "x_1"}])
    assert fresh == {
        "numIndexesBefore": 1,
        "numIndexesAfter": 2,
        "createdCollectionAutomatically": True,
        "ok": 1.0,
    }
    db.dup.insert_many([{"k": 1}, {"k": 1}])
    with pytest.raises(OperationFailure) as info:
        db.dup.create_index("k", unique=True)
    assert info.value.code == 11000
    db.ix.drop_index("a_1_b_-1")
    assert sorted(db.ix.index_information()) == ["_id_", "email_1"]
    assert list(db.missing.list_indexes()) == []


def test_list_collections_drop_and_drop_database(
    client: MongoClient[dict[str, Any]], db: Database[dict[str, Any]]
) -> None:
    db.alpha.insert_one({})
    db.beta.insert_one({})
    assert sorted(db.list_collection_names()) == ["alpha", "beta"]
    assert db.list_collection_names(filter={"name": "beta"}) == ["beta"]
    full = db.command("listCollections", filter={"name": "alpha"})["cursor"]
    assert full["ns"] == f"{db.name}.$cmd.listCollections" and full["id"] == 0
    assert (
        full["firstBatch"][0]["name"] == "alpha" and full["firstBatch"][0]["type"] == "collection"
    )
    assert db.command("drop", "alpha") == {"nIndexesWas": 1, "ns": f"{db.name}.alpha", "ok": 1.0}
    assert db.list_collection_names() == ["beta"]
    assert db.alpha.find_one() is None
    assert db.name in client.list_database_names()
    assert client.drop_database(db.name) is None
    assert db.name not in client.list_database_names()
    assert db.list_collection_names() == []


def test_unacknowledged_writes_and_explicit_sessions(
    client: MongoClient[dict[str, Any]], db: Database[dict[str, Any]]
) -> None:
    fire_and_forget = db.get_collection("w0", write_concern=WriteConcern(w=0))
    assert fire_and_forget.insert_one({"_id": 1}).acknowledged is False  # OP_MSG moreToCome
    assert db.w0.find_one({"_id": 1}) == {"_id": 1}  # same connection pool, ordered after it
    with client.start_session() as session:
        db.w0.insert_one({"_id": 2}, session=session)
        assert db.w0.count_documents({}, session=session) == 2
    with pytest.raises(OperationFailure) as info, client.start_session() as session:
        with session.start_transaction():
            db.w0.insert_one({"_id": 3}, session=session)
    assert info.value.code == 20
    assert db.w0.find_one({"_id": 3}) is None


# -- the async driver and the in-loop server --------------------------------------------------


async def test_async_client_against_thread_standin(standin: StandInThread) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(standin.url, tz_aware=True)
    try:
        coll = client[f"a_{uuid.uuid4().hex[:12]}"].things
        await coll.insert_many([{"i": i} for i in range(5)])
        assert [d["i"] async for d in coll.find({}, {"_id": 0}).sort("i", -1).batch_size(2)] == [
            4,
            3,
            2,
            1,
            0,
        ]
        doc = await coll.find_one_and_update(
            {"i": 2}, {"$inc": {"hits": 1}}, return_document=ReturnDocument.AFTER
        )
        assert doc is not None and doc["hits"] == 1
        assert await coll.count_documents({"i": {"$gt": 1}}) == 3
        with pytest.raises(DuplicateKeyError):
            await coll.insert_one({"_id": doc["_id"]})
    finally:
        await client.close()


async def test_in_loop_standin_start_and_stop() -> None:
    server = MongoStandIn()
    await server.start(port=0)
    try:
        assert server.port > 0 and server.url == f"mongodb://127.0.0.1:{server.port}"
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(server.url)
        hello = await client.admin.command("hello")
        assert hello[STANDIN_MARKER] is True
        await client.db.c.insert_one({"x": 1})
        assert await client.db.c.find_one({}, {"_id": 0}) == {"x": 1}
        await client.close()
    finally:
        await server.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


def test_ttl_indexes_still_expire_documents_when_their_sweep_is_throttled(
    db: Database[dict[str, Any]],
) -> None:
    coll = db["ledger"]
    coll.create_index("appliedAt", expireAfterSeconds=60, name="appliedAt_ttl")
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    fresh = datetime.datetime.now(datetime.UTC)
    coll.insert_many([{"_id": "old", "appliedAt": old}, {"_id": "fresh", "appliedAt": fresh}])
    deadline = time.monotonic() + 10
    while coll.count_documents({"_id": "old"}) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [d["_id"] for d in coll.find({})] == ["fresh"]


def test_an_id_in_list_finds_exactly_the_listed_documents_that_match(
    db: Database[dict[str, Any]],
) -> None:
    coll = db["ledger"]
    coll.insert_many([{"_id": f"msg_{i}", "n": i} for i in range(10)])
    found = coll.find({"_id": {"$in": ["msg_3", "msg_7", "msg_missing", "msg_3"]}})
    assert sorted(d["_id"] for d in found) == ["msg_3", "msg_7"]
    assert coll.count_documents({"_id": {"$in": []}}) == 0
    # The other conditions still decide among the listed documents.
    assert [d["_id"] for d in coll.find({"_id": {"$in": ["msg_3", "msg_7"]}, "n": 7})] == ["msg_7"]
    coll.delete_one({"_id": "msg_7"})
    assert [d["_id"] for d in coll.find({"_id": {"$in": ["msg_3", "msg_7"]}})] == ["msg_3"]
