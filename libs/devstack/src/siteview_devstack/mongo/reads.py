"""The stand-in's read commands: find with getMore/killCursors, count, and the aggregate
pipeline PyMongo's count_documents sends."""

from __future__ import annotations

import collections
import secrets
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bson.int64 import Int64

from siteview_devstack.mongo.table import (
    CommandError,
    command,
    non_negative,
    require,
    sort_spec,
    take,
)

if TYPE_CHECKING:
    from siteview_devstack.mongo.commands import Backend

CURSOR_IDLE_SECONDS = 600
DEFAULT_FIRST_BATCH = 101


class Cursor:
    def __init__(self, ns: str, docs: collections.deque[dict[str, Any]]) -> None:
        self.ns, self.docs, self.touched = ns, docs, time.monotonic()


def open_cursor(
    backend: Backend, ns: str, docs: list, batch_size: int | None, single: bool
) -> dict:
    now = time.monotonic()
    for cid in [c for c, cur in backend.cursors.items() if now - cur.touched > CURSOR_IDLE_SECONDS]:
        del backend.cursors[cid]
    rest = collections.deque(docs)
    batch = take(rest, DEFAULT_FIRST_BATCH if batch_size is None else batch_size)
    cursor_id = 0
    if rest and not single:
        cursor_id = secrets.randbits(62) + 1
        backend.cursors[cursor_id] = Cursor(ns, rest)
    return {"id": Int64(cursor_id), "ns": ns, "firstBatch": batch}


@command(
    "find",
    fields="filter projection sort skip limit batchSize singleBatch allowDiskUse "
    "noCursorTimeout allowPartialResults",
)
def find(backend: Backend, db: str, cmd: dict, connection_id: int) -> dict:
    name = cmd["find"]
    coll = backend.collection(db, name)
    limit = cmd.get("limit")
    if isinstance(limit, int | float) and limit < 0:
        raise CommandError(2, "limit cannot be negative (use singleBatch)")
    batch_size = cmd.get("batchSize")
    docs = list(
        coll.find(
            require(cmd, "filter", Mapping, {}),
            require(cmd, "projection", Mapping, None) or None,
            skip=non_negative(cmd.get("skip"), "skip"),
            limit=non_negative(limit, "limit"),
            sort=sort_spec(cmd.get("sort")),
        )
    )
    single = bool(cmd.get("singleBatch", False))
    size = None if batch_size is None else non_negative(batch_size, "batchSize")
    return {"cursor": open_cursor(backend, f"{db}.{name}", docs, size, single), "ok": 1.0}


@command("getMore", fields="collection batchSize")
def get_more(backend: Backend, db: str, cmd: dict, connection_id: int) -> dict:
    cursor_id, ns = int(cmd["getMore"]), f"{db}.{cmd.get('collection')}"
    cursor = backend.cursors.get(cursor_id)
    if cursor is None:
        raise CommandError(43, f"cursor id {cursor_id} not found")
    if cursor.ns != ns:
        raise CommandError(
            13,
            f"Requested getMore on namespace '{ns}', but cursor belongs "
            f"to a different namespace {cursor.ns}",
        )
    batch = take(cursor.docs, non_negative(cmd.get("batchSize"), "batchSize") or None)
    cursor.touched = time.monotonic()
    if not cursor.docs:
        del backend.cursors[cursor_id]
        cursor_id = 0
    return {"cursor": {"id": Int64(cursor_id), "ns": ns, "nextBatch": batch}, "ok": 1.0}


@command("killCursors", fields="cursors")
def kill_cursors(backend: Backend, db: str, cmd: dict, connection_id: int) -> dict:
    killed: list[Any] = []
    missing: list[Any] = []
    for cursor_id in require(cmd, "cursors", list):
        (killed if backend.cursors.pop(int(cursor_id), None) else missing).append(cursor_id)
    return {
        "cursorsKilled": killed,
        "cursorsNotFound": missing,
        "cursorsAlive": [],
        "cursorsUnknown": [],
        "ok": 1.0,
    }


@command("count", fields="query skip limit")
def count_cmd(backend: Backend, db: str, cmd: dict, connection_id: int) -> dict:
    limit = cmd.get("limit")
    limit = abs(limit) if isinstance(limit, int | float) else limit
    coll = backend.collection(db, cmd["count"])
    docs = coll.find(
        require(cmd, "query", Mapping, {}) or {},
        skip=non_negative(cmd.get("skip"), "skip"),
        limit=non_negative(limit, "limit"),
    )
    return {"n": len(list(docs)), "ok": 1.0}


@command("aggregate", fields="pipeline cursor allowDiskUse")
def aggregate(backend: Backend, db: str, cmd: dict, connection_id: int) -> dict:
    """Only the pipeline PyMongo's count_documents sends: $match [$skip] [$limit] $group."""
    name, pipeline = cmd["aggregate"], require(cmd, "pipeline", list)
    unsupported = CommandError(
        238,
        "the SiteView MongoDB stand-in only supports the "
        "aggregate pipeline of count_documents: $match, $skip, "
        f"$limit, then $group {{_id: 1, n: {{$sum: 1}}}}; got {pipeline!r}",
    )
    if not isinstance(cmd.get("cursor"), Mapping):
        raise CommandError(9, "The 'cursor' option is required")
    if not isinstance(name, str) or not pipeline:
        raise unsupported
    *stages, group = pipeline
    spec = group.get("$group") if isinstance(group, Mapping) and len(group) == 1 else None
    if not isinstance(spec, Mapping) or len(spec) != 2 or "_id" not in spec:
        raise unsupported
    (out_field,) = [k for k in spec if k != "_id"]
    if spec[out_field] != {"$sum": 1} or isinstance(spec["_id"], Mapping | str):
        raise unsupported
    filt: Mapping[str, Any] = {}
    skip = limit = 0
    for stage in stages:
        if not isinstance(stage, Mapping) or len(stage) != 1:
            raise unsupported
        ((op, arg),) = stage.items()
        if op == "$match" and not (skip or limit) and isinstance(arg, Mapping):
            filt = {"$and": [filt, arg]} if filt else arg
        elif op == "$skip" and not limit:
            skip += non_negative(arg, "$skip")
        elif op == "$limit" and not limit:
            limit = non_negative(arg, "$limit")
            if limit == 0:
                raise CommandError(15958, "the limit must be positive")
        else:
            raise unsupported
    n = len(list(backend.collection(db, name).find(filt, skip=skip, limit=limit)))
    batch = [{"_id": spec["_id"], out_field: n}] if n else []
    return {"cursor": {"id": Int64(0), "ns": f"{db}.{name}", "firstBatch": batch}, "ok": 1.0}
