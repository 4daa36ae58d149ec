"""The splats' write and read sides against the session's MongoDB (real, FerretDB or the
stand-in), one fresh database per test: guarded report updates, the conditional timeout,
the cascades and the outbox queries."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from conftest import Backend
from siteview_videos import domain, schema
from siteview_videos.domain import DeleteUserVideos, SplatReport
from siteview_videos.queries import SplatQueries
from siteview_videos.repository import SplatRepository, VideoRepository
from support import new_user_id

NOW = 1_776_000_000_000
RESULT = {"url": "https://cdn.example.com/s.ply", "format": "ply", "sizeBytes": 1, "gaussians": 1}


@pytest.fixture
async def repo(db: AsyncDatabase[Any]) -> SplatRepository:
    await schema.create_indexes(db)
    return SplatRepository(db)


@pytest.fixture
def queries(db: AsyncDatabase[Any]) -> SplatQueries:
    return SplatQueries(db)


async def add(
    repo: SplatRepository, user_id: str, video_id: str = "v1", **fields: Any
) -> dict[str, Any]:
    video = {"_id": video_id, "userId": user_id, "url": "https://example.com/v"}
    splat = domain.new_splat(splat_id=uuid.uuid4().hex, video=video, quality="preview", now=NOW)
    splat.update(fields)
    assert await repo.insert(splat)
    return splat


def report(splat_id: str, status: str, at: int, progress: int) -> SplatReport:
    return SplatReport(
        splat_id,
        status,  # type: ignore[arg-type]
        progress,
        RESULT if status == "ready" else None,
        {"code": "x", "message": "y"} if status == "failed" else None,
        at,
    )


async def test_reports_apply_only_when_they_supersede(
    repo: SplatRepository, queries: SplatQueries
) -> None:
    user = new_user_id()
    a, b, c = [await add(repo, user) for _ in range(3)]
    assert await repo.apply_reports([report(a["_id"], "processing", 10, 50)], NOW + 1) == 1
    batch = [
        report(a["_id"], "processing", 9, 90),  # older: stale
        report(b["_id"], "ready", 5, 100),
        report(c["_id"], "processing", 0, 0),
    ]
    assert await repo.apply_reports(batch, NOW + 2) == 2
    assert await repo.apply_reports(batch, NOW + 3) == 0  # the same again: nothing
    assert await repo.apply_reports([report(b["_id"], "processing", 99, 10)], NOW + 4) == 0
    stored = await queries.by_ids([a["_id"], b["_id"], c["_id"]])
    assert (stored[a["_id"]]["status"], stored[a["_id"]]["progress"]) == ("processing", 50)
    assert (stored[b["_id"]]["status"], stored[b["_id"]]["result"]) == ("ready", RESULT)
    assert stored[b["_id"]]["updatedAt"] == NOW + 2
    assert (stored[c["_id"]]["status"], stored[c["_id"]]["statusAt"]) == ("processing", 0)


async def test_a_timeout_fails_a_splat_once_however_many_sweepers_race(
    repo: SplatRepository, queries: SplatQueries, backend: Backend
) -> None:
    splat = await add(repo, new_user_id())
    [stalled] = await queries.stalled(domain.stalled_since(NOW + 10_000, 5))
    assert stalled["_id"] == splat["_id"]
    outcomes = await asyncio.gather(
        *(repo.fail_stalled(stalled, NOW + 10_000, 5) for _ in range(8))
    )
    if backend.isolates_concurrent_updates:
        assert sorted(outcomes) == [False] * 7 + [True]
    else:  # FerretDB does not isolate concurrent updates of one document: at least one
        assert any(outcomes)
    [failed] = (await queries.by_ids([splat["_id"]])).values()
    assert (failed["status"], failed["error"]["code"]) == ("failed", "timeout")
    assert (failed["cancelReason"], failed["cancelPublishedAt"]) == ("timeout", None)
    assert await queries.stalled(NOW + 20_000) == []
    # A splat changed since it was read is not failed.
    fresh = await add(repo, new_user_id())
    await repo.apply_reports([report(fresh["_id"], "processing", 1, 1)], NOW + 1)
    assert not await repo.fail_stalled(fresh, NOW + 10_000, 5)


async def test_deleting_a_splat_owes_a_cancellation_only_when_not_finished(
    repo: SplatRepository, queries: SplatQueries
) -> None:
    user = new_user_id()
    open_one = await add(repo, user)
    done = await add(repo, user)
    await repo.apply_reports([report(done["_id"], "ready", 1, 100)], NOW + 1)
    deleted = await repo.soft_delete(open_one["_id"], user, NOW + 2)
    assert deleted is not None and deleted["cancelReason"] == "deleted"
    finished = await repo.soft_delete(done["_id"], user, NOW + 2)
    assert finished is not None and finished["cancelReason"] is None
    assert await repo.soft_delete(open_one["_id"], user, NOW + 3) is None
    assert await repo.soft_delete(done["_id"], new_user_id(), NOW + 3) is None
    owed = await queries.cancels_unpublished(NOW + 5)
    assert [s["_id"] for s in owed] == [open_one["_id"]]
    await repo.mark_cancels_published([open_one["_id"]], NOW + 6)
    assert await queries.cancels_unpublished(NOW + 7) == []


async def test_the_cascades_delete_a_videos_or_a_users_splats(
    db: AsyncDatabase[Any], repo: SplatRepository, queries: SplatQueries
) -> None:
    user, bystander = new_user_id(), new_user_id()
    of_video = await add(repo, user, "v1")
    other_video = await add(repo, user, "v2")
    theirs = await add(repo, bystander, "v3")
    assert await repo.delete_video_splats("v1", user, NOW + 1) == 1
    assert await repo.delete_video_splats("v1", user, NOW + 2) == 0  # idempotent
    assert await queries.get(of_video["_id"], user) is None
    assert await queries.get(other_video["_id"], user) is not None

    await VideoRepository(db).delete_users([DeleteUserVideos(user, NOW + 10)], NOW + 11)
    assert await repo.delete_users([DeleteUserVideos(user, NOW + 10)], NOW + 11) == 1
    assert await repo.delete_users([DeleteUserVideos(user, NOW + 10)], NOW + 12) == 0
    gone = (await queries.by_ids([other_video["_id"]]))[other_video["_id"]]
    assert (gone["deletedAt"], gone["cancelReason"]) == (NOW + 10, "user_deleted")
    assert await queries.get(theirs["_id"], bystander) is not None
    owed = {s["_id"]: s["cancelReason"] for s in await queries.cancels_unpublished(NOW + 20)}
    assert owed == {of_video["_id"]: "video_deleted", other_video["_id"]: "user_deleted"}
    assert await queries.count_open(user) == 0
    assert await queries.count_open(bystander) == 1


async def test_the_outbox_finds_unpublished_jobs_after_their_grace(
    repo: SplatRepository, queries: SplatQueries
) -> None:
    user = new_user_id()
    waiting = await add(repo, user)
    published = await add(repo, user, jobPublishedAt=NOW)
    await add(repo, user, deletedAt=NOW)
    assert await queries.jobs_unpublished(NOW - 1) == []
    assert [s["_id"] for s in await queries.jobs_unpublished(NOW)] == [waiting["_id"]]
    await repo.mark_jobs_published([waiting["_id"]], NOW + 1)
    assert await queries.jobs_unpublished(NOW + 5) == []
    assert published["_id"] != waiting["_id"]
    # A request refused after its splat was stored takes it back.
    await repo.withdraw(waiting["_id"])
    assert await queries.by_ids([waiting["_id"]]) != {}  # published: never withdrawn
    refused = await add(repo, user)
    await repo.withdraw(refused["_id"])
    assert await queries.by_ids([refused["_id"]]) == {}
    assert not await repo.insert({**published})  # the same id: refused, not raised
