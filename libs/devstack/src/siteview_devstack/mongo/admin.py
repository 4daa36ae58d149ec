"""The stand-in's handshake, diagnostics and test commands: hello, ping, buildInfo,
endSessions, and MongoDB's `failCommand` fail point (configureFailPoint)."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bson.int64 import Int64

from siteview_devstack.mongo.table import CommandError, command
from siteview_devstack.mongo.wire import (
    MAX_BSON_OBJECT_SIZE,
    MAX_MESSAGE_SIZE,
    MAX_WRITE_BATCH_SIZE,
)

if TYPE_CHECKING:
    from siteview_devstack.mongo.commands import Backend

STANDIN_MARKER = "siteviewStandIn"
STANDIN_NOTE = "SiteView development stand-in speaking the MongoDB wire protocol; NOT MongoDB"
VERSION = "7.0.0"

WRITE_COMMANDS = frozenset({"insert", "update", "delete", "findAndModify", "findandmodify"})
FAIL_COMMAND_FIELDS = frozenset({"failCommands", "namespace", "writeConcernError", "errorCode"})


@dataclasses.dataclass
class FailCommand:
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


def fail_command(mode: Any, data: Any) -> FailCommand:
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
    return FailCommand(
        frozenset(commands),
        namespace,
        error_code,
        None if concern is None else dict(concern),
        remaining,
    )


@command("hello", "isMaster", "ismaster", fields=None)
def hello(backend: Backend, db: str, cmd: dict, connection_id: int) -> dict:
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


@command("ping")
def ping(backend: Backend, db: str, cmd: dict, connection_id: int) -> dict:
    return {"ok": 1.0}


@command("buildInfo", "buildinfo")
def build_info(backend: Backend, db: str, cmd: dict, connection_id: int) -> dict:
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


@command("endSessions")
def end_sessions(backend: Backend, db: str, cmd: dict, connection_id: int) -> dict:
    return {"ok": 1.0}


@command("configureFailPoint", fields="mode data")
def configure_fail_point(backend: Backend, db: str, cmd: dict, connection_id: int) -> dict:
    """MongoDB's test command (`enableTestCommands`), for the `failCommand` fail point
    only: development and tests inject failures the way they would on MongoDB."""
    if db != "admin":
        raise CommandError(13, "configureFailPoint may only be run against the admin database.")
    name = cmd["configureFailPoint"]
    if name != "failCommand":
        raise CommandError(
            2, f"Cannot find failpoint: {name} (the SiteView MongoDB stand-in has failCommand)"
        )
    entered = backend.fail_point_entered
    mode = cmd.get("mode")
    backend.fail_point = None if mode == "off" else fail_command(mode, cmd.get("data"))
    return {"count": Int64(entered), "ok": 1.0}
