"""mongomock hooks of the MongoDB stand-in (development/test only; NOT MongoDB).

mongomock 4.3.0 enforces unique indexes but reports every violation as a bare
"E11000 Duplicate Key Error". These hooks, installed on each collection object the stand-in
uses, replace its private ``_ensure_uniques`` and wrap its ``_insert`` so that a violation names
the index and key the way MongoDB does (errmsg, ``keyPattern``, ``keyValue``), so that unique
indexes honour ``partialFilterExpression``, and so that stored documents start with ``_id``.
mongomock's own rollbacks still run, because the raised error is a ``DuplicateKeyError``.

mongomock finds documents by scanning the whole collection. The hooks narrow that where an
index answers: mongomock stores documents in a dict keyed by ``_id``, so a filter that pins
``_id`` to a scalar by equality (at its top level or inside a top-level ``$and``), or lists
scalars in a top-level ``_id: {$in: [...]}`` (found in the list's order: without a sort,
MongoDB promises no order either), looks its documents up there; and each unique index on
top-level fields keeps a hash of its key values (``UniqueHash``), so the unique check and a
filter pinning every field of such an index look those up too. Only the candidates change:
mongomock's filter matching still decides, on the candidates, and anything the lookups do not
cover is scanned as before.

TTL indexes: mongomock removes expired documents on every access to a collection, a scan of
it each time; MongoDB's TTL monitor does so once a minute. Here it happens at most once every
``TTL_SWEEP_SECONDS``, so a collection with a TTL index (the services' ledger) does not get
slower with every document it holds, and expiry stays as prompt as MongoDB's or more.
"""

from __future__ import annotations

import datetime
import functools
import time
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import mongomock
from bson import ObjectId
from bson.datetime_ms import DatetimeMS
from bson.int64 import Int64
from mongomock.filtering import filter_applies
from mongomock.helpers import get_value_by_dot, hashdict
from pymongo.errors import DuplicateKeyError

# mongomock's private API is untyped (its stubs name pymongo's Collection)
_BASE: Any = mongomock.Collection

#: How often, at most, a collection's expired documents are removed (MongoDB: every 60 s).
TTL_SWEEP_SECONDS = 1.0


def _throttle_expiry(store: Any) -> None:
    """Make the store's removal of expired documents run at most once a TTL_SWEEP_SECONDS."""
    if getattr(store, "_siteview_throttled", False):
        return
    remove = store._remove_expired_documents
    last = [float("-inf")]

    def throttled() -> None:
        now = time.monotonic()
        if now - last[0] >= TTL_SWEEP_SECONDS:
            last[0] = now
            remove()

    store._remove_expired_documents = throttled
    store._siteview_throttled = True


def attach(coll: mongomock.Collection) -> mongomock.Collection:
    hooked: Any = coll  # mongomock's private API is untyped (its stubs name pymongo's Collection)
    hooked._ensure_uniques = functools.partial(_ensure_uniques, coll)
    hooked._insert = functools.partial(_insert, coll)
    hooked._iter_documents = functools.partial(_iter_documents, coll)
    hooked._update = functools.partial(_update, coll)
    _throttle_expiry(hooked._store)
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


# -- lookups ------------------------------------------------------------------------------------

#: A value no filter pins (`pinned`'s answer when the field is not pinned).
UNPINNED: Any = object()


#: The types whose hash and ``==`` agree with mongomock's equality match: a value of these
#: equals a filter's only if it is the same dict key. Exactly these (bson's Code, say, is an
#: unhashable str); lists, documents, floats and the rest are never looked up.
HASHED_TYPES = frozenset({type(None), str, int, bool, Int64, ObjectId})


def hashable(value: Any) -> bool:
    return type(value) in HASHED_TYPES


