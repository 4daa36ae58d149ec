"""The stand-in's command table: MongoDB command documents in, MongoDB reply documents out.

This is a development/test STAND-IN, not MongoDB. Storage is one ``mongomock.MongoClient``
(pinned mongomock 4.3.0, with the hooks of ``storage.py``); every command runs under one lock,
which also makes each findAndModify atomic.

Anything outside the table answers ``CommandNotFound``; options that MongoDB knows but this
stand-in does not implement (collation, hint, let, arrayFilters, ...) answer ``NotImplemented``
(238) and transactions answer ``IllegalOperation`` (20), rather than being silently ignored.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import bson
import mongomock
from bson.int64 import Int64
from mongomock.filtering import filter_applies
from mongomock.helpers import get_value_by_dot
from pymongo.errors import InvalidName, OperationFailure

from siteview_devstack.mongo.storage import DuplicateKey, attach, check_unique, shell
from siteview_devstack.mongo.wire import (
    MAX_BSON_OBJECT_SIZE,
    MAX_MESSAGE_SIZE,
    MAX_WRITE_BATCH_SIZE,
)

log = logging.getLogger("siteview_devstack.mongo")

STANDIN_MARKER = "siteviewStandIn"
STANDIN_NOTE = "SiteView development stand-in speaking the MongoDB wire protocol; NOT MongoDB"
VERSION = "7.0.0"
CURSOR_IDLE_SECONDS = 600
DEFAULT_FIRST_BATCH = 101

CODE_NAMES = {
    1: "InternalError",
    2: "BadValue",
    9: "FailedToParse",
    13: "Unauthorized",
    14: "TypeMismatch",
    20: "IllegalOperation",
    26: "NamespaceNotFound",
    27: "IndexNotFound",
    43: "CursorNotFound",
    59: "CommandNotFound",
    66: "ImmutableField",
    72: "InvalidOptions",
    73: "InvalidNamespace",
    85: "IndexOptionsConflict",
    86: "IndexKeySpecsConflict",
    238: "NotImplemented",
    352: "UnsupportedOpQueryCommand",
    11000: "DuplicateKey",
}

# Accepted on every command and ignored (sessions are advertised, so lsid/txnNumber may come).
GENERIC_FIELDS = frozenset(
    "$db lsid txnNumber $readPreference $clusterTime readConcern writeConcern comment maxTimeMS "
    "apiVersion apiStrict apiDeprecationErrors".split()
)
# Known to MongoDB, changes results, not implemented here: refuse instead of ignoring.
UNSUPPORTED_FIELDS = frozenset(
    "collation hint let arrayFilters c min max returnKey showRecordId tailable awaitData "
    "oplogReplay explain sort".split()
)
UPDATE_OPERATORS = frozenset(
    {"$set", "$unset", "$setOnInsert", "$inc", "$max", "$min", "$push", "$addToSet", "$pull"}
)
INDEX_OPTIONS = frozenset(
    "key name unique sparse partialFilterExpression expireAfterSeconds background v ns".split()
)


class CommandError(Exception):
    def __init__(self, code: int, errmsg: str, **extra: Any) -> None:
        super().__init__(errmsg)
        self.code, self.errmsg, self.extra = code, errmsg, extra

    def reply(self) -> dict[str, Any]:
        name = CODE_NAMES.get(self.code, f"Location{self.code}")
        return {"ok": 0.0, "errmsg": self.errmsg, "code": self.code, "codeName": name, **self.extra}

    def write_error(self, index: int) -> dict[str, Any]:
        return {"index": index, "code": self.code, **self.extra, "errmsg": self.errmsg}


def _to_command_error(exc: Exception) -> CommandError:
    if isinstance(exc, CommandError):
        return exc
    if isinstance(exc, DuplicateKey):
        return CommandError(11000, exc.errmsg, **exc.extra)
    if isinstance(exc, OperationFailure):
        immutable = "_id" in str(exc) and (
            "immutable" in str(exc) or "cannot be changed" in str(exc)
        )
        return CommandError(exc.code or (66 if immutable else 2), str(exc))
    if isinstance(exc, InvalidName):
        return CommandError(73, str(exc))
    if isinstance(exc, NotImplementedError):
        log.warning("mongo stand-in: unsupported operation: %s", exc)
        return CommandError(238, f"not supported by the SiteView MongoDB stand-in: {exc}")
    if isinstance(exc, ValueError):
        return CommandError(9, str(exc))
    if isinstance(exc, TypeError):
        return CommandError(14, str(exc))
    if isinstance(exc, bson.errors.BSONError):
        return CommandError(2, str(exc))
    log.exception("mongo stand-in: internal error")
    return CommandError(1, f"internal error in the SiteView MongoDB stand-in: {exc!r}")


_Handler = Callable[["Backend", str, dict[str, Any], int], dict[str, Any]]
_COMMANDS: dict[str, tuple[_Handler, frozenset[str] | None]] = {}


def _command(*names: str, fields: str | None = "") -> Callable[[_Handler], _Handler]:
    """Register a handler; ``fields`` are its accepted fields (None: accept anything)."""

    def register(fn: _Handler) -> _Handler:
        allowed = None if fields is None else frozenset(fields.split()) | GENERIC_FIELDS
        for name in names:
            _COMMANDS[name] = (fn, allowed)
        return fn

    return register


def _check_fields(where: str, doc: Mapping[str, Any], allowed: frozenset[str]) -> None:
    for field in doc:
        if field in allowed:
            continue
        if field in ("startTransaction", "autocommit"):
            raise CommandError(
                20,
                "Transaction numbers are only allowed on a replica set member or mongos "
                "(the SiteView MongoDB stand-in is a standalone without transactions)",
            )
        if field in UNSUPPORTED_FIELDS:
            log.warning("mongo stand-in: refused unsupported option %s.%s", where, field)
            raise CommandError(
                238, f"'{where}.{field}' is not supported by the SiteView MongoDB stand-in"
            )
        raise CommandError(40415, f"BSON field '{where}.{field}' is an unknown field.")


def _require(
    cmd: Mapping[str, Any], field: str, kind: type | tuple[type, ...], default: Any = ...
) -> Any:
    value = cmd.get(field, default)
    if value is ... or (value is not default and not isinstance(value, kind)):
        raise CommandError(14, f"BSON field '{field}' is missing or has the wrong type")
    return value


def _count(value: Any, field: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise CommandError(2, f"{field} must be a non-negative number, got {value!r}")
    return int(value)


def _sort_spec(sort: Any) -> list[tuple[str, int]] | None:
    if not sort:
        return None
    if not isinstance(sort, Mapping):
        raise CommandError(14, "sort must be a document")
    spec = []
    for field, direction in sort.items():
        if direction not in (1, -1) or isinstance(direction, bool):
            raise CommandError(
                238,
                f"sort {field}: {direction!r} is not supported by the "
                "SiteView MongoDB stand-in (only 1 and -1)",
            )
        spec.append((field, int(direction)))
    return spec


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


WRITE_COMMANDS = frozenset({"insert", "update", "delete", "findAndModify", "findandmodify"})
FAIL_COMMAND_FIELDS = frozenset({"failCommands", "namespace", "writeConcernError", "errorCode"})


@dataclasses.dataclass
class _FailCommand:
    """MongoDB's `failCommand` fail point, the subset the stand-in implements: the commands
    named in `failCommands` (on `namespace`, "db.collection", when given) fail with
    `errorCode` without running, or run and carry `writeConcernError` in their reply (write
    commands only), `remaining` more times (None: until turned off)."""

    commands: frozenset[str]
    namespace: str | None
    error_code: int | None
    write_concern_error: dict[str, Any] | None
    remaining: int | None

    def matches(self, name: str, db: str, body: Mapping[str, Any]) -> bool:
        if name not in self.commands or self.remaining == 0:
            return False
        if self.error_code is None and name not in WRITE_COMMANDS:
            return False
        return self.namespace is None or self.namespace == f"{db}.{body.get(name)}"


def _fail_command(mode: Any, data: Any) -> _FailCommand:
    if mode == "alwaysOn":
        remaining = None
    elif (
        isinstance(mode, Mapping)
        and set(mode) == {"times"}
        and isinstance(mode["times"], int)
        and not isinstance(mode["times"], bool)
        and mode["times"] > 0
    ):
        remaining = int(mode["times"])
    else:
        raise CommandError(
            2, f"mode must be 'off', 'alwaysOn' or {{times: n}} on the stand-in, got {mode!r}"
        )
    if not isinstance(data, Mapping):
        raise CommandError(9, "configureFailPoint needs a data document unless mode is 'off'")
    for field in data:
        if field not in FAIL_COMMAND_FIELDS:
            raise CommandError(
                238,
                f"failCommand option '{field}' is not supported by the SiteView MongoDB "
                f"stand-in (supported: {', '.join(sorted(FAIL_COMMAND_FIELDS))})",
            )
    commands = data.get("failCommands")
    if not isinstance(commands, list) or not all(isinstance(c, str) for c in commands):
        raise CommandError(9, "failCommand needs failCommands, an array of command names")
    namespace = data.get("namespace")
    error_code = data.get("errorCode")
    concern = data.get("writeConcernError")
    if namespace is not None and not isinstance(namespace, str):
        raise CommandError(14, "failCommand namespace must be a string 'db.collection'")
    if error_code is not None and (not isinstance(error_code, int) or isinstance(error_code, bool)):
        raise CommandError(14, "failCommand errorCode must be an integer")
    if concern is not None and not isinstance(concern, Mapping):
        raise CommandError(14, "failCommand writeConcernError must be a document")
    return _FailCommand(
        frozenset(commands),
        namespace,
        error_code,
        None if concern is None else dict(concern),
        remaining,
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


class _Cursor:
    def __init__(self, ns: str, docs: collections.deque[dict[str, Any]]) -> None:
        self.ns, self.docs, self.touched = ns, docs, time.monotonic()


class Backend:
    """Executes command documents against one in-memory mongomock server."""

    def __init__(self) -> None:
        self.client: mongomock.MongoClient[dict[str, Any]] = mongomock.MongoClient()
        self.lock = threading.Lock()
        self.cursors: dict[int, _Cursor] = {}
        self.fail_point: _FailCommand | None = None
        self.fail_point_entered = 0

    def run(self, body: dict[str, Any], connection_id: int) -> dict[str, Any]:
        with self.lock:
            try:
                if not body:
                    raise CommandError(9, "empty command document")
                name = next(iter(body))
                entry = _COMMANDS.get(name)
                if entry is None:
                    log.warning("mongo stand-in: unknown command %r", name)
                    raise CommandError(
                        59,
                        f"no such command: '{name}' (the SiteView MongoDB stand-in implements "
                        "only the commands the services use)",
                    )
                handler, fields = entry
                if fields is not None:
                    _check_fields(name, {k: v for k, v in body.items() if k != name}, fields)
                db = body.get("$db")
                if not isinstance(db, str) or not db:
                    raise CommandError(40571, "OP_MSG requests require a $db argument")
                fail = self.fail_point
                if fail is None or not fail.matches(name, db, body):
                    return handler(self, db, body, connection_id)
                self.fail_point_entered += 1
                if fail.remaining is not None:
                    fail.remaining -= 1
                if fail.error_code is not None:
                    raise CommandError(
                        fail.error_code, f"Failing command {name!r} via 'failCommand' failpoint"
                    )
                reply = handler(self, db, body, connection_id)
                if reply.get("ok") and fail.write_concern_error is not None:
                    reply = {**reply, "writeConcernError": dict(fail.write_concern_error)}
                return reply
            except Exception as exc:
                return _to_command_error(exc).reply()

    # -- storage helpers ------------------------------------------------------------------

    def _collection(self, db: str, name: Any) -> mongomock.Collection:
        if not isinstance(name, str) or not name:
            raise CommandError(73, f"Invalid namespace specified '{db}.{name}'")
        return attach(self.client[db][name])

    def _exists(self, db: str, name: str) -> bool:
        return name in self.client[db].list_collection_names()

    def _open_cursor(self, ns: str, docs: list, batch_size: int | None, single: bool) -> dict:
        now = time.monotonic()
        for cid in [
            c for c, cur in self.cursors.items() if now - cur.touched > CURSOR_IDLE_SECONDS
        ]:
            del self.cursors[cid]
        rest = collections.deque(docs)
        batch = _take(rest, DEFAULT_FIRST_BATCH if batch_size is None else batch_size)
        cursor_id = 0
        if rest and not single:
            cursor_id = secrets.randbits(62) + 1
            self.cursors[cursor_id] = _Cursor(ns, rest)
        return {"id": Int64(cursor_id), "ns": ns, "firstBatch": batch}

    # -- handshake and diagnostics --------------------------------------------------------

    @_command("hello", "isMaster", "ismaster", fields=None)
    def _hello(self, db: str, cmd: dict, connection_id: int) -> dict:
        reply: dict[str, Any] = (
            {"isWritablePrimary": True} if next(iter(cmd)) == "hello" else {"ismaster": True}
        )
        reply.update(
            helloOk=True,
            maxBsonObjectSize=MAX_BSON_OBJECT_SIZE,
            maxMessageSizeBytes=MAX_MESSAGE_SIZE,
            maxWriteBatchSize=MAX_WRITE_BATCH_SIZE,
            localTime=datetime.datetime.now(datetime.UTC),
            logicalSessionTimeoutMinutes=30,
            connectionId=connection_id,
            minWireVersion=0,
            maxWireVersion=21,
            readOnly=False,
        )
        reply.update({STANDIN_MARKER: True, "siteviewStandInNote": STANDIN_NOTE, "ok": 1.0})
        return reply

    @_command("ping")
    def _ping(self, db: str, cmd: dict, connection_id: int) -> dict:
        return {"ok": 1.0}

    @_command("buildInfo", "buildinfo")
    def _build_info(self, db: str, cmd: dict, connection_id: int) -> dict:
        return {
            "version": VERSION,
            "versionArray": [7, 0, 0, 0],
            "gitVersion": "siteview-standin",
            "bits": 64,
            "maxBsonObjectSize": MAX_BSON_OBJECT_SIZE,
            "storageEngines": ["mongomock"],
            STANDIN_MARKER: True,
            "siteviewStandInNote": STANDIN_NOTE,
            "ok": 1.0,
        }

    @_command("configureFailPoint", fields="mode data")
    def _configure_fail_point(self, db: str, cmd: dict, connection_id: int) -> dict:
        """MongoDB's test command (`enableTestCommands`), for the `failCommand` fail point
        only: development and tests inject failures the way they would on MongoDB."""
        if db != "admin":
            raise CommandError(13, "configureFailPoint may only be run against the admin database.")
        name = cmd["configureFailPoint"]
        if name != "failCommand":
            raise CommandError(
                2, f"Cannot find failpoint: {name} (the SiteView MongoDB stand-in has failCommand)"
            )
        entered = self.fail_point_entered
        mode = cmd.get("mode")
        self.fail_point = None if mode == "off" else _fail_command(mode, cmd.get("data"))
        return {"count": Int64(entered), "ok": 1.0}

    @_command("endSessions")
    def _end_sessions(self, db: str, cmd: dict, connection_id: int) -> dict:
        return {"ok": 1.0}

    # -- writes ---------------------------------------------------------------------------

    @_command("insert", fields="documents ordered bypassDocumentValidation")
    def _insert_cmd(self, db: str, cmd: dict, connection_id: int) -> dict:
        coll = self._collection(db, cmd["insert"])
        docs, ordered = _require(cmd, "documents", list), cmd.get("ordered", True)
        n, errors = 0, []
        for index, doc in enumerate(docs):
            try:
                coll.insert_one(doc)
                n += 1
            except Exception as exc:
                errors.append(_to_command_error(exc).write_error(index))
                if ordered:
                    break
        return {"n": n, **({"writeErrors": errors} if errors else {}), "ok": 1.0}

    @_command("update", fields="updates ordered bypassDocumentValidation")
    def _update_cmd(self, db: str, cmd: dict, connection_id: int) -> dict:
        coll = self._collection(db, cmd["update"])
        statements, ordered = _require(cmd, "updates", list), cmd.get("ordered", True)
        n = modified = 0
        upserted, errors = [], []
        mock: Any = coll  # mongomock's private API is untyped (its stubs name pymongo's Collection)
        for index, st in enumerate(statements):
            try:
                _check_fields("update.updates", st, frozenset({"q", "u", "upsert", "multi"}))
                multi = bool(st.get("multi", False))
                _check_update(st.get("u"), multi)
                if "$inc" in st["u"]:
                    _check_inc(st["u"], coll.find_one(_require(st, "q", Mapping)))
                result = mock._update(
                    _require(st, "q", Mapping), st["u"], upsert=bool(st.get("upsert")), multi=multi
                )
            except Exception as exc:
                errors.append(_to_command_error(exc).write_error(index))
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

    @_command("delete", fields="deletes ordered")
    def _delete_cmd(self, db: str, cmd: dict, connection_id: int) -> dict:
        coll = self._collection(db, cmd["delete"])
        statements, ordered = _require(cmd, "deletes", list), cmd.get("ordered", True)
        n, errors = 0, []
        for index, st in enumerate(statements):
            try:
                _check_fields("delete.deletes", st, frozenset({"q", "limit"}))
                query, limit = _require(st, "q", Mapping), st.get("limit")
                if limit not in (0, 1) or isinstance(limit, bool):
                    raise CommandError(
                        9, f"The limit field in delete objects must be 0 or 1. Got {limit}"
                    )
                n += (coll.delete_one if limit else coll.delete_many)(query).deleted_count
            except Exception as exc:
                errors.append(_to_command_error(exc).write_error(index))
                if ordered:
                    break
        return {"n": n, **({"writeErrors": errors} if errors else {}), "ok": 1.0}

    @_command(
        "findAndModify",
        "findandmodify",
        fields="query sort remove update new fields upsert bypassDocumentValidation",
    )
    def _find_and_modify(self, db: str, cmd: dict, connection_id: int) -> dict:
        coll = self._collection(db, next(iter(cmd.values())))
        query = _require(cmd, "query", Mapping, {}) or {}
        fields = _require(cmd, "fields", Mapping, None) or None
        remove, new, upsert = (bool(cmd.get(k, False)) for k in ("remove", "new", "upsert"))
        update = cmd.get("update")
        if remove and (update is not None or new or upsert):
            raise CommandError(9, "remove=true cannot be combined with update, new or upsert")
        if not remove:
            if update is None:
                raise CommandError(9, "Either an update or remove=true must be specified")
            _check_update(update, multi=False)
        found = coll.find_one(query, sort=_sort_spec(cmd.get("sort")))
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

    # -- reads ----------------------------------------------------------------------------

    @_command(
        "find",
        fields="filter projection sort skip limit batchSize singleBatch allowDiskUse "
        "noCursorTimeout allowPartialResults",
    )
    def _find(self, db: str, cmd: dict, connection_id: int) -> dict:
        name = cmd["find"]
        coll = self._collection(db, name)
        limit = cmd.get("limit")
        if isinstance(limit, int | float) and limit < 0:
            raise CommandError(2, "limit cannot be negative (use singleBatch)")
        batch_size = cmd.get("batchSize")
        docs = list(
            coll.find(
                _require(cmd, "filter", Mapping, {}),
                _require(cmd, "projection", Mapping, None) or None,
                skip=_count(cmd.get("skip"), "skip"),
                limit=_count(limit, "limit"),
                sort=_sort_spec(cmd.get("sort")),
            )
        )
        single = bool(cmd.get("singleBatch", False))
        size = None if batch_size is None else _count(batch_size, "batchSize")
        return {"cursor": self._open_cursor(f"{db}.{name}", docs, size, single), "ok": 1.0}

    @_command("getMore", fields="collection batchSize")
    def _get_more(self, db: str, cmd: dict, connection_id: int) -> dict:
        cursor_id, ns = int(cmd["getMore"]), f"{db}.{cmd.get('collection')}"
        cursor = self.cursors.get(cursor_id)
        if cursor is None:
            raise CommandError(43, f"cursor id {cursor_id} not found")
        if cursor.ns != ns:
            raise CommandError(
                13,
                f"Requested getMore on namespace '{ns}', but cursor belongs "
                f"to a different namespace {cursor.ns}",
            )
        batch = _take(cursor.docs, _count(cmd.get("batchSize"), "batchSize") or None)
        cursor.touched = time.monotonic()
        if not cursor.docs:
            del self.cursors[cursor_id]
            cursor_id = 0
        return {"cursor": {"id": Int64(cursor_id), "ns": ns, "nextBatch": batch}, "ok": 1.0}

    @_command("killCursors", fields="cursors")
    def _kill_cursors(self, db: str, cmd: dict, connection_id: int) -> dict:
        killed: list[Any] = []
        missing: list[Any] = []
        for cursor_id in _require(cmd, "cursors", list):
            (killed if self.cursors.pop(int(cursor_id), None) else missing).append(cursor_id)
        return {
            "cursorsKilled": killed,
            "cursorsNotFound": missing,
            "cursorsAlive": [],
            "cursorsUnknown": [],
            "ok": 1.0,
        }

    @_command("count", fields="query skip limit")
    def _count_cmd(self, db: str, cmd: dict, connection_id: int) -> dict:
        limit = cmd.get("limit")
        limit = abs(limit) if isinstance(limit, int | float) else limit
        coll = self._collection(db, cmd["count"])
        docs = coll.find(
            _require(cmd, "query", Mapping, {}) or {},
            skip=_count(cmd.get("skip"), "skip"),
            limit=_count(limit, "limit"),
        )
        return {"n": len(list(docs)), "ok": 1.0}

    @_command("aggregate", fields="pipeline cursor allowDiskUse")
    def _aggregate(self, db: str, cmd: dict, connection_id: int) -> dict:
        """Only the pipeline PyMongo's count_documents sends: $match [$skip] [$limit] $group."""
        name, pipeline = cmd["aggregate"], _require(cmd, "pipeline", list)
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
                skip += _count(arg, "$skip")
            elif op == "$limit" and not limit:
                limit = _count(arg, "$limit")
                if limit == 0:
                    raise CommandError(15958, "the limit must be positive")
            else:
                raise unsupported
        n = len(list(self._collection(db, name).find(filt, skip=skip, limit=limit)))
        batch = [{"_id": spec["_id"], out_field: n}] if n else []
        return {"cursor": {"id": Int64(0), "ns": f"{db}.{name}", "firstBatch": batch}, "ok": 1.0}

    # -- indexes --------------------------------------------------------------------------

    @_command("createIndexes", fields="indexes commitQuorum")
    def _create_indexes(self, db: str, cmd: dict, connection_id: int) -> dict:
        name = cmd["createIndexes"]
        created = not self._exists(db, name)
        # mongomock's private API is untyped (its stubs name pymongo's Collection)
        coll: Any = self._collection(db, name)
        store = coll._store
        before = len(store.indexes) + 1
        for spec in _require(cmd, "indexes", list):
            _check_fields("createIndexes.indexes", spec, INDEX_OPTIONS)
            key = _require(spec, "key", Mapping)
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
            if info.get("unique"):
                for doc in list(store.documents):
                    try:
                        check_unique(coll, f"{db}.{name}", index_name, info, doc)
                    except DuplicateKey as exc:
                        raise CommandError(
                            11000, f"Index build failed: {exc.errmsg}", **exc.extra
                        ) from exc
            store.create_index(index_name, info)
        after = len(store.indexes) + 1
        reply: dict[str, Any] = {"numIndexesBefore": before, "numIndexesAfter": after}
        if after == before:
            reply["note"] = "all indexes already exist"
        else:
            reply["createdCollectionAutomatically"] = created
        return {**reply, "ok": 1.0}

    @_command("listIndexes", fields="cursor")
    def _list_indexes(self, db: str, cmd: dict, connection_id: int) -> dict:
        name = cmd["listIndexes"]
        if not self._exists(db, name):
            raise CommandError(26, f"ns does not exist: {db}.{name}")
        batch = [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]
        # mongomock's private API is untyped (its stubs name pymongo's Collection)
        coll: Any = self._collection(db, name)
        for index_name, info in coll._store.indexes.items():
            entry = {"v": 2, "key": dict(info["key"]), "name": index_name}
            entry.update((k, v) for k, v in info.items() if k != "key")
            batch.append(entry)
        return {"cursor": {"id": Int64(0), "ns": f"{db}.{name}", "firstBatch": batch}, "ok": 1.0}

    @_command("dropIndexes", fields="index")
    def _drop_indexes(self, db: str, cmd: dict, connection_id: int) -> dict:
        name, which = cmd["dropIndexes"], cmd.get("index")
        if not self._exists(db, name):
            raise CommandError(26, f"ns not found {db}.{name}")
        # mongomock's private API is untyped (its stubs name pymongo's Collection)
        coll: Any = self._collection(db, name)
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

    # -- namespaces -----------------------------------------------------------------------

    @_command("drop")
    def _drop(self, db: str, cmd: dict, connection_id: int) -> dict:
        name = cmd["drop"]
        if not self._exists(db, name):
            return {"ok": 1.0}
        # mongomock's private API is untyped (its stubs name pymongo's Collection)
        coll: Any = self._collection(db, name)
        was = len(coll._store.indexes) + 1
        coll.drop()
        return {"nIndexesWas": was, "ns": f"{db}.{name}", "ok": 1.0}

    @_command("dropDatabase")
    def _drop_database(self, db: str, cmd: dict, connection_id: int) -> dict:
        self.client.drop_database(db)
        return {"dropped": db, "ok": 1.0}

    @_command("listCollections", fields="filter nameOnly authorizedCollections cursor")
    def _list_collections(self, db: str, cmd: dict, connection_id: int) -> dict:
        filt = _require(cmd, "filter", Mapping, {}) or {}
        batch = []
        for name in sorted(self.client[db].list_collection_names()):
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

    @_command("listDatabases", fields="filter nameOnly authorizedDatabases")
    def _list_databases(self, db: str, cmd: dict, connection_id: int) -> dict:
        filt = _require(cmd, "filter", Mapping, {}) or {}
        dbs = [
            {"name": n, "sizeOnDisk": 0, "empty": False}
            for n in sorted(self.client.list_database_names())
        ]
        dbs = [d for d in dbs if filter_applies(filt, d)]
        if cmd.get("nameOnly"):
            return {"databases": [{"name": d["name"]} for d in dbs], "ok": 1.0}
        return {"databases": dbs, "totalSize": 0, "totalSizeMb": 0, "ok": 1.0}


def _take(docs: collections.deque, limit: int | None) -> list[dict[str, Any]]:
    """Pop up to ``limit`` documents (None: no count limit), keeping a batch under 16 MiB."""
    batch: list[dict[str, Any]] = []
    size = 0
    while docs and (limit is None or len(batch) < limit):
        size += len(bson.encode(docs[0]))
        if batch and size > MAX_BSON_OBJECT_SIZE:
            break
        batch.append(docs.popleft())
    return batch
