"""Convex's pagination contract over MongoDB: keyset cursors, newest first.

Request: `numItems` (1..100, default 20) and an opaque `cursor`. Response: `{page,
continueCursor, isDone}`, where `continueCursor` is always a string (Convex's client rejects
null). The cursor encodes the last item's sort key and id (not an offset), so pages stay stable
while documents are inserted or deleted, and it is signed with a scope (which list, whose), so a
modified cursor or one from another list is refused with 400 instead of being trusted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
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


class CursorCodec:
    """Signs and checks cursors with HMAC-SHA256 (truncated to 128 bits)."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("the cursor secret is empty")
        self._key = hashlib.sha256(b"siteview-cursor:" + secret.encode()).digest()

    def _mac(self, scope: str, body: bytes) -> bytes:
        return hmac.new(self._key, scope.encode() + b"\x00" + body, hashlib.sha256).digest()[:16]

    def encode(self, scope: str, position: Position) -> str:
        body = json.dumps([position.key, position.id], separators=(",", ":")).encode()
        return f"{_b64(body)}.{_b64(self._mac(scope, body))}"

    def decode(self, scope: str, cursor: str) -> Position:
        try:
            body_part, mac_part = cursor.split(".")
            body, mac = _unb64(body_part), _unb64(mac_part)
        except ValueError as exc:
            raise InvalidCursorError("malformed cursor") from exc
        if f"{_b64(body)}.{_b64(mac)}" != cursor:  # only the canonical spelling is ours
            raise InvalidCursorError("malformed cursor")
        if not hmac.compare_digest(mac, self._mac(scope, body)):
            raise InvalidCursorError("cursor does not belong to this list")
        key, id_ = json.loads(body)
        return Position(key, id_)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError("not base64") from exc


class Page(BaseModel, Generic[T]):
    model_config = ConfigDict(populate_by_name=True)

    page: list[T]
    continue_cursor: str = Field(alias="continueCursor")
    is_done: bool = Field(alias="isDone")


@dataclass(frozen=True, slots=True)
class PageParams:
    num_items: int
    cursor: str | None


def page_params(
    num_items: Annotated[int, Query(alias="numItems", ge=1, le=MAX_NUM_ITEMS)] = DEFAULT_NUM_ITEMS,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> PageParams:
    """FastAPI dependency for the two pagination query parameters (out of range → 422)."""
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
