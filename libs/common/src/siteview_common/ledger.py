"""The Svix-id ledger: which webhook deliveries a service has already applied."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

#: How long the ledger remembers a Svix id: longer than Clerk's retry schedule (~28 h) and
#: the dashboard replays operators run after an incident.
LEDGER_TTL_SECONDS = 30 * 24 * 3600


class EventLedger:
    """The Svix ids a service has applied, with a TTL index."""

    def __init__(self, collection: AsyncCollection[Any]) -> None:
        self._collection = collection

    async def create_indexes(self) -> None:
        await self._collection.create_index(
            [("appliedAt", ASCENDING)], expireAfterSeconds=LEDGER_TTL_SECONDS
        )

    async def seen(self, svix_ids: Sequence[str]) -> set[str]:
        if not svix_ids:
            return set()
        docs = self._collection.find({"_id": {"$in": list(svix_ids)}}, {"_id": 1})
        return {doc["_id"] async for doc in docs}

    async def record(self, svix_ids: Sequence[str]) -> None:
        if not svix_ids:
            return
        now = datetime.now(UTC)
        try:
            await self._collection.insert_many(
                [{"_id": sid, "appliedAt": now} for sid in svix_ids], ordered=False
            )
        except BulkWriteError as exc:  # already recorded by an earlier, interrupted attempt
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                raise


__all__ = ["LEDGER_TTL_SECONDS", "EventLedger"]
