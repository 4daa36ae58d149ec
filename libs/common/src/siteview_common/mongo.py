"""MongoDB wiring: PyMongo's async client, created inside the running event loop."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from siteview_common.settings import MongoSettings

#: The field the embedded wire-protocol stand-in adds to its `hello` reply.
STANDIN_MARKER = "siteviewStandIn"


class StandInRefusedError(RuntimeError):
    pass


def make_mongo_client(settings: MongoSettings, **options: Any) -> AsyncMongoClient[Any]:
    return AsyncMongoClient(
        settings.mongo_url,
        tz_aware=True,
        serverSelectionTimeoutMS=5000,
        appname=options.pop("appname", "siteview"),
        **options,
    )


async def check_server(client: AsyncMongoClient[Any], settings: MongoSettings) -> None:
    """Fail start-up when the database is the development stand-in outside development."""
    hello = await client.admin.command("hello")
    if hello.get(STANDIN_MARKER) and not settings.is_development:
        raise StandInRefusedError(
            "MONGODB_URL points at the development MongoDB stand-in; "
            "it is refused unless APP_ENV=development"
        )


async def ping(client: AsyncMongoClient[Any]) -> bool:
    try:
        await client.admin.command("ping")
    except PyMongoError:
        return False
    return True
