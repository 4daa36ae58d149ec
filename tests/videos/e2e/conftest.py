"""Fixtures of the videos end-to-end tests: the stack's videos API and its database, and its
callers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from videos.e2e.callers import Caller

from support import KeyPair, new_user_id


@pytest.fixture
async def client(stack: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.urls["videos-api"], timeout=15) as http:
        yield http


@pytest.fixture
def videos_db(stack: Any, mongo_client: AsyncMongoClient[Any]) -> AsyncDatabase[Any]:
    return mongo_client[stack.databases["videos"]]


@pytest.fixture
def owner(client: httpx.AsyncClient, signing_key: KeyPair) -> Caller:
    return Caller(client, signing_key, new_user_id())


@pytest.fixture
def other(client: httpx.AsyncClient, signing_key: KeyPair) -> Caller:
    return Caller(client, signing_key, new_user_id())


@pytest.fixture
def nobody(client: httpx.AsyncClient, signing_key: KeyPair) -> Caller:
    return Caller(client, signing_key, None)
