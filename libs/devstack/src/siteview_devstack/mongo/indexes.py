"""The stand-in's index commands: createIndexes (unique, partial and TTL indexes),
listIndexes and dropIndexes. A unique index on top-level fields gets its hash
(``storage.UniqueHash``) when created; it serves until the index or its collection is dropped."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bson.int64 import Int64

from siteview_devstack.mongo.storage import DuplicateKey, UniqueHash, check_unique, keep_hash
from siteview_devstack.mongo.table import CommandError, check_fields, command, require

if TYPE_CHECKING:
    from siteview_devstack.mongo.commands import Backend

log = logging.getLogger("siteview_devstack.mongo")

INDEX_OPTIONS = frozenset(
    "key name unique sparse partialFilterExpression expireAfterSeconds background v ns".split()
)


@command("createIndexes", fields="indexes commitQuorum")
def create_indexes(backend: Backend, db: str, cmd: dict, connection_id: int) -> dict:
    name = cmd["createIndexes"]
    created = not backend.exists(db, name)
    # mongomock's private API is untyped (its stubs name pymongo's Collection)
    coll: Any = backend.collection(db, name)
    store = coll._store
    before = len(store.indexes) + 1
    for spec in require(cmd, "indexes", list):
        check_fields("createIndexes.indexes", spec, INDEX_OPTIONS)
        key = require(spec, "key", Mapping)
        if not key or any(d not in (1, -1) or isinstance(d, bool) for d in key.values()):
            raise CommandError(
                238,
                f"index key {dict(key)!r} is not supported by the SiteView "
                "MongoDB stand-in (only ascending/descending fields)",
            )
        key_list = [(field, int(d)) for field, d in key.items()]
        index_name = spec.get("name") or "_".join(f"{f}_{d}" for f, d in key_list)
        info: dict[str, Any] = {"key": key_list}
        for option in ("unique", "sparse"):
            if spec.get(option):
                info[option] = True
        for option in ("partialFilterExpression", "expireAfterSeconds"):
            if option in spec:
                info[option] = spec[option]
        if index_name == "_id_" or key_list == [("_id", 1)]:
            continue
        existing = store.indexes.get(index_name)
        if existing is not None:
            if existing != info:
                code = 86 if existing["key"] != key_list else 85
                raise CommandError(
                    code,
                    f"An existing index has the same name as the requested index: {index_name}",
                )
            continue
        for other, other_info in store.indexes.items():
            if other_info["key"] == key_list:
                raise CommandError(85, f"Index already exists with a different name: {other}")
        if "expireAfterSeconds" in info:
            log.warning(
                "mongo stand-in: TTL index %s.%s.%s: expiry happens lazily when the "
                "collection is next read, not by a background monitor",
                db,
                name,
                index_name,
            )
        index = None
        if info.get("unique"):
            index = UniqueHash(store, info) if UniqueHash.covers(info) else None
            for doc in list(store.documents):
                try:
                    check_unique(coll, f"{db}.{name}", index_name, info, doc, index)
                except DuplicateKey as exc:
                    raise CommandError(
                        11000, f"Index build failed: {exc.errmsg}", **exc.extra
                    ) from exc
        store.create_index(index_name, info)
        if index is not None:
            keep_hash(store, index_name, index)
    after = len(store.indexes) + 1
    reply: dict[str, Any] = {"numIndexesBefore": before, "numIndexesAfter": after}
    if after == before:
        reply["note"] = "all indexes already exist"
    else:
        reply["createdCollectionAutomatically"] = created
    return {**reply, "ok": 1.0}


@command("listIndexes", fields="cursor")
def list_indexes(backend: Backend, db: str, cmd: dict, connection_id: int) -> dict:
    name = cmd["listIndexes"]
    if not backend.exists(db, name):
        raise CommandError(26, f"ns does not exist: {db}.{name}")
    batch = [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]
    # mongomock's private API is untyped (its stubs name pymongo's Collection)
    coll: Any = backend.collection(db, name)
    for index_name, info in coll._store.indexes.items():
        entry = {"v": 2, "key": dict(info["key"]), "name": index_name}
        entry.update((k, v) for k, v in info.items() if k != "key")
        batch.append(entry)
    return {"cursor": {"id": Int64(0), "ns": f"{db}.{name}", "firstBatch": batch}, "ok": 1.0}


@command("dropIndexes", fields="index")
def drop_indexes(backend: Backend, db: str, cmd: dict, connection_id: int) -> dict:
    name, which = cmd["dropIndexes"], cmd.get("index")
    if not backend.exists(db, name):
        raise CommandError(26, f"ns not found {db}.{name}")
    # mongomock's private API is untyped (its stubs name pymongo's Collection)
    coll: Any = backend.collection(db, name)
    indexes = coll._store.indexes
    was = len(indexes) + 1
    if which == "*":
        indexes.clear()
        return {"nIndexesWas": was, "msg": "non-_id indexes dropped for collection", "ok": 1.0}
    if isinstance(which, Mapping):
        found = [n for n, info in indexes.items() if info["key"] == list(which.items())]
        if not found:
            raise CommandError(27, f"can't find index with key: {dict(which)!r}")
        which = found
    for index_name in [which] if isinstance(which, str) else list(which or []):
        if index_name == "_id_":
            raise CommandError(72, "cannot drop _id index")
        if index_name not in indexes:
            raise CommandError(27, f"index not found with name [{index_name}]")
        del indexes[index_name]
    return {"nIndexesWas": was, "ok": 1.0}
