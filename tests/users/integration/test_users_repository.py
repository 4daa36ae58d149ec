"""The users repository on a real MongoDB driver over TCP (whichever backend the run uses):
ordering, idempotency, tombstones."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from conftest import Backend
from siteview_users.domain import DeleteUser, UpsertUser
from siteview_users.repository import UserRepository
from support import new_user_id


@pytest.fixture
async def repo(backend: Backend) -> AsyncIterator[UserRepository]:
    client: AsyncMongoClient[Any] = AsyncMongoClient(backend.mongo)
    name = f"users_repo_{uuid.uuid4().hex[:10]}"
    repository = UserRepository(client[name])
    await repository.create_indexes()
    yield repository
    await client.drop_database(name)
    await client.close()


def upsert(user_id: str, version: int, name: str) -> UpsertUser:
    return UpsertUser(
        user_id,
        version,
        {"name": name, "email": None, "imageUrl": None, "createdAt": 1, "updatedAt": version},
    )


async def test_a_newer_update_wins_and_a_stale_one_is_ignored(repo: UserRepository) -> None:
    uid = new_user_id()
    assert await repo.apply([upsert(uid, 10, "first")]) == 0
    assert await repo.apply([upsert(uid, 30, "newest")]) == 0
    assert await repo.apply([upsert(uid, 20, "stale")]) == 1
    doc = await repo.get(uid)
    assert doc is not None
    assert (doc["name"], doc["updatedAt"]) == ("newest", 30)


async def test_update_before_create_keeps_the_update(repo: UserRepository) -> None:
    uid = new_user_id()
    await repo.apply([upsert(uid, 20, "updated")])
    await repo.apply([upsert(uid, 10, "created")])
    doc = await repo.get(uid)
    assert doc is not None and doc["name"] == "updated"


async def test_a_batch_in_any_order_converges_on_the_newest(repo: UserRepository) -> None:
    uid = new_user_id()
    await repo.apply([upsert(uid, 3, "c"), upsert(uid, 1, "a"), upsert(uid, 2, "b")])
    doc = await repo.get(uid)
    assert doc is not None and doc["name"] == "c"


async def test_the_same_event_twice_changes_nothing(repo: UserRepository) -> None:
    uid = new_user_id()
    await repo.apply([upsert(uid, 5, "once")])
    before = await repo.get(uid)
    assert await repo.apply([upsert(uid, 5, "once")]) == 1
    assert await repo.get(uid) == before


async def test_a_deleted_user_is_gone_and_never_resurrected(repo: UserRepository) -> None:
    uid = new_user_id()
    await repo.apply([upsert(uid, 10, "alive")])
    await repo.apply([DeleteUser(uid, 20)])
    assert await repo.get(uid) is None
    # a late update, even one whose clock is after the deletion, does not bring it back
    assert await repo.apply([upsert(uid, 15, "late"), upsert(uid, 25, "later")]) == 2
    assert await repo.get(uid) is None


async def test_a_deletion_before_the_creation_leaves_a_tombstone(repo: UserRepository) -> None:
    uid = new_user_id()
    await repo.apply([DeleteUser(uid, 20)])
    await repo.apply([upsert(uid, 10, "created late")])
    assert await repo.get(uid) is None


async def test_a_deletion_wins_over_a_skewed_newer_update(repo: UserRepository) -> None:
    uid = new_user_id()
    await repo.apply([upsert(uid, 30, "alive")])
    await repo.apply([DeleteUser(uid, 29)])
    assert await repo.get(uid) is None


async def test_users_are_independent(repo: UserRepository) -> None:
    a, b = new_user_id(), new_user_id()
    await repo.apply([upsert(a, 1, "a"), upsert(b, 1, "b"), DeleteUser(a, 2)])
    assert await repo.get(a) is None
    doc = await repo.get(b)
    assert doc is not None and doc["externalId"] == b


async def test_concurrent_writers_racing_to_insert_keep_the_newest(repo: UserRepository) -> None:
    """Two workers (a rebalance) upsert the same new users at once: whichever inserts first,
    the newer version ends up stored."""
    users = [new_user_id() for _ in range(40)]
    await asyncio.gather(
        *(repo.apply([upsert(uid, 1, "older")]) for uid in users),
        *(repo.apply([upsert(uid, 2, "newer")]) for uid in users),
    )
    for uid in users:
        doc = await repo.get(uid)
        assert doc is not None and (doc["name"], doc["updatedAt"]) == ("newer", 2)
