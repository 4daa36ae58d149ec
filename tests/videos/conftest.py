"""Fixtures of the videos service's tests: a MongoDB client on the session's backend and a
fresh database per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase


@pytest.fixture(scope="session")
async def mongo_client(backend: Any) -> AsyncIterator[AsyncMongoClient[Any]]:
    client: AsyncMongoClient[Any] = AsyncMongoClient(backend.mongo, tz_aware=True)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def db(mongo_client: AsyncMongoClient[Any]) -> AsyncIterator[AsyncDatabase[Any]]:
    name = f"videos_test_{uuid.uuid4().hex[:12]}"
    try:
        yield mongo_client[name]
    finally:
        await mongo_client.drop_database(name)
