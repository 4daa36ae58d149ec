"""The stand-in's namespace commands: drop, dropDatabase, listCollections, listDatabases."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bson.int64 import Int64
from mongomock.filtering import filter_applies

from siteview_devstack.mongo.table import command, require

if TYPE_CHECKING:
    from siteview_devstack.mongo.commands import Backend


@command("drop")
def drop(backend: Backend, db: str, cmd: dict, connection_id: int) -> dict:
    name = cmd["drop"]
    if not backend.exists(db, name):
        return {"ok": 1.0}
    # mongomock's private API is untyped (its stubs name pymongo's Collection)
    coll: Any = backend.collection(db, name)
    was = len(coll._store.indexes) + 1
    coll.drop()
    return {"nIndexesWas": was, "ns": f"{db}.{name}", "ok": 1.0}


@command("dropDatabase")
def drop_database(backend: Backend, db: str, cmd: dict, connection_id: int) -> dict:
    backend.client.drop_database(db)
    return {"dropped": db, "ok": 1.0}


@command("listCollections", fields="filter nameOnly authorizedCollections cursor")
def list_collections(backend: Backend, db: str, cmd: dict, connection_id: int) -> dict:
    filt = require(cmd, "filter", Mapping, {}) or {}
    batch = []
    for name in sorted(backend.client[db].list_collection_names()):
        entry = {
            "name": name,
            "type": "collection",
            "options": {},
            "info": {"readOnly": False},
            "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"},
        }
        if filter_applies(filt, entry):
            batch.append({"name": name, "type": "collection"} if cmd.get("nameOnly") else entry)
    ns = f"{db}.$cmd.listCollections"
    return {"cursor": {"id": Int64(0), "ns": ns, "firstBatch": batch}, "ok": 1.0}


@command("listDatabases", fields="filter nameOnly authorizedDatabases")
def list_databases(backend: Backend, db: str, cmd: dict, connection_id: int) -> dict:
    filt = require(cmd, "filter", Mapping, {}) or {}
    dbs = [
        {"name": n, "sizeOnDisk": 0, "empty": False}
        for n in sorted(backend.client.list_database_names())
    ]
    dbs = [d for d in dbs if filter_applies(filt, d)]
    if cmd.get("nameOnly"):
        return {"databases": [{"name": d["name"]} for d in dbs], "ok": 1.0}
    return {"databases": dbs, "totalSize": 0, "totalSizeMb": 0, "ok": 1.0}
