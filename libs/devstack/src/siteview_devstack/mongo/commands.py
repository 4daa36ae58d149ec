"""The stand-in's backend: MongoDB command documents in, MongoDB reply documents out.

This is a development/test STAND-IN, not MongoDB. Storage is one ``mongomock.MongoClient``
(pinned mongomock 4.3.0, with the hooks of ``storage.py``); every command runs under one lock,
which also makes each findAndModify atomic. The commands live by family in ``admin.py``,
``writes.py``, ``reads.py``, ``indexes.py`` and ``namespaces.py``, registered in the table of
``table.py`` (which also says how unknown commands and options are refused).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import mongomock

from siteview_devstack.mongo import admin, indexes, namespaces, reads, writes
from siteview_devstack.mongo.admin import STANDIN_MARKER, FailCommand
from siteview_devstack.mongo.reads import Cursor
from siteview_devstack.mongo.storage import attach
from siteview_devstack.mongo.table import COMMANDS, CommandError, check_fields, to_command_error

log = logging.getLogger("siteview_devstack.mongo")

#: The command families, registered in the table when imported.
FAMILIES = (admin, indexes, namespaces, reads, writes)


class Backend:
    """Executes command documents against one in-memory mongomock server."""

    def __init__(self) -> None:
        self.client: mongomock.MongoClient[dict[str, Any]] = mongomock.MongoClient()
        self.lock = threading.Lock()
        self.cursors: dict[int, Cursor] = {}
        self.fail_point: FailCommand | None = None
        self.fail_point_entered = 0

    def run(self, body: dict[str, Any], connection_id: int) -> dict[str, Any]:
        with self.lock:
            try:
                if not body:
                    raise CommandError(9, "empty command document")
                name = next(iter(body))
                entry = COMMANDS.get(name)
                if entry is None:
                    log.warning("mongo stand-in: unknown command %r", name)
                    raise CommandError(
                        59,
                        f"no such command: '{name}' (the SiteView MongoDB stand-in implements "
                        "only the commands the services use)",
                    )
                handler, fields = entry
                if fields is not None:
                    check_fields(name, {k: v for k, v in body.items() if k != name}, fields)
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
                return to_command_error(exc).reply()

    # -- storage helpers ------------------------------------------------------------------

    def collection(self, db: str, name: Any) -> mongomock.Collection:
        if not isinstance(name, str) or not name:
            raise CommandError(73, f"Invalid namespace specified '{db}.{name}'")
        return attach(self.client[db][name])

    def exists(self, db: str, name: str) -> bool:
        return name in self.client[db].list_collection_names()


__all__ = ["STANDIN_MARKER", "Backend", "CommandError"]
