"""The Svix-id ledger: which webhook deliveries a service has already applied.

Entries expire after `LEDGER_TTL_SECONDS`. MongoDB expires them itself through a TTL index on
`appliedAt`. A server that answers NotImplemented to the TTL option (FerretDB 1.x) gets a
plain index on `appliedAt` instead, and the ledger deletes expired entries itself: after a
`record`, at most once every `LEDGER_SWEEP_INTERVAL_SECONDS`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import OperationFailure, PyMongoError

from siteview_common.writes import NOT_IMPLEMENTED, insert_unordered

log = logging.getLogger(__name__)

#: How long the ledger remembers a Svix id: longer than Clerk's retry schedule (~28 h) and
#: the dashboard replays operators run after an incident.
LEDGER_TTL_SECONDS = 30 * 24 * 3600

#: Where the server has no TTL indexes: how often, at most, expired entries are deleted.
LEDGER_SWEEP_INTERVAL_SECONDS = 3600

#: The index on `appliedAt` (a TTL index where the server has them).
APPLIED_AT_INDEX = "appliedAt_1"


class EventLedger:
    """The Svix ids a service has applied, each with the time it was recorded."""

    def __init__(
        self,
        collection: AsyncCollection[Any],
        *,
        ttl_seconds: int = LEDGER_TTL_SECONDS,
        sweep_interval_seconds: float = LEDGER_SWEEP_INTERVAL_SECONDS,
        sweep: bool = False,
    ) -> None:
        """`sweep`: delete expired entries from the start, whatever the server supports
        (otherwise only once `create_indexes` found it has no TTL indexes)."""
        self._collection = collection
        self._ttl_seconds = ttl_seconds
        self._sweep_interval = sweep_interval_seconds
        self._sweeps = sweep
        self._last_sweep: float | None = None

    @property
    def expires_by_sweeping(self) -> bool:
        """True when the ledger deletes its expired entries itself."""
        return self._sweeps

    async def create_indexes(self) -> None:
        try:
            await self._collection.create_index(
                [("appliedAt", ASCENDING)],
                name=APPLIED_AT_INDEX,
                expireAfterSeconds=self._ttl_seconds,
            )
        except OperationFailure as exc:
            if exc.code != NOT_IMPLEMENTED:
                raise
            await self._collection.create_index([("appliedAt", ASCENDING)], name=APPLIED_AT_INDEX)
            self._sweeps = True
            log.warning(
                "the database has no TTL indexes; the ledger deletes its expired entries "
                "itself, at most once every %d s",
                self._sweep_interval,
                extra={"collection": self._collection.name, "ttlSeconds": self._ttl_seconds},
            )

    async def seen(self, svix_ids: Sequence[str]) -> set[str]:
        if not svix_ids:
            return set()
        docs = self._collection.find({"_id": {"$in": list(svix_ids)}}, {"_id": 1})
        return {doc["_id"] async for doc in docs}

    async def record(self, svix_ids: Sequence[str]) -> None:
        """Record `svix_ids` as applied. An id already there (an earlier attempt recorded it,
        then failed before committing) is fine; any other failure, a write concern that was
        not satisfied included, raises, and the batch is redelivered."""
        if not svix_ids:
            return
        now = datetime.now(UTC)
        await insert_unordered(
            self._collection, [{"_id": sid, "appliedAt": now} for sid in svix_ids]
        )
        await self._sweep_if_due()

    async def sweep(self) -> int:
        """Delete the entries older than the TTL; returns how many."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self._ttl_seconds)
        result = await self._collection.delete_many({"appliedAt": {"$lt": cutoff}})
        return result.deleted_count

    async def _sweep_if_due(self) -> None:
        if not self._sweeps:
            return
        started = time.monotonic()
        if self._last_sweep is not None and started - self._last_sweep < self._sweep_interval:
            return
        try:
            deleted = await self.sweep()
        except PyMongoError as exc:  # housekeeping: the next record tries again
            log.warning(
                "ledger sweep failed; retrying after the next record",
                extra={"collection": self._collection.name, "error": f"{type(exc).__name__}"},
            )
            return
        self._last_sweep = started
        if deleted:
            log.info(
                "ledger sweep deleted expired entries",
                extra={"collection": self._collection.name, "deleted": deleted},
            )


__all__ = [
    "APPLIED_AT_INDEX",
    "LEDGER_SWEEP_INTERVAL_SECONDS",
    "LEDGER_TTL_SECONDS",
    "EventLedger",
]