def pinned(filt: Mapping[str, Any], field: str) -> Any:
    """The value ``filt`` requires of top-level ``field`` by equality, at its top level or
    inside a top-level ``$and`` (nested or not), when it is ``hashable``; else UNPINNED."""
    value = filt.get(field, UNPINNED)
    if value is not UNPINNED and hashable(value):
        return value
    clauses = filt.get("$and")
    if isinstance(clauses, list):
        for clause in clauses:
            if isinstance(clause, Mapping):
                value = pinned(clause, field)
                if value is not UNPINNED:
                    return value
    return UNPINNED


def store_key(doc_id: Any) -> Any:
    """The key mongomock stores a document under, from its ``_id``."""
    return hashdict(doc_id) if isinstance(doc_id, dict) else doc_id


class UniqueHash:
    """A hash of one unique index on top-level fields: the store key of each stored document,
    by the tuple of its key values (a missing field: None) when they are all ``hashable``, or
    among ``others``. It is built whole when createIndexes creates the index, and kept
    current by ``_ensure_uniques``, which mongomock runs after every insert and every update
    that changes a document, and on whose error it deletes the insert or restores the document
    as it was (so a document is moved only once every unique check passed). Deletions are not
    seen: the keys of deleted documents are dropped when a lookup meets them. It holds while
    its collection keeps the documents dict and the index info it was built for (a drop, or a
    dropIndexes then createIndexes, replaces them)."""

    def __init__(self, store: Any, info: Mapping[str, Any]) -> None:
        self.info, self.documents = info, store._documents
        self.fields = [field for field, _direction in info["key"]]
        self.groups: dict[tuple | None, set[Any]] = {}  # None: the others
        self.placed: dict[Any, tuple | None] = {}
        for doc in list(store.documents):
            self.place(doc)

    @staticmethod
    def covers(info: Mapping[str, Any]) -> bool:
        return all("." not in field for field, _direction in info["key"])

    def key(self, values: Iterable[Any]) -> tuple | None:
        found = tuple(values)
        return found if all(hashable(v) for v in found) else None

    def place(self, doc: dict[str, Any]) -> None:
        at, key = store_key(doc["_id"]), self.key(doc.get(field) for field in self.fields)
        if at in self.placed:
            if self.placed[at] == key:
                return
            self.forget(at)
        self.groups.setdefault(key, set()).add(at)
        self.placed[at] = key

    def forget(self, at: Any) -> None:
        key = self.placed.pop(at)
        group = self.groups[key]
        group.discard(at)
        if not group:
            del self.groups[key]

    def candidates(self, values: Iterable[Any]) -> dict[Any, dict[str, Any]] | None:
        """The stored documents, by store key, that may have these key values (no other
        has them), or None when the values cannot be looked up."""
        key = self.key(values)
        if key is None:
            return None
        found = {}
        for at in [*self.groups.get(key, ()), *self.groups.get(None, ())]:
            doc = self.documents.get(at)
            if doc is None:
                self.forget(at)
            else:
                found[at] = doc
        return found


_HASHES: weakref.WeakKeyDictionary[Any, dict[str, UniqueHash]] = weakref.WeakKeyDictionary()


def unique_hash(store: Any, name: str) -> UniqueHash | None:
    """The hash of unique index ``name`` while it holds for ``store``."""
    hashes = _HASHES.get(store, {})
    index = hashes.get(name)
    if index is None:
        return None
    if store.indexes.get(name) is index.info and store._documents is index.documents:
        return index
    del hashes[name]
    return None


def keep_hash(store: Any, name: str, index: UniqueHash) -> None:
    _HASHES.setdefault(store, {})[name] = index


def replace_all(store: Any) -> None:
    """Place every stored document anew in the store's unique hashes."""
    for name in list(_HASHES.get(store, ())):
        index = unique_hash(store, name)
        if index is not None:
            for doc in list(store.documents):
                index.place(doc)


def listed_ids(filt: Mapping[str, Any]) -> list[Any] | None:
    """The ``_id`` values of a top-level ``{_id: {$in: [...]}}`` (the ledger's lookup), when
    every one is ``hashable``; else None."""
    condition = filt.get("_id")
    if not (isinstance(condition, Mapping) and list(condition) == ["$in"]):
        return None
    values = condition["$in"]
    if not isinstance(values, list) or not all(hashable(v) for v in values):
        return None
    return values


