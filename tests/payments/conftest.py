"""Fixtures of the payments tests: a repository on a fresh database per test."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from siteview_payments.repository import PaymentsRepository


@pytest.fixture
async def repo(db: AsyncDatabase[Any]) -> PaymentsRepository:
    repository = PaymentsRepository(db)
    await repository.create_indexes()
    return repository
