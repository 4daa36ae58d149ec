"""MongoDB wiring: PyMongo's async client, created inside the running event loop."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qsl

from pymongo import AsyncMongoClient
from pymongo.errors import ConnectionFailure, PyMongoError

from siteview_common.settings import MongoSettings, exit_with

#: The field the embedded wire-protocol stand-in adds to its `hello` reply.
STANDIN_MARKER = "siteviewStandIn"


class StandInRefusedError(RuntimeError):
    pass


def make_mongo_client(
    settings: MongoSettings, *, bounded: bool = False, **options: Any
) -> AsyncMongoClient[Any]:
    """A client for `MONGODB_URL`. `bounded` (the APIs): every operation, including finding a
    server and connecting to it, ends within `MONGODB_TIMEOUT_SECONDS` (PyMongo's client-side
    operation timeout, `timeoutMS`), so a database that is down or does not answer costs a
    request that long and no more. Options written in `MONGODB_URL` take precedence."""
    timeout_ms = round(settings.mongodb_timeout_seconds * 1000)
    bounds: dict[str, Any] = {"serverSelectionTimeoutMS": 5000}
    if bounded:
        bounds = {
            "timeoutMS": timeout_ms,
            "serverSelectionTimeoutMS": timeout_ms,
            "connectTimeoutMS": timeout_ms,
        }
    in_url = _url_option_names(settings.mongo_url)
    return AsyncMongoClient(
        settings.mongo_url,
        tz_aware=True,
        appname=options.pop("appname", "siteview"),
        **{name: value for name, value in bounds.items() if name.lower() not in in_url},
        **options,
    )


def _url_option_names(url: str) -> set[str]:
    """The (lower-cased) option names in a MongoDB URL's query string."""
    query = url.partition("?")[2]
    return {name.lower() for name, _ in parse_qsl(query, keep_blank_values=True)}


def is_unavailable(exc: BaseException) -> bool:
    """The error says the database is down, unreachable or did not answer in time (as opposed
    to a bug in what we asked): worth a 503 and a retry, not a 500."""
    return isinstance(exc, ConnectionFailure) or (isinstance(exc, PyMongoError) and exc.timeout)


async def check_server(client: AsyncMongoClient[Any], settings: MongoSettings) -> None:
    """Fail start-up when the database is the development stand-in outside development."""
    hello = await client.admin.command("hello")
    if hello.get(STANDIN_MARKER) and not settings.is_development:
        raise StandInRefusedError(
            "MONGODB_URL points at the development MongoDB stand-in; "
            "it is refused unless APP_ENV=development"
        )


def preflight(settings: MongoSettings) -> None:
    """Before serving: the database answers and is not the stand-in (outside development).
    Either failure ends the process with one line, like a missing setting."""

    async def check() -> None:
        client = make_mongo_client(settings, appname="siteview-preflight")
        try:
            await check_server(client, settings)
        finally:
            await client.close()

    try:
        asyncio.run(check())
    except StandInRefusedError as exc:
        exit_with(str(exc))
    except PyMongoError as exc:
        exit_with(f"cannot reach MongoDB at MONGODB_URL: {type(exc).__name__}")


async def ping(client: AsyncMongoClient[Any]) -> bool:
    try:
        await client.admin.command("ping")
    except PyMongoError:
        return False
    return True
