"""The stand-in's write commands: insert, update, delete and findAndModify (each one atomic
under the backend's lock)."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import bson
from mongomock.helpers import get_value_by_dot

from siteview_devstack.mongo.storage import shell
from siteview_devstack.mongo.table import (
    CommandError,
    check_fields,
    command,
    require,
    sort_spec,
    to_command_error,
)

if TYPE_CHECKING:
    from siteview_devstack.mongo.commands import Backend

UPDATE_OPERATORS = frozenset(
    {"$set", "$unset", "$setOnInsert", "$inc", "$max", "$min", "$push", "$addToSet", "$pull"}
)


def _check_update(update: Any, multi: bool) -> None:
    if isinstance(update, list):
        raise CommandError(
            238, "pipeline-style updates are not supported by the SiteView MongoDB stand-in"
        )
    if not isinstance(update, Mapping):
        raise CommandError(14, "the update must be a document")
    operators = [key for key in update if key.startswith("$")]
    if not operators:
        if multi:
            raise CommandError(9, "multi update is not supported for replacement-style update")
        return
    if len(operators) != len(update):
        raise CommandError(9, "an update document must use only update operators or none")
    for op, arg in update.items():
        if op not in UPDATE_OPERATORS:
            raise CommandError(
                238,
                f"update operator {op} is not supported by the SiteView "
                f"MongoDB stand-in (supported: {', '.join(sorted(UPDATE_OPERATORS))})",
            )
        if not isinstance(arg, Mapping):
            raise CommandError(
                9,
                f"Modifiers operate on fields but we found type "
                f"{type(arg).__name__} instead: {{{op}: {arg!r}}}",
            )


_BSON_TYPE_NAMES: tuple[tuple[type, str], ...] = (
    (bool, "bool"),
    (str, "string"),
    (Mapping, "object"),
    (list, "array"),
    (datetime.datetime, "date"),
    (bson.ObjectId, "objectId"),
    (bytes, "binData"),
)


def _bson_type(value: Any) -> str:
    if value is None:
        return "null"
    for kind, name in _BSON_TYPE_NAMES:
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | bson.Decimal128) and not isinstance(value, bool)


def _check_inc(update: Mapping[str, Any], doc: Mapping[str, Any] | None) -> None:
    """MongoDB's TypeMismatch (14) for `$inc` by, or on, a non-number in `doc` (the document
    the update would change), before mongomock fails with a Python error or concatenates."""
    inc = update.get("$inc")
    if not isinstance(inc, Mapping):
        return
    for field, by in inc.items():
        if not _is_number(by):
            raise CommandError(
                14, f"Cannot increment with non-numeric argument: {{{field}: {shell(by)}}}"
            )
    if doc is None:
        return
    for field in inc:
        try:
            value = get_value_by_dot(doc, field)
        except KeyError:
            continue
        if not _is_number(value):
            raise CommandError(
                14,
                f"Cannot apply $inc to a value of non-numeric type. {{_id: {shell(doc['_id'])}}} "
                f"has the field '{field}' of non-numeric type {_bson_type(value)}",
            )


@command("insert", fields="documents ordered bypassDocumentValidation")
def insert_cmd(backend: Backend, db: str, cmd: dict, connection_id: int) -> dict:
    coll = backend.collection(db, cmd["insert"])
    docs, ordered = require(cmd, "documents", list), cmd.get("ordered", True)
    n, errors = 0, []
    for index, doc in enumerate(docs):
        try:
            coll.insert_one(doc)
            n += 1
        except Exception as exc:
            errors.append(to_command_error(exc).write_error(index))
            if ordered:
                break
    return {"n": n, **({"writeErrors": errors} if errors else {}), "ok": 1.0}


@command("update", fields="updates ordered bypassDocumentValidation")
def update_cmd(backend: Backend, db: str, cmd: dict, connection_id: int) -> dict:
    coll = backend.collection(db, cmd["update"])
    statements, ordered = require(cmd, "updates", list), cmd.get("ordered", True)
    n = modified = 0
    upserted, errors = [], []
    mock: Any = coll  # mongomock's private API is untyped (its stubs name pymongo's Collection)
    for index, st in enumerate(statements):
        try:
            check_fields("update.updates", st, frozenset({"q", "u", "upsert", "multi"}))
            multi = bool(st.get("multi", False))
            _check_update(st.get("u"), multi)
            if "$inc" in st["u"]:
                _check_inc(st["u"], coll.find_one(require(st, "q", Mapping)))
            result = mock._update(
                require(st, "q", Mapping), st["u"], upsert=bool(st.get("upsert")), multi=multi
            )
        except Exception as exc:
            errors.append(to_command_error(exc).write_error(index))
            if ordered:
                break
            continue
        n += result["n"]
        modified += result["nModified"]
        if result["upserted"] is not None:
            upserted.append({"index": index, "_id": result["upserted"]})
    reply: dict[str, Any] = {"n": n, "nModified": modified}
    if upserted:
        reply["upserted"] = upserted
    if errors:
        reply["writeErrors"] = errors
    return {**reply, "ok": 1.0}


@command("delete", fields="deletes ordered")
def delete_cmd(backend: Backend, db: str, cmd: dict, connection_id: int) -> dict:
    coll = backend.collection(db, cmd["delete"])
    statements, ordered = require(cmd, "deletes", list), cmd.get("ordered", True)
    n, errors = 0, []
    for index, st in enumerate(statements):
        try:
            check_fields("delete.deletes", st, frozenset({"q", "limit"}))
            query, limit = require(st, "q", Mapping), st.get("limit")
            if limit not in (0, 1) or isinstance(limit, bool):
                raise CommandError(
                    9, f"The limit field in delete objects must be 0 or 1. Got {limit}"
                )
            n += (coll.delete_one if limit else coll.delete_many)(query).deleted_count
        except Exception as exc:
            errors.append(to_command_error(exc).write_error(index))
            if ordered:
                break
    return {"n": n, **({"writeErrors": errors} if errors else {}), "ok": 1.0}


@command(
    "findAndModify",
    "findandmodify",
    fields="query sort remove update new fields upsert bypassDocumentValidation",
)
def find_and_modify(backend: Backend, db: str, cmd: dict, connection_id: int) -> dict:
    coll = backend.collection(db, next(iter(cmd.values())))
    query = require(cmd, "query", Mapping, {}) or {}
    fields = require(cmd, "fields", Mapping, None) or None
    remove, new, upsert = (bool(cmd.get(k, False)) for k in ("remove", "new", "upsert"))
    update = cmd.get("update")
    if remove and (update is not None or new or upsert):
        raise CommandError(9, "remove=true cannot be combined with update, new or upsert")
    if not remove:
        if update is None:
            raise CommandError(9, "Either an update or remove=true must be specified")
        _check_update(update, multi=False)
    found = coll.find_one(query, sort=sort_spec(cmd.get("sort")))
    if update is not None:
        _check_inc(update, found)
    mock: Any = coll  # mongomock's private API is untyped (its stubs name pymongo's Collection)
    if remove:
        if found is None:
            return {"lastErrorObject": {"n": 0}, "value": None, "ok": 1.0}
        value = coll.find_one({"_id": found["_id"]}, fields)
        coll.delete_one({"_id": found["_id"]})
        return {"lastErrorObject": {"n": 1}, "value": value, "ok": 1.0}
    if found is None:
        if not upsert:
            no_match = {"n": 0, "updatedExisting": False}
            return {"lastErrorObject": no_match, "value": None, "ok": 1.0}
        new_id = mock._update(query, update, upsert=True)["upserted"]
        return {
            "lastErrorObject": {"n": 1, "updatedExisting": False, "upserted": new_id},
            "value": coll.find_one({"_id": new_id}, fields) if new else None,
            "ok": 1.0,
        }
    before = None if new else coll.find_one({"_id": found["_id"]}, fields)
    mock._update(dict(query, _id=found["_id"]), update)
    after = coll.find_one({"_id": found["_id"]}, fields) if new else None
    return {
        "lastErrorObject": {"n": 1, "updatedExisting": True},
        "value": after if new else before,
        "ok": 1.0,
    }
