"""How a write command's reply is read: only duplicate keys are "stale", and a reply that does
not account for every statement never counts as success. The replies below are the shapes
MongoDB documents for `insert`/`update` and the ones FerretDB 1.x sends (see
tests/contract for both, live)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient, InsertOne, UpdateMany, UpdateOne
from pymongo.errors import BulkWriteError, WriteConcernError
from pymongo.write_concern import WriteConcern

from siteview_common.failures import is_transient
from siteview_common.writes import (
    DUPLICATE_KEY,
    FERRETDB_UPDATES_PER_COMMAND,
    MAX_STATEMENTS_PER_COMMAND,
    bulk_upsert_guarded,
    duplicate_key_indexes,
    updates_per_command,
)


def dup(index: int) -> dict[str, Any]:
    return {"index": index, "code": DUPLICATE_KEY, "errmsg": "E11000 duplicate key error"}


WCE = {"code": 64, "codeName": "WriteConcernFailed", "errmsg": "waiting for replication timed out"}


def test_every_statement_applied() -> None:
    assert duplicate_key_indexes({"n": 3, "nModified": 1, "ok": 1.0}, 3) == []


def test_duplicate_keys_are_the_only_refusals() -> None:
    reply = {"n": 2, "nModified": 0, "writeErrors": [dup(3), dup(1)], "ok": 1.0}
    assert duplicate_key_indexes(reply, 4) == [1, 3]


def test_every_statement_refused_without_n() -> None:
    """FerretDB leaves `n` out when there are write errors: fine when they are all there is."""
    assert duplicate_key_indexes({"writeErrors": [dup(0)], "ok": 1.0}, 1) == [0]


@pytest.mark.parametrize(
    "reply",
    [
        {"ok": 1.0},  # no n at all
        {"n": 2, "ok": 1.0},  # one statement unaccounted for
        {"n": 3, "writeErrors": [dup(0)], "ok": 1.0},  # more than there were
        {"writeErrors": [dup(0)], "ok": 1.0},  # FerretDB: stopped at its first error
        {"n": 1, "writeErrors": [dup(0), dup(0)], "ok": 1.0},  # the same index twice
        {"n": 2, "writeErrors": [dup(3)], "ok": 1.0},  # an index out of range
        {"n": 2, "writeErrors": [{"code": DUPLICATE_KEY, "errmsg": "E11000"}], "ok": 1.0},
        {"n": True, "writeErrors": [dup(1), dup(2)], "ok": 1.0},
    ],
)
def test_a_reply_that_does_not_account_for_every_statement(reply: dict[str, Any]) -> None:
    assert duplicate_key_indexes(reply, 3) is None


@pytest.mark.parametrize(
    ("build_info", "limit"),
    [
        ({"version": "7.0.14", "ok": 1.0}, MAX_STATEMENTS_PER_COMMAND),  # MongoDB
        ({"version": "7.0.77", "ferretdbVersion": "v1.24.2"}, FERRETDB_UPDATES_PER_COMMAND),
        ({"version": "7.0.42", "ferretdbVersion": "unknown"}, FERRETDB_UPDATES_PER_COMMAND),
    ],
)
def test_updates_per_command_by_server(build_info: dict[str, Any], limit: int) -> None:
    assert updates_per_command(build_info) == limit


def test_any_other_write_error_raises_even_beside_duplicates() -> None:
    mismatch = {"index": 2, "code": 14, "errmsg": "Cannot apply $inc to a value of non-numeric"}
    reply = {"n": 1, "nModified": 1, "writeErrors": [dup(0), mismatch], "ok": 1.0}

    with pytest.raises(BulkWriteError) as raised:
        duplicate_key_indexes(reply, 3)

    assert raised.value.details["writeErrors"] == [dup(0), mismatch]
    assert not is_transient(raised.value)  # the same input fails the same way: permanent


def test_a_non_duplicate_error_raises_even_when_the_reply_is_incomplete() -> None:
    with pytest.raises(BulkWriteError):
        duplicate_key_indexes({"writeErrors": [{"index": 0, "code": 14}], "ok": 1.0}, 3)


@pytest.mark.parametrize(
    "reply",
    [
        {"n": 2, "nModified": 2, "writeConcernError": WCE, "ok": 1.0},
        {"n": 1, "writeErrors": [dup(1)], "writeConcernError": WCE, "ok": 1.0},
    ],
)
def test_a_write_concern_error_raises_and_is_transient(reply: dict[str, Any]) -> None:
    with pytest.raises(WriteConcernError) as raised:
        duplicate_key_indexes(reply, 2)

    assert raised.value.code == 64
    assert raised.value.details == WCE
    assert is_transient(raised.value)  # redelivered until the replicas catch up


@pytest.fixture
async def unconnected() -> AsyncIterator[AsyncMongoClient[Any]]:
    """A client that never connects: the refusals below happen before any I/O."""
    client: AsyncMongoClient[Any] = AsyncMongoClient("mongodb://127.0.0.1:1", connect=False)
    try:
        yield client
    finally:
        await client.close()


@pytest.mark.parametrize(
    "write",
    [
        UpdateOne({"_id": 1}, {"$set": {"v": 1}}),  # not an upsert
        UpdateOne({"_id": 1}, {"$set": {"v": 1}}, upsert=True, hint="_id_"),
        UpdateMany({"_id": 1}, {"$set": {"v": 1}}, upsert=True),
        InsertOne({"_id": 1}),
    ],
)
async def test_only_plain_upserts_are_guarded_upserts(
    unconnected: AsyncMongoClient[Any], write: Any
) -> None:
    with pytest.raises((ValueError, TypeError)):
        await bulk_upsert_guarded(unconnected["db"]["c"], [write])


async def test_unacknowledged_writes_are_refused(unconnected: AsyncMongoClient[Any]) -> None:
    collection = unconnected["db"].get_collection("c", write_concern=WriteConcern(w=0))
    with pytest.raises(ValueError, match="acknowledged"):
        await bulk_upsert_guarded(collection, [UpdateOne({"_id": 1}, {"$set": {}}, upsert=True)])
