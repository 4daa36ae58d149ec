"""mongomock hooks of the MongoDB stand-in (development/test only; NOT MongoDB).

mongomock 4.3.0 enforces unique indexes but reports every violation as a bare
"E11000 Duplicate Key Error". These hooks, installed on each collection object the stand-in
uses, replace its private ``_ensure_uniques`` and wrap its ``_insert`` so that a violation names
the index and key the way MongoDB does (errmsg, ``keyPattern``, ``keyValue``), so that unique
indexes honour ``partialFilterExpression``, and so that stored documents start with ``_id``.
mongomock's own rollbacks still run, because the raised error is a ``DuplicateKeyError``.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Mapping
from typing import Any

import mongomock
from bson import ObjectId
from bson.datetime_ms import DatetimeMS
from mongomock.filtering import filter_applies
from mongomock.helpers import get_value_by_dot, hashdict
from pymongo.errors import DuplicateKeyError


def attach(coll: mongomock.Collection) -> mongomock.Collection:
    hooked: Any = coll  # mongomock's private API is untyped (its stubs name pymongo's Collection)
    hooked._ensure_uniques = functools.partial(_ensure_uniques, coll)
    hooked._insert = functools.partial(_insert, coll)
    return coll


class DuplicateKey(DuplicateKeyError):
    """Raised inside mongomock (so its rollbacks run), carrying MongoDB's error details."""

    def __init__(self, ns: str, index: str, key: list[tuple[str, int]], values: dict) -> None:
        shown = ", ".join(f"{field}: {shell(value)}" for field, value in values.items())
        msg = f"E11000 duplicate key error collection: {ns} index: {index} dup key: {{ {shown} }}"
        super().__init__(msg, 11000)
        self.errmsg, self.extra = msg, {"keyPattern": dict(key), "keyValue": values}


def shell(value: Any) -> str:
    """Render a key value the way MongoDB's duplicate-key message does."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, ObjectId):
        return f"ObjectId('{value}')"
    if isinstance(value, datetime.datetime):
        return f"new Date({int(DatetimeMS(value))})"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k}: {shell(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[ " + ", ".join(shell(v) for v in value) + " ]"
    return repr(value)


def check_unique(coll: Any, ns: str, name: str, info: Mapping[str, Any], doc: Mapping) -> None:
    """Raise DuplicateKey when ``doc`` (already stored) collides with another on this index."""
    values = {}
    for field, _direction in info["key"]:
        try:
            values[field] = get_value_by_dot(doc, field)
        except KeyError:
            values[field] = None
    if info.get("sparse") and all(v is None for v in values.values()):
        return
    query: dict[str, Any] = dict(values)
    partial = info.get("partialFilterExpression")
    if partial is not None:
        if not filter_applies(partial, doc):
            return
        query = {"$and": [partial, query]}
    if sum(1 for _ in coll._iter_documents(query)) > 1:
        raise DuplicateKey(ns, name, info["key"], values)


def _ensure_uniques(coll: Any, new_doc: Mapping[str, Any]) -> None:
    """Replacement for mongomock's Collection._ensure_uniques (same contract, exact errors)."""
    ns = f"{coll.database.name}.{coll.name}"
    for name, info in coll._store.indexes.items():
        if info.get("unique"):
            check_unique(coll, ns, name, info, new_doc)


def _insert(coll: Any, data: Any, session: Any = None, ordered: bool = True) -> Any:
    """Wrapper of mongomock's Collection._insert: `_id` first, exact `_id_` duplicate errors."""
    if isinstance(data, dict):
        if "_id" not in data:
            data["_id"] = ObjectId()
        if next(iter(data)) != "_id":
            rest = [(k, v) for k, v in data.items() if k != "_id"]
            doc_id = data["_id"]
            data.clear()
            data["_id"] = doc_id
            data.update(rest)
        doc_id = data["_id"]
        if (hashdict(doc_id) if isinstance(doc_id, dict) else doc_id) in coll._store:
            ns = f"{coll.database.name}.{coll.name}"
            raise DuplicateKey(ns, "_id_", [("_id", 1)], {"_id": doc_id})
    base: Any = mongomock.Collection  # mongomock's private API is untyped (stubs name pymongo's)
    return base._insert(coll, data, session, ordered)