def narrowed(store: Any, filt: Any) -> list[dict[str, Any]] | None:
    """The only stored documents ``filt`` can match (one, or those an ``_id`` ``$in`` lists),
    or None: scan them all."""
    if not isinstance(filt, Mapping):
        return None
    doc_id = pinned(filt, "_id")
    if doc_id is not UNPINNED:
        store._remove_expired_documents()
        doc = store._documents.get(doc_id)
        return [] if doc is None else [doc]
    ids = listed_ids(filt)
    if ids is not None:
        store._remove_expired_documents()
        listed = {key: store._documents.get(key) for key in ids}  # each once
        return [doc for doc in listed.values() if doc is not None]
    for name in list(_HASHES.get(store, ())):
        index = unique_hash(store, name)
        if index is None:
            continue
        values = [pinned(filt, field) for field in index.fields]
        if any(value is UNPINNED for value in values):
            continue
        store._remove_expired_documents()
        found = index.candidates(values)
        if found is not None and len(found) <= 1:
            return list(found.values())
    return None


def _iter_documents(coll: Any, filt: Any) -> Any:
    """Replacement for mongomock's Collection._iter_documents: the documents ``filt`` matches,
    matched as mongomock does, among the ``narrowed`` candidates when there are any."""
    found = narrowed(coll._store, filt)
    if found is None:
        return _BASE._iter_documents(coll, filt)
    if not found:
        filter_applies(filt, {})  # refuses a bad filter as on an empty collection
    return (doc for doc in found if filter_applies(filt, doc))


# -- unique indexes -----------------------------------------------------------------------------


def check_unique(
    coll: Any,
    ns: str,
    name: str,
    info: Mapping[str, Any],
    doc: dict[str, Any],
    index: UniqueHash | None = None,
) -> None:
    """Raise DuplicateKey when ``doc`` (already stored) collides with another on this index;
    ``index``, its hash if it has one, finds the others (``doc`` need not be placed in it)."""
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
    found = None
    if index is not None:
        coll._store._remove_expired_documents()
        found = index.candidates(values.values())
    if found is None:
        # the scan itself: ``doc`` may be out of place in the other indexes' hashes
        matches = sum(1 for _ in _BASE._iter_documents(coll, query))
    else:
        found[store_key(doc["_id"])] = doc
        matches = sum(1 for other in found.values() if filter_applies(query, other))
    if matches > 1:
        raise DuplicateKey(ns, name, info["key"], values)


def _ensure_uniques(coll: Any, new_doc: dict[str, Any]) -> None:
    """Replacement for mongomock's Collection._ensure_uniques (same contract, exact errors);
    places ``new_doc`` in the unique indexes' hashes once every check passed."""
    store = coll._store
    ns = f"{coll.database.name}.{coll.name}"
    hashes = []
    for name, info in store.indexes.items():
        if info.get("unique"):
            index = unique_hash(store, name)
            check_unique(coll, ns, name, info, new_doc, index)
            if index is not None:
                hashes.append(index)
    for index in hashes:
        index.place(new_doc)


def _update(coll: Any, spec: Any, document: Any, *args: Any, **kwargs: Any) -> Any:
    """Wrapper of mongomock's Collection._update. An update operator that fails leaves its
    document as far as it got, unchecked (a duplicate key restores it): the unique hashes
    then place every document anew."""
    try:
        return _BASE._update(coll, spec, document, *args, **kwargs)
    except DuplicateKeyError:
        raise
    except Exception:
        replace_all(coll._store)
        raise


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
        if store_key(doc_id) in coll._store:
            ns = f"{coll.database.name}.{coll.name}"
            raise DuplicateKey(ns, "_id_", [("_id", 1)], {"_id": doc_id})
    return _BASE._insert(coll, data, session, ordered)
