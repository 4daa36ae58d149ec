"""The stand-in's command table and what every handler shares: MongoDB's error replies, the
registry of command handlers, and the checks of command fields and arguments.

This is a development/test STAND-IN, not MongoDB. Anything outside the table answers
``CommandNotFound``; options that MongoDB knows but this stand-in does not implement
(collation, hint, let, arrayFilters, ...) answer ``NotImplemented`` (238) and transactions
answer ``IllegalOperation`` (20), rather than being silently ignored.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import bson
from pymongo.errors import InvalidName, OperationFailure

from siteview_devstack.mongo.storage import DuplicateKey
from siteview_devstack.mongo.wire import MAX_BSON_OBJECT_SIZE

if TYPE_CHECKING:
    from siteview_devstack.mongo.commands import Backend

log = logging.getLogger("siteview_devstack.mongo")

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


class CommandError(Exception):
    def __init__(self, code: int, errmsg: str, **extra: Any) -> None:
        super().__init__(errmsg)
        self.code, self.errmsg, self.extra = code, errmsg, extra

    def reply(self) -> dict[str, Any]:
        name = CODE_NAMES.get(self.code, f"Location{self.code}")
        return {"ok": 0.0, "errmsg": self.errmsg, "code": self.code, "codeName": name, **self.extra}

    def write_error(self, index: int) -> dict[str, Any]:
        return {"index": index, "code": self.code, **self.extra, "errmsg": self.errmsg}


def to_command_error(exc: Exception) -> CommandError:
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


Handler = Callable[["Backend", str, dict[str, Any], int], dict[str, Any]]
COMMANDS: dict[str, tuple[Handler, frozenset[str] | None]] = {}


def command(*names: str, fields: str | None = "") -> Callable[[Handler], Handler]:
    """Register a handler; ``fields`` are its accepted fields (None: accept anything)."""

    def register(fn: Handler) -> Handler:
        allowed = None if fields is None else frozenset(fields.split()) | GENERIC_FIELDS
        for name in names:
            COMMANDS[name] = (fn, allowed)
        return fn

    return register


def check_fields(where: str, doc: Mapping[str, Any], allowed: frozenset[str]) -> None:
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


def require(
    cmd: Mapping[str, Any], field: str, kind: type | tuple[type, ...], default: Any = ...
) -> Any:
    value = cmd.get(field, default)
    if value is ... or (value is not default and not isinstance(value, kind)):
        raise CommandError(14, f"BSON field '{field}' is missing or has the wrong type")
    return value


def non_negative(value: Any, field: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise CommandError(2, f"{field} must be a non-negative number, got {value!r}")
    return int(value)


def sort_spec(sort: Any) -> list[tuple[str, int]] | None:
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


def take(docs: collections.deque, limit: int | None) -> list[dict[str, Any]]:
    """Pop up to ``limit`` documents (None: no count limit), keeping a batch under 16 MiB."""
    batch: list[dict[str, Any]] = []
    size = 0
    while docs and (limit is None or len(batch) < limit):
        size += len(bson.encode(docs[0]))
        if batch and size > MAX_BSON_OBJECT_SIZE:
            break
        batch.append(docs.popleft())
    return batch
