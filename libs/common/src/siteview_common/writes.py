"""Guarded writes: unordered write commands sent as they are and their raw replies read, so
that only a duplicate key ever counts as "stale" and nothing unaccounted counts as applied."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, cast
from weakref import WeakKeyDictionary

import bson
from prometheus_client import Counter
from pymongo import UpdateMany, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, PyMongoError, WriteConcernError

log = logging.getLogger(__name__)

DUPLICATE_KEY = 11000
NOT_IMPLEMENTED = 238

DUPLICATE_KEY_RETRIES = Counter(
    "siteview_duplicate_key_retries_total",
    "Guarded upserts run a second time after a duplicate-key answer (a racing insert or a "
    "stale write), by collection",
    ["collection"],
)

#: Statements per write command and their encoded size: far below MongoDB's maxWriteBatchSize
#: (100,000) and 16 MiB command limit, so a worker's batch (at most 500 events) is one command.
MAX_STATEMENTS_PER_COMMAND = 1000
MAX_COMMAND_BYTES = 8 * 1024 * 1024

#: Update statements per command on FerretDB. FerretDB 1.x holds a pooled SQL connection for each
#: update statement that matched a document until the whole command ends, from a pool of 100,
#: so a command (or commands running at once) with more matched statements than that waits
#: for a connection that never comes, until the client gives up. 25 leaves room for four
#: such commands at once (a worker's subscriptions, a second worker) and for the APIs' reads.
FERRETDB_UPDATES_PER_COMMAND = 25

#: What each client's server allows, learnt from its `buildInfo` on the first write.
_update_limits: WeakKeyDictionary[Any, int] = WeakKeyDictionary()


class UnaccountedWriteError(PyMongoError):
    """The server answered a single write statement without saying whether it applied."""


def duplicate_key_indexes(reply: Mapping[str, Any], statements: int) -> list[int] | None:
    """Read the reply to an unordered `insert` or `update` command of `statements` statements,
    all of them inserts or upserts (each one counts in `n` or fails).

    Returns the indexes of the statements refused with a duplicate key (every other statement
    applied), or None when the reply does not account for every statement: `n` (taken as 0
    when missing beside write errors) plus the write errors not adding up to `statements`, or
    error indexes repeated or out of range. FerretDB 1.x, for one, stops an unordered update
    at its first write error, omits `n` and reports index 0.

    Raises `BulkWriteError` for any other write error, and `WriteConcernError` when the
    writes applied but the write concern was not satisfied: neither may ever count as
    applied or as stale.
    """
    errors: list[Mapping[str, Any]] = list(reply.get("writeErrors") or [])
    concern = reply.get("writeConcernError")
    if any(e.get("code") != DUPLICATE_KEY for e in errors):
        raise BulkWriteError(_bulk_details(reply, errors, concern))
    if concern:
        raise WriteConcernError(
            str(concern.get("errmsg", "write concern error")), concern.get("code"), concern
        )
    n = reply.get("n")
    if n is None and errors:  # FerretDB omits `n` when there are write errors
        n = 0
    indexes = [e.get("index") for e in errors]
    if (
        not isinstance(n, int)
        or isinstance(n, bool)
        or n + len(errors) != statements
        or len(set(indexes)) != len(indexes)
        or not all(isinstance(i, int) and 0 <= i < statements for i in indexes)
    ):
        return None
    return sorted(i for i in indexes if isinstance(i, int))


def _bulk_details(
    reply: Mapping[str, Any], errors: list[Mapping[str, Any]], concern: Any
) -> dict[str, Any]:
    """`BulkWriteError.details` in PyMongo's shape, from one command's reply."""
    upserted = list(reply.get("upserted") or [])
    return {
        "writeErrors": errors,
        "writeConcernErrors": [concern] if concern else [],
        "nInserted": 0,
        "nUpserted": len(upserted),
        "nMatched": max(0, int(reply.get("n") or 0) - len(upserted)),
        "nModified": int(reply.get("nModified") or 0),
        "nRemoved": 0,
        "upserted": upserted,
    }


async def _write_command(
    collection: AsyncCollection[Any], command: str, field: str, items: Sequence[Mapping[str, Any]]
) -> Mapping[str, Any]:
    """One unordered write command, its raw reply (command errors raise)."""
    body: dict[str, Any] = {command: collection.name, field: list(items), "ordered": False}
    concern = collection.write_concern
    if not concern.is_server_default:
        body["writeConcern"] = concern.document
    reply: Mapping[str, Any] = await collection.database.command(body)
    return reply


def updates_per_command(build_info: Mapping[str, Any]) -> int:
    """How many update statements one command may carry on the server whose `buildInfo`
    reply this is: fewer on any FerretDB (see FERRETDB_UPDATES_PER_COMMAND; a FerretDB built
    as a library reports its version as "unknown", so the version cannot tell 1.x apart)."""
    if "ferretdbVersion" in build_info:
        return FERRETDB_UPDATES_PER_COMMAND
    return MAX_STATEMENTS_PER_COMMAND


async def _statements_per_command(collection: AsyncCollection[Any], command: str) -> int:
    if command != "update":
        return MAX_STATEMENTS_PER_COMMAND
    client = collection.database.client
    limit = _update_limits.get(client)
    if limit is None:
        limit = updates_per_command(await client.admin.command("buildInfo"))
        _update_limits[client] = limit
    return limit


def _chunks(
    items: Sequence[Mapping[str, Any]], max_statements: int = MAX_STATEMENTS_PER_COMMAND
) -> list[tuple[int, list[Mapping[str, Any]]]]:
    """`items` cut into runs that fit one command, each with the index it starts at."""
    chunks: list[tuple[int, list[Mapping[str, Any]]]] = []
    size = 0
    for index, item in enumerate(items):
        item_size = len(bson.encode(item))
        if (
            not chunks
            or len(chunks[-1][1]) >= max_statements
            or size + item_size > MAX_COMMAND_BYTES
        ):
            chunks.append((index, []))
            size = 0
        chunks[-1][1].append(item)
        size += item_size
    return chunks


async def write_unordered(
    collection: AsyncCollection[Any], command: str, field: str, items: Sequence[Mapping[str, Any]]
) -> list[int]:
    """Run inserts (`insert`, `documents`) or upserts (`update`, `updates`) unordered, one
    command per `_chunks` run (of at most `updates_per_command` upserts); return the indexes
    of those refused with a duplicate key.

    When a reply does not account for every statement, that run's statements are run again
    one by one, which tells each one's fate (an insert or guarded upsert that had applied
    answers a duplicate key the second time: it is reported as refused, never lost). Raises
    as `duplicate_key_indexes` does, and `UnaccountedWriteError` when even a single statement
    gets no account.
    """
    if not collection.write_concern.acknowledged:
        raise ValueError("guarded writes need an acknowledged write concern (w >= 1)")
    refused: list[int] = []
    limit = await _statements_per_command(collection, command)
    for start, chunk in _chunks(items, limit):
        found = duplicate_key_indexes(
            await _write_command(collection, command, field, chunk), len(chunk)
        )
        if found is None:
            log.debug(
                "write reply did not account for every statement; running them one by one",
                extra={"collection": collection.name, "statements": len(chunk)},
            )
            found = []
            for index, item in enumerate(chunk):
                reply = await _write_command(collection, command, field, [item])
                one = duplicate_key_indexes(reply, 1)
                if one is None:
                    raise UnaccountedWriteError(
                        f"{command} on {collection.name}: the reply does not say whether the "
                        f"statement applied: {dict(reply)!r}"[:1000]
                    )
                if one:
                    found.append(index)
        refused += [start + i for i in found]
    return refused


async def insert_unordered(
    collection: AsyncCollection[Any], documents: Sequence[Mapping[str, Any]]
) -> list[int]:
    """Insert `documents` unordered; the indexes of those whose `_id` (or another unique key)
    already existed. Any other failure raises."""
    return await write_unordered(collection, "insert", "documents", documents)


async def bulk_write_unordered(
    collection: AsyncCollection[Any], requests: Sequence[UpdateOne | UpdateMany]
) -> int:
    """`requests` as unordered bulk writes of at most `updates_per_command` statements each;
    how many documents they modified. Any write error raises (`BulkWriteError`), and the
    runs after it are not sent: the caller's batch fails and is redelivered whole."""
    limit = await _statements_per_command(collection, "update")
    modified = 0
    for start in range(0, len(requests), limit):
        result = await collection.bulk_write(list(requests[start : start + limit]), ordered=False)
        modified += result.modified_count
    return modified


