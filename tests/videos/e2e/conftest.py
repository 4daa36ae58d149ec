"""Fixtures of the videos end-to-end tests: the stack's videos API and its database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase


@pytest.fixture
async def client(stack: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.urls["videos-api"], timeout=15) as http:
        yield http


@pytest.fixture
def videos_db(stack: Any, mongo_client: AsyncMongoClient[Any]) -> AsyncDatabase[Any]:
    return mongo_client[stack.databases["videos"]]
