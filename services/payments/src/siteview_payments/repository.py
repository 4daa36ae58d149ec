"""Where billing state lives, one document per Clerk object, `_id` being Clerk's id:

- `payment_attempts`: one per attempt (`pa_...`), with `paymentId`, `userId` or
  `organizationId`, `version`, `terminal` and the raw event it was last written from;
- `subscriptions`: one per subscription (`sub_...`) with its items as that event listed them;
- `subscription_items`: one per item (`subi_...`), from `subscriptionItem.*` events.

Every write is a guarded upsert: it matches only an older version of its record, or inserts a
new one. When the record exists and is as new or newer, the filter misses, the upsert tries to
insert and the `_id` index refuses it: that duplicate-key error means "stale" and is expected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from siteview_common.pagination import CursorCodec, Page, PageParams, paginate
from siteview_common.writes import bulk_upsert_guarded
from siteview_payments.domain import (
    BillingCommand,
    UpsertAttempt,
    UpsertSubscription,
    UpsertSubscriptionItem,
    merge_items,
    newest_per_record,
)

T = TypeVar("T")

#: What the API never reads: kept in the documents for audit and replays, not sent back.
INTERNAL = {"raw": 0, "svixId": 0, "eventType": 0, "payer": 0, "terminal": 0}


def attempt_write(command: UpsertAttempt) -> UpdateOne:
    """A newer attempt state replaces an older one; a terminal state (paid, failed) replaces
    any non-terminal one, and only a newer terminal state replaces a terminal one."""
    if command.terminal:
        guard: dict[str, Any] = {
            "_id": command.attempt_id,
            "$or": [{"terminal": {"$ne": True}}, {"version": {"$lt": command.version}}],
        }
    else:
        guard = {
            "_id": command.attempt_id,
            "terminal": {"$ne": True},
            "version": {"$lt": command.version},
        }
    update: dict[str, Any] = {
        "$set": {**command.fields, "version": command.version, "terminal": command.terminal}
    }
    if command.created_at is not None:
        update["$set"]["createdAt"] = command.created_at
    else:
        update["$min"] = {"createdAt": command.version}
    return UpdateOne(guard, update, upsert=True)


def versioned_write(record_id: str, version: int, fields: dict[str, Any]) -> UpdateOne:
    """Newest version wins; statuses may go back and forth, so the clock alone decides."""
    return UpdateOne(
        {"_id": record_id, "version": {"$lt": version}},
        {"$set": {**fields, "version": version}},
        upsert=True,
    )


class PaymentsRepository:
    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self._attempts: AsyncCollection[Any] = db["payment_attempts"]
        self._subscriptions: AsyncCollection[Any] = db["subscriptions"]
        self._items: AsyncCollection[Any] = db["subscription_items"]

    async def create_indexes(self) -> None:
        # `_id` (the Clerk id) is unique already; these serve every query below.
        await self._attempts.create_index(
            [("userId", ASCENDING), ("createdAt", DESCENDING), ("_id", DESCENDING)],
            name="userId_createdAt",
        )
        await self._attempts.create_index(
            [("paymentId", ASCENDING), ("createdAt", DESCENDING), ("_id", DESCENDING)],
            name="paymentId_createdAt",
        )
        await self._subscriptions.create_index(
            [("userId", ASCENDING), ("createdAt", DESCENDING), ("_id", DESCENDING)],
            name="userId_createdAt",
        )

    async def apply(self, commands: Sequence[BillingCommand]) -> int:
        """Apply a batch: one bulk write per collection it touches. Returns how many events
        were stale (superseded in the batch or by what is stored)."""
        winners = newest_per_record(commands)
        attempts: list[UpdateOne] = []
        subscriptions: list[UpdateOne] = []
        items: list[UpdateOne] = []
        for command in winners:
            if isinstance(command, UpsertAttempt):
                attempts.append(attempt_write(command))
            elif isinstance(command, UpsertSubscription):
                subscriptions.append(
                    versioned_write(command.subscription_id, command.version, command.fields)
                )
            elif isinstance(command, UpsertSubscriptionItem):
                items.append(versioned_write(command.item_id, command.version, command.fields))
        stale = len(commands) - len(winners)
        stale += await bulk_upsert_guarded(self._attempts, attempts)
        stale += await bulk_upsert_guarded(self._subscriptions, subscriptions)
        stale += await bulk_upsert_guarded(self._items, items)
        return stale

    async def attempts_page(
        self,
        user_id: str,
        *,
        params: PageParams,
        codec: CursorCodec,
        shape: Callable[[dict[str, Any]], T],
    ) -> Page[T]:
        """The user's attempts, newest first (`createdAt`, then `_id`)."""
        return await paginate(
            self._attempts,
            base_filter={"userId": user_id},
            sort_field="createdAt",
            params=params,
            codec=codec,
            scope=f"payments/me:{user_id}",
            shape=shape,
            projection=INTERNAL,
        )

    async def latest_attempt(self, user_id: str, payment_id: str) -> dict[str, Any] | None:
        """The user's latest attempt at a payment (a payment may be attempted more than once)."""
        docs = (
            await self._attempts.find({"paymentId": payment_id, "userId": user_id}, INTERNAL)
            .sort([("createdAt", DESCENDING), ("_id", DESCENDING)])
            .limit(1)
            .to_list()
        )
        return docs[0] if docs else None

    async def get_attempt(self, attempt_id: str) -> dict[str, Any] | None:
        """The whole stored document, raw event included."""
        return await self._attempts.find_one({"_id": attempt_id})

    async def subscriptions_of(self, user_id: str) -> list[dict[str, Any]]:
        """The user's subscriptions, newest first, each with its items merged with the latest
        standalone item state."""
        subscriptions = (
            await self._subscriptions.find({"userId": user_id}, INTERNAL)
            .sort([("createdAt", DESCENDING), ("_id", DESCENDING)])
            .to_list()
        )
        item_ids = sorted({item["id"] for s in subscriptions for item in s.get("items", [])})
        standalone: dict[str, dict[str, Any]] = {}
        if item_ids:
            docs = self._items.find({"_id": {"$in": item_ids}}, INTERNAL)
            standalone = {doc.pop("_id"): doc async for doc in docs}
        for subscription in subscriptions:
            subscription["items"] = merge_items(subscription.get("items", []), standalone)
        return subscriptions