class _Statements:
    """Collects the `update` statements of PyMongo write models (their `_add_to_bulk`)."""

    def __init__(self) -> None:
        self.statements: list[dict[str, Any]] = []

    def add_update(
        self,
        selector: Mapping[str, Any],
        update: Mapping[str, Any],
        multi: bool,
        upsert: bool,
        **options: Any,
    ) -> None:
        if multi or not upsert or any(value is not None for value in options.values()):
            raise ValueError(
                "bulk_upsert_guarded takes UpdateOne(filter, update, upsert=True) only"
            )
        self.statements.append({"q": selector, "u": update, "upsert": True})


async def bulk_upsert_guarded(collection: AsyncCollection[Any], writes: Sequence[UpdateOne]) -> int:
    """Run guarded upserts as one unordered `update` command; return how many were stale.

    A guarded upsert's filter matches only a record it may change (an older version, say).
    When the record exists but the guard refuses it, the upsert tries to insert and the unique
    key refuses that: a duplicate-key error is the expected way of saying "stale". It can also
    mean that another writer inserted the record between our filter and our insert (two
    workers during a rebalance), so those writes run once more (counted in
    `siteview_duplicate_key_retries_total`): now that the record exists, the retry either
    updates it or proves the write stale.

    Nothing else counts as applied or stale: any other write error raises `BulkWriteError`,
    a `writeConcernError` raises `WriteConcernError`, and a reply that does not account for
    every statement is recovered by running the statements one by one (guarded upserts are
    idempotent: one that had applied is stale the second time), so the batch is either
    written or redelivered.
    """
    collector = _Statements()
    for write in writes:
        if not isinstance(write, UpdateOne):
            raise TypeError(f"bulk_upsert_guarded takes UpdateOne upserts only, not {write!r}")
        write._add_to_bulk(cast(Any, collector))
    statements = collector.statements
    pending = list(range(len(statements)))
    for attempt in range(2):
        if not pending:
            return 0
        refused = await write_unordered(
            collection, "update", "updates", [statements[i] for i in pending]
        )
        pending = [pending[i] for i in refused]
        if attempt == 0 and pending:
            DUPLICATE_KEY_RETRIES.labels(collection.name).inc(len(pending))
    return len(pending)
