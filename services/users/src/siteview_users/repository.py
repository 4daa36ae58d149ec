"""Where users live: one document per Clerk user in the `users` collection."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from siteview_common.writes import bulk_upsert_guarded
from siteview_users.domain import UpsertUser, UserCommand

PERSONAL_FIELDS = ("name", "email", "imageUrl")


def write_for(command: UserCommand) -> UpdateOne:
    """One guarded upsert that matches only a record it may change, or inserts a new one.

    An upsert matches a live record older than itself. A delete matches any live record:
    deletion is final in Clerk, so it wins over every update, whatever their clocks say.
    When the filter misses because a newer or deleted record exists, the upsert tries to
    insert and the unique `externalId` index refuses it: that duplicate-key error means
    "stale" and is expected.
    """
    if isinstance(command, UpsertUser):
        guard = {
            "externalId": command.external_id,
            "version": {"$lt": command.version},
            "deleted": {"$ne": True},
        }
        update: dict[str, Any] = {
            "$set": {**command.fields, "version": command.version, "deleted": False}
        }
    else:
        guard = {"externalId": command.external_id, "deleted": {"$ne": True}}
        update = {
            "$set": {"deleted": True, "deletedAt": command.version},
            "$max": {"version": command.version},
            "$unset": dict.fromkeys(PERSONAL_FIELDS, ""),
        }
    return UpdateOne(guard, update, upsert=True)


class UserRepository:
    def __init__(self, db: AsyncDatabase[Any]) -> None:
        self._users = db["users"]

    async def create_indexes(self) -> None:
        await self._users.create_index([("externalId", ASCENDING)], unique=True, name="externalId")

    async def apply(self, commands: Sequence[UserCommand]) -> int:
        """Apply a batch in one bulk write; returns how many were stale (ignored)."""
        return await bulk_upsert_guarded(self._users, [write_for(c) for c in commands])

    async def get(self, external_id: str) -> dict[str, Any] | None:
        return await self._users.find_one(
            {"externalId": external_id, "deleted": {"$ne": True}}, {"_id": 0}
        )
