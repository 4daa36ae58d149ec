"""Fixtures of the payments tests: a MongoDB client on the session's backend and a repository
on a fresh database per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from siteview_payments.repository import PaymentsRepository


@pytest.fixture(scope="session")
async def payments_mongo(backend: Any) -> AsyncIterator[AsyncMongoClient[Any]]:
    client: AsyncMongoClient[Any] = AsyncMongoClient(backend.mongo, tz_aware=True)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def payments_db_name(payments_mongo: AsyncMongoClient[Any]) -> AsyncIterator[str]:
    name = f"payments_test_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        await payments_mongo.drop_database(name)


@pytest.fixture
async def repo(payments_mongo: AsyncMongoClient[Any], payments_db_name: str) -> PaymentsRepository:
    repository = PaymentsRepository(payments_mongo[payments_db_name])
    await repository.create_indexes()
    return repository
