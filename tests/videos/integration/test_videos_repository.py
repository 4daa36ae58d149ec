"""The write and read sides against the session's MongoDB (real, or the stand-in), one fresh
database per test."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from conftest import Backend
from siteview_common.pagination import (
    CursorCodec,
    InvalidCursorError,
    PageParams,
    Position,
    keyset_after,
)
from siteview_videos import handlers, schema
from siteview_videos.domain import (
    AccountDeletedError,
    DeleteUserVideos,
    VideoNotFoundError,
    new_video,
    new_video_id,
)
from siteview_videos.queries import VideoQueries
from siteview_videos.repository import VideoRepository
from support import new_user_id

CODEC = CursorCodec("integration-secret")


class Clock:
    """A test clock: one millisecond later at every call."""

    def __init__(self, start: int = 1_700_000_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        self.now += 1
        return self.now


@pytest.fixture
async def repo(db: AsyncDatabase[Any]) -> VideoRepository:
    await schema.create_indexes(db)
    return VideoRepository(db)


@pytest.fixture
def queries(db: AsyncDatabase[Any]) -> VideoQueries:
    return VideoQueries(db)


async def add(repo: VideoRepository, user_id: str, created_at: int) -> dict[str, Any]:
    video = new_video(
        video_id=new_video_id(),
        user_id=user_id,
        title="t",
        url="https://example.com/v",
        now=created_at,
    )
    await repo.insert(video)
    return video


async def test_create_get_edit_delete(repo: VideoRepository, queries: VideoQueries) -> None:
    owner, clock = new_user_id(), Clock()
    video = await handlers.create_video(
        owner, title="Intro", url="https://e.com/1", repo=repo, queries=queries, now=clock
    )
    assert await handlers.get_video(video["_id"], owner, queries) == video

    edited = await handlers.update_video(
        video["_id"], owner, {"title": "Intro, v2"}, repo=repo, now=clock
    )
    assert edited["title"] == "Intro, v2"
    assert edited["url"] == "https://e.com/1"
    assert edited["updatedAt"] > edited["createdAt"] == video["createdAt"]

    await handlers.delete_video(video["_id"], owner, repo=repo, now=clock)
    with pytest.raises(VideoNotFoundError):
        await handlers.get_video(video["_id"], owner, queries)
    with pytest.raises(VideoNotFoundError):
        await handlers.delete_video(video["_id"], owner, repo=repo, now=clock)
    with pytest.raises(VideoNotFoundError):
        await handlers.update_video(video["_id"], owner, {"title": "x"}, repo=repo, now=clock)
    with pytest.raises(VideoNotFoundError):
        await handlers.record_view(video["_id"], owner, repo=repo)


async def test_another_users_video_is_not_found_and_not_changed(
    repo: VideoRepository, queries: VideoQueries, db: AsyncDatabase[Any]
) -> None:
    owner, other = new_user_id(), new_user_id()
    video = await add(repo, owner, 1)
    with pytest.raises(VideoNotFoundError):
        await handlers.get_video(video["_id"], other, queries)
    with pytest.raises(VideoNotFoundError):
        await handlers.update_video(video["_id"], other, {"title": "x"}, repo=repo)
    with pytest.raises(VideoNotFoundError):
        await handlers.record_view(video["_id"], other, repo=repo)
    with pytest.raises(VideoNotFoundError):
        await handlers.delete_video(video["_id"], other, repo=repo)
    assert await db[schema.VIDEOS].find_one({"_id": video["_id"]}) == video


async def test_concurrent_views_are_all_counted(
    repo: VideoRepository, db: AsyncDatabase[Any], backend: Backend
) -> None:
    owner = new_user_id()
    video = await add(repo, owner, 1)
    counts = await asyncio.gather(
        *(handlers.record_view(video["_id"], owner, repo=repo) for _ in range(50))
    )
    stored = await db[schema.VIDEOS].find_one({"_id": video["_id"]})
    assert stored is not None
    assert stored["updatedAt"] == video["updatedAt"]
    if backend.isolates_concurrent_updates:
        assert sorted(counts) == list(range(1, 51))
        assert stored["views"] == 50
    else:  # FerretDB: every view counted at most once, some may be lost (see conftest)
        assert all(c is not None and 1 <= c <= 50 for c in counts), counts
        assert 1 <= stored["views"] <= 50


async def collect(
    queries: VideoQueries, user_id: str, num_items: int, between: Any = None
) -> list[str]:
    """Walk every page; `between(page_number)` runs before each following page."""
    seen: list[str] = []
    cursor: str | None = None
    for number in range(1000):
        page = await queries.page(user_id, PageParams(num_items, cursor), CODEC)
        seen += [v.id for v in page.page]
        assert isinstance(page.continue_cursor, str)
        if page.is_done:
            return seen
        cursor = page.continue_cursor
        if between is not None:
            await between(number)
    raise AssertionError("the walk did not end")


async def test_pages_are_newest_first_and_stable_under_inserts_and_deletes(
    repo: VideoRepository, queries: VideoQueries
) -> None:
    owner = new_user_id()
    # Several videos share a millisecond: `_id` breaks the tie.
    videos = [await add(repo, owner, 1000 + i // 3) for i in range(23)]
    await add(repo, new_user_id(), 1005)  # someone else's
    expected = [
        v["_id"] for v in sorted(videos, key=lambda v: (v["createdAt"], v["_id"]), reverse=True)
    ]
    assert await collect(queries, owner, 5) == expected

    inserted: list[str] = []
    unseen_deleted: list[str] = []

    async def churn(number: int) -> None:
        inserted.append((await add(repo, owner, 5000 + number))["_id"])
        await repo.soft_delete(expected[-1 - number], owner, 9999)  # not reached yet
        unseen_deleted.append(expected[-1 - number])
        await repo.soft_delete(expected[number], owner, 9999)  # already seen

    walked = await collect(queries, owner, 5, churn)
    assert len(walked) == len(set(walked))
    assert walked == [i for i in expected if i not in unseen_deleted]
    assert not set(walked) & set(inserted)


async def test_an_empty_list_is_done_with_a_string_cursor(queries: VideoQueries) -> None:
    page = await queries.page(new_user_id(), PageParams(20, None), CODEC)
    assert page.page == []
    assert page.is_done is True
    assert isinstance(page.continue_cursor, str)
    again = await queries.page(new_user_id(), PageParams(20, None), CODEC)
    assert again.is_done is True


async def test_a_cursor_of_another_user_or_altered_is_refused(
    repo: VideoRepository, queries: VideoQueries
) -> None:
    owner, other = new_user_id(), new_user_id()
    for i in range(3):
        await add(repo, owner, i)
    first = await queries.page(owner, PageParams(1, None), CODEC)
    with pytest.raises(InvalidCursorError):
        await queries.page(other, PageParams(1, first.continue_cursor), CODEC)
    body, mac = first.continue_cursor.split(".")
    tampered = f"{'A' if body[0] != 'A' else 'B'}{body[1:]}.{mac}"
    with pytest.raises(InvalidCursorError):
        await queries.page(owner, PageParams(1, tampered), CODEC)
    with pytest.raises(InvalidCursorError):
        await queries.page(owner, PageParams(1, first.continue_cursor), CursorCodec("other"))


async def test_a_user_deletion_cascades_once_and_leaves_a_tombstone(
    repo: VideoRepository, queries: VideoQueries, db: AsyncDatabase[Any]
) -> None:
    gone, stays = new_user_id(), new_user_id()
    old = [await add(repo, gone, t) for t in (100, 200, 300)]
    already_deleted = await add(repo, gone, 150)
    await repo.soft_delete(already_deleted["_id"], gone, 160)
    other = await add(repo, stays, 100)

    assert await repo.delete_users([DeleteUserVideos(gone, 300)], now=300) == 3
    videos = db[schema.VIDEOS]
    for video in old:
        assert (await videos.find_one({"_id": video["_id"]}) or {})["deletedAt"] == 300
    assert (await videos.find_one({"_id": already_deleted["_id"]}) or {})["deletedAt"] == 160
    assert (await videos.find_one({"_id": other["_id"]}) or {})["deletedAt"] is None
    assert (await queries.page(gone, PageParams(20, None), CODEC)).page == []
    assert await queries.account_deleted_at(gone) == 300
    assert await queries.account_deleted_at(stays) is None

    with pytest.raises(AccountDeletedError):
        await handlers.create_video(
            gone, title="t", url="https://e.com", repo=repo, queries=queries
        )

    # A video created after the deletion was applied (a request in flight at that moment) is
    # never touched by a replay of the deletion, and the earliest deletion time is kept.
    later = await add(repo, gone, 301)
    assert await repo.delete_users([DeleteUserVideos(gone, 300)] * 2, now=900) == 0
    assert await repo.delete_users([DeleteUserVideos(gone, 250)], now=900) == 0
    assert (await videos.find_one({"_id": later["_id"]}) or {})["deletedAt"] is None
    assert await queries.account_deleted_at(gone) == 250


async def test_videos_created_before_a_late_deletion_arrived_are_removed_too(
    repo: VideoRepository, db: AsyncDatabase[Any]
) -> None:
    """Clerk deleted the user at 300; the event reached the worker at 500. A video the user
    created at 400 (its session token was still valid) goes with the rest."""
    gone = new_user_id()
    before, between = await add(repo, gone, 200), await add(repo, gone, 400)
    assert await repo.delete_users([DeleteUserVideos(gone, 300)], now=500) == 2
    videos = db[schema.VIDEOS]
    for video in (before, between):
        assert (await videos.find_one({"_id": video["_id"]}) or {})["deletedAt"] == 300
    # the cutoff is remembered: a replay processed much later touches nothing newer
    after = await add(repo, gone, 600)
    assert await repo.delete_users([DeleteUserVideos(gone, 300)], now=10_000) == 0
    assert (await videos.find_one({"_id": after["_id"]}) or {})["deletedAt"] is None


def _stages(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "stage" in node:
            yield node
        for value in node.values():
            yield from _stages(value)
    elif isinstance(node, list):
        for value in node:
            yield from _stages(value)


ID_STAGES = {"IDHACK", "EXPRESS_IXSCAN"}


async def _uses_index(
    collection: AsyncCollection[Any],
    query: dict[str, Any],
    sort: list[tuple[str, int]] | None,
    index: str,
) -> tuple[bool, list[str]]:
    cursor = collection.find(query)
    if sort:
        cursor = cursor.sort(sort).limit(21)
    plan = await cursor.explain()
    stages = list(_stages(plan["queryPlanner"]["winningPlan"]))
    used = any(
        (s["stage"] == "IXSCAN" and s.get("indexName") == index)
        or (index == schema.ID_INDEX and s["stage"] in ID_STAGES)
        for s in stages
    )
    return used, [f"{s['stage']}:{s.get('indexName', '')}" for s in stages]


ANY = 0  # a range field: either direction serves it


def _serves(key: dict[str, int], equality: set[str], ordered: list[tuple[str, int]]) -> bool:
    """Whether an index key starts with the query's equality fields (any order), then its
    sorted or ranged fields in order, sort directions all the same or all reversed."""
    fields = list(key.items())
    if {f for f, _ in fields[: len(equality)]} != equality:
        return False
    rest = fields[len(equality) : len(equality) + len(ordered)]
    if [f for f, _ in rest] != [f for f, _ in ordered]:
        return False
    pairs = [(d, want) for (_, d), (_, want) in zip(rest, ordered, strict=True) if want != ANY]
    return all(d == w for d, w in pairs) or all(d == -w for d, w in pairs)


def _fields_of(query: dict[str, Any], sort: list[tuple[str, int]] | None) -> set[str]:
    fields: set[str] = set()
    for key, value in query.items():
        if key in ("$and", "$or"):
            for part in value:
                fields |= _fields_of(part, None)
        else:
            fields.add(key)
    return fields | {f for f, _ in sort or ()}


def _equalities(query: dict[str, Any]) -> set[str]:
    """The fields `query` matches by plain equality (also inside `$and`)."""
    fields: set[str] = set()
    for key, value in query.items():
        if key == "$and":
            for part in value:
                fields |= _equalities(part)
        elif not key.startswith("$") and not (
            isinstance(value, dict) and any(k.startswith("$") for k in value)
        ):
            fields.add(key)
    return fields


#: The order `siteview_common.pagination.paginate` sorts by: newest first, `_id` breaking ties.
PAGE_SORT = [("createdAt", -1), ("_id", -1)]


async def test_every_query_shape_is_served_by_an_index(
    backend: Any, repo: VideoRepository, db: AsyncDatabase[Any]
) -> None:
    owner = new_user_id()
    videos = [await add(repo, owner, t) for t in range(1, 8)]
    await add(repo, new_user_id(), 3)
    await repo.delete_users([DeleteUserVideos(new_user_id(), 5)], now=5)
    live = schema.live_videos_of(owner)
    after = keyset_after(schema.SORT_FIELD, Position(4, videos[3]["_id"]))
    by_user = {"userId", "deletedAt"}
    # (collection, filter the code sends, its sort, the index it must use, and the index key
    # prefix that serves it: equality fields, then sorted or ranged fields)
    shapes = [
        (schema.VIDEOS, live, PAGE_SORT, schema.LIVE_BY_USER_INDEX, (by_user, PAGE_SORT)),
        (
            schema.VIDEOS,
            {"$and": [live, after]},
            PAGE_SORT,
            schema.LIVE_BY_USER_INDEX,
            (by_user, PAGE_SORT),
        ),
        (
            schema.VIDEOS,
            schema.deleted_with_user(owner, 5),
            None,
            schema.LIVE_BY_USER_INDEX,
            (by_user, [("createdAt", ANY)]),
        ),
        (
            schema.VIDEOS,
            schema.live_video(videos[2]["_id"], owner),
            None,
            schema.ID_INDEX,
            ({"_id"}, []),
        ),
        (schema.DELETED_USERS, schema.tombstone(owner), None, schema.ID_INDEX, ({"_id"}, [])),
    ]
    for name, query, sort, index, (equality, ordered) in shapes:
        collection = db[name]
        if backend.is_mongodb:
            used, plan = await _uses_index(collection, query, sort, index)
            assert used, f"{name} {query} sort={sort}: expected IXSCAN on {index}, got {plan}"
            continue
        # The stand-in has no query planner, and FerretDB's explain is SQLite's plan (it
        # pushes no filter down to these indexes): the index must exist with a key prefix made
        # of the query's own fields, in the order (and sort directions) the query needs.
        assert equality <= _equalities(query), (name, query)
        assert {f for f, _ in ordered} <= _fields_of(query, sort), (name, query)
        keys = {i["name"]: dict(i["key"]) async for i in await collection.list_indexes()}
        assert index in keys, f"{name}: no index {index} in {keys}"
        assert _serves(keys[index], equality, ordered), f"{name}: {keys[index]} serves not {query}"
