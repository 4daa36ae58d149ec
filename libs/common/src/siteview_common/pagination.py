"""Convex's pagination contract over MongoDB: keyset cursors, newest first.

Request: `numItems` (1..100, default 20) and an opaque `cursor`. Response: `{page,
continueCursor, isDone}`, where `continueCursor` is always a string (Convex's client rejects
null). The cursor encodes the last item's sort key and id (not an offset), so pages stay stable
while documents are inserted or deleted, and it is signed with a scope (which list, whose), so a
modified cursor or one from another list is refused with 400 instead of being trusted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from itsdangerous import BadData, URLSafeSerializer
from pydantic import BaseModel, ConfigDict, Field
from pymongo.asynchronous.collection import AsyncCollection

T = TypeVar("T")

DEFAULT_NUM_ITEMS = 20
MAX_NUM_ITEMS = 100


class InvalidCursorError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ended: the last item's sort key and id. `None` key: the end of the list."""

    key: int | None
    id: str | None


END = Position(None, None)


#: The longest cursor we ever hand out is far shorter; anything longer is refused unread.
MAX_CURSOR_LENGTH = 512


class CursorCodec:
    """Signs and checks cursors with itsdangerous (HMAC-SHA256), salted with the list's scope,
    so a cursor is valid only for the list it came from."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("the cursor secret is empty")
        self._secret = secret

    def _serializer(self, scope: str) -> URLSafeSerializer:
        return URLSafeSerializer(
            self._secret,
            salt=f"siteview-cursor:{scope}",
            signer_kwargs={"digest_method": hashlib.sha256},
        )

    def encode(self, scope: str, position: Position) -> str:
        return self._serializer(scope).dumps([position.key, position.id])

    def decode(self, scope: str, cursor: str) -> Position:
        if len(cursor) > MAX_CURSOR_LENGTH:
            raise InvalidCursorError("cursor too long")
        serializer = self._serializer(scope)
        try:
            value = serializer.loads(cursor)
        except BadData as exc:
            raise InvalidCursorError("cursor does not belong to this list") from exc
        if serializer.dumps(value) != cursor:  # only the canonical spelling is ours
            raise InvalidCursorError("malformed cursor")
        match value:
            case [int() | None as key, str() | None as id_] if not isinstance(key, bool):
                return Position(key, id_)
        raise InvalidCursorError("malformed cursor")


class Page(BaseModel, Generic[T]):
    model_config = ConfigDict(populate_by_name=True)

    page: list[T]
    continue_cursor: str = Field(alias="continueCursor")
    is_done: bool = Field(alias="isDone")


@dataclass(frozen=True, slots=True)
class PageParams:
    num_items: int
    cursor: str | None


#: The `numItems` query parameter of every list route, REST and live (422 outside 1..100).
NumItems = Annotated[int, Query(alias="numItems", ge=1, le=MAX_NUM_ITEMS)]


def page_params(
    num_items: NumItems = DEFAULT_NUM_ITEMS,
    cursor: Annotated[str | None, Query(description="continueCursor of the previous page")] = None,
) -> PageParams:
    """FastAPI dependency for the two pagination query parameters: `numItems` out of range
    answers 422; a cursor that is not ours (too long, malformed, edited, another list's) 400
    when it is decoded. An empty cursor is the first page."""
    return PageParams(num_items=num_items, cursor=cursor or None)


def keyset_after(sort_field: str, position: Position) -> dict[str, Any]:
    """The filter for items after `position` in (sort_field desc, _id desc) order."""
    return {
        "$or": [
            {sort_field: {"$lt": position.key}},
            {sort_field: position.key, "_id": {"$lt": position.id}},
        ]
    }


async def paginate(
    collection: AsyncCollection[Any],
    *,
    base_filter: Mapping[str, Any],
    sort_field: str,
    params: PageParams,
    codec: CursorCodec,
    scope: str,
    shape: Callable[[dict[str, Any]], T],
    projection: Mapping[str, Any] | None = None,
) -> Page[T]:
    """One page, newest first, of documents whose `_id` is a string and `sort_field` an int."""
    position = codec.decode(scope, params.cursor) if params.cursor else None
    if position == END:
        return Page(
            page=[], continue_cursor=params.cursor or codec.encode(scope, END), is_done=True
        )
    query = dict(base_filter)
    if position is not None:
        query = {"$and": [query, keyset_after(sort_field, position)]}
    docs = await (
        collection.find(query, projection)
        .sort([(sort_field, -1), ("_id", -1)])
        .limit(params.num_items + 1)
        .to_list()
    )
    is_done = len(docs) <= params.num_items
    docs = docs[: params.num_items]
    if docs:
        last = docs[-1]
        next_position = Position(last[sort_field], last["_id"])
    else:
        next_position = position or END
    return Page(
        page=[shape(d) for d in docs],
        continue_cursor=codec.encode(scope, next_position),
        is_done=is_done,
    )
