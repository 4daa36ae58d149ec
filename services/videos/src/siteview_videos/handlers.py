"""Use cases of the videos service, with their dependencies passed in."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Histogram

from siteview_common.changes import Change
from siteview_common.consumer import Decoded
from siteview_common.events import Topics
from siteview_common.pagination import CursorCodec, Page, PageParams
from siteview_videos import domain
from siteview_videos.domain import (
    DeleteUserVideos,
    Quality,
    SplatNotFoundError,
    SplatReport,
    VideoNotFoundError,
    to_command,
)
from siteview_videos.queries import SplatQueries, VideoQueries
from siteview_videos.repository import SplatRepository, VideoRepository
from siteview_videos.views import (
    SplatCancelled,
    SplatRequested,
    SplatStatusMessage,
    SplatView,
    VideoView,
)

log = logging.getLogger(__name__)

Clock = Callable[[], int]

parse = to_command


async def apply_user_events(
    commands: Sequence[DeleteUserVideos],
    repo: VideoRepository,
    now: Clock = domain.now_ms,
    splats: Splats | None = None,
) -> None:
    """Clerk's user deletions: the users' videos, then (`splats`) their splats, whose
    cancellations are then published (or left to the outbox)."""
    deleted = await repo.delete_users(commands, now())
    log.info("deleted users' videos", extra={"users": len(commands), "videos": deleted})
    if splats is not None and commands:
        removed = await splats.repo.delete_users(commands, now())
        log.info("deleted users' splats", extra={"users": len(commands), "splats": removed})
        users = {"userId": {"$in": [c.user_id for c in commands]}}
        await _cancel_soon(await splats.queries.cancels_unpublished(now(), users), splats, now)


async def create_video(
    user_id: str,
    *,
    title: str,
    url: str,
    repo: VideoRepository,
    queries: VideoQueries,
    now: Clock = domain.now_ms,
) -> dict[str, Any]:
    domain.ensure_may_create(await queries.account_deleted_at(user_id))
    video = domain.new_video(
        video_id=domain.new_video_id(), user_id=user_id, title=title, url=url, now=now()
    )
    await repo.insert(video)
    return video


async def get_video(video_id: str, user_id: str, queries: VideoQueries) -> dict[str, Any]:
    doc = await queries.get(video_id, user_id)
    if doc is None:
        raise VideoNotFoundError(video_id)
    return doc


async def list_videos(
    user_id: str, params: PageParams, *, queries: VideoQueries, codec: CursorCodec
) -> Page[VideoView]:
    return await queries.page(user_id, params, codec)


async def update_video(
    video_id: str,
    user_id: str,
    changes: dict[str, Any],
    *,
    repo: VideoRepository,
    now: Clock = domain.now_ms,
) -> dict[str, Any]:
    doc = await repo.update(video_id, user_id, domain.edit(changes, now=now()))
    if doc is None:
        raise VideoNotFoundError(video_id)
    return doc


async def delete_video(
    video_id: str,
    user_id: str,
    *,
    repo: VideoRepository,
    now: Clock = domain.now_ms,
    splats: Splats | None = None,
) -> None:
    """Delete the caller's video and (`splats`) its splats. The splats go even when the video
    was deleted already: a deletion that failed between the two is completed by its retry."""
    deleted = await repo.soft_delete(video_id, user_id, now())
    if splats is not None:
        await splats.repo.delete_video_splats(video_id, user_id, now())
        scope = {"videoId": video_id, "userId": user_id}
        await _cancel_soon(await splats.queries.cancels_unpublished(now(), scope), splats, now)
    if not deleted:
        raise VideoNotFoundError(video_id)


async def record_view(video_id: str, user_id: str, *, repo: VideoRepository) -> int:
    views = await repo.add_view(video_id, user_id)
    if views is None:
        raise VideoNotFoundError(video_id)
    return views


# --- Splats ----------------------------------------------------------------------------------

REQUESTED = Counter(
    "siteview_splats_requested_total",
    "Splats requested (once each, however often the request is repeated with its key)",
)
COMPLETED = Counter("siteview_splats_completed_total", "Splats the pipeline reported ready")
FAILED = Counter(
    "siteview_splats_failed_total",
    "Splats that failed, by reason: pipeline (it reported the failure) or timeout (no report "
    "for SPLATS_TIMEOUT_SECONDS)",
    ["reason"],
)
READY_SECONDS = Histogram(
    "siteview_splat_ready_seconds",
    "From a splat's request to the pipeline's report that it is ready",
    buckets=(5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200),
)
IGNORED_REPORTS = Counter(
    "siteview_splat_reports_ignored_total",
    "Status reports for a splat that does not exist or was deleted (ignored)",
)

#: Sends one record (topic, value, key); returns once the broker acknowledged it.
Publish = Callable[[str, bytes, bytes], Awaitable[object]]
#: Publishes the change notices of a worker's writes (`ChangePublisher.publish`); raises when
#: the broker does not acknowledge them.
Notify = Callable[[Iterable[Change]], Awaitable[object]]


class JobQueueUnavailableError(Exception):
    """The job request could not be published now. The splat is stored: the worker's outbox
    publishes it shortly, and the request repeated with its Idempotency-Key completes it."""


class IdempotencyKeyInUseError(Exception):
    """Another request with the same Idempotency-Key is being answered at this moment."""


class SplatJobs:
    """The job topic, as the pipeline reads it: requests and cancellations, keyed by the user
    id (one user's jobs stay in order)."""

    def __init__(self, publish: Publish) -> None:
        self._publish = publish

    async def request(self, splat: dict[str, Any]) -> None:
        await self._send(splat, SplatRequested.of(splat).to_json())

    async def cancel(self, splat: dict[str, Any]) -> None:
        await self._send(splat, SplatCancelled.of(splat).to_json())

    async def _send(self, splat: dict[str, Any], value: bytes) -> None:
        await self._publish(Topics.SPLAT_JOBS, value, str(splat["userId"]).encode())


@dataclass(frozen=True, slots=True)
class Splats:
    """What the splat use cases work with."""

    repo: SplatRepository
    queries: SplatQueries
    jobs: SplatJobs


async def request_splat(
    user_id: str,
    video_id: str,
    *,
    quality: Quality,
    idempotency_key: str | None,
    splats: Splats,
    videos: VideoQueries,
    max_open: int,
    now: Clock = domain.now_ms,
) -> dict[str, Any]:
    """Store a splat for the caller's video, then publish its job and mark it published (the
    outbox: a failure in between leaves `jobPublishedAt` null, and the worker publishes it).
    With an Idempotency-Key, a request made again answers what the first one answered and
    publishes nothing new (except a job its first attempt could not publish)."""
    splat_id = domain.new_splat_id(user_id, idempotency_key)
    if idempotency_key is not None:
        earlier = await splats.queries.get_any(splat_id, user_id)
        if earlier is not None:
            return await _repeated(earlier, video_id, quality, splats, now)
    video = await _ensure_may_request(user_id, video_id, videos, splats, max_open, also_new=True)
    splat = domain.new_splat(splat_id=splat_id, video=video, quality=quality, now=now())
    if not await splats.repo.insert(splat):  # the same key, at the same moment
        earlier = await splats.queries.get_any(splat_id, user_id)
        if earlier is None:
            raise IdempotencyKeyInUseError(splat_id)
        return await _repeated(earlier, video_id, quality, splats, now)
    try:
        # Again, now that it is stored: a deletion of the video or the account that ran
        # meanwhile either saw this splat (and deleted it) or is seen here.
        await _ensure_may_request(user_id, video_id, videos, splats, max_open, also_new=False)
    except Exception:
        await splats.repo.withdraw(splat_id)
        raise
    REQUESTED.inc()
    await _publish_job(splat, splats, now)
    return splat


async def _ensure_may_request(
    user_id: str,
    video_id: str,
    videos: VideoQueries,
    splats: Splats,
    max_open: int,
    *,
    also_new: bool,
) -> dict[str, Any]:
    """The account is not deleted, the video is the caller's and live (returned), and the
    caller's open splats (`also_new`: with the one about to be stored) are within the limit."""
    domain.ensure_may_create(await videos.account_deleted_at(user_id))
    video = await videos.get(video_id, user_id)
    if video is None:
        raise VideoNotFoundError(video_id)
    open_splats = await splats.queries.count_open(user_id) + int(also_new)
    domain.ensure_within_limit(open_splats, max_open)
    return video


async def _repeated(
    earlier: dict[str, Any], video_id: str, quality: Quality, splats: Splats, now: Clock
) -> dict[str, Any]:
    domain.ensure_same_request(earlier, video_id=video_id, quality=quality)
    if domain.job_unpublished(earlier):
        await _publish_job(earlier, splats, now)
    return domain.as_first_answered(earlier)


async def _publish_job(splat: dict[str, Any], splats: Splats, now: Clock) -> None:
    try:
        await splats.jobs.request(splat)
    except Exception as exc:
        log.warning(
            "splat job not published; the outbox will",
            extra={"splatId": splat["_id"], "error": f"{type(exc).__name__}: {exc}"},
        )
        raise JobQueueUnavailableError(splat["_id"]) from exc
    await splats.repo.mark_jobs_published([splat["_id"]], now())


async def get_splat(splat_id: str, user_id: str, queries: SplatQueries) -> dict[str, Any]:
    doc = await queries.get(splat_id, user_id)
    if doc is None:
        raise SplatNotFoundError(splat_id)
    return doc


async def list_splats(
    video_id: str,
    user_id: str,
    params: PageParams,
    *,
    queries: SplatQueries,
    videos: VideoQueries,
    codec: CursorCodec,
) -> Page[SplatView]:
    """A page of the splats of one of the caller's live videos."""
    if await videos.get(video_id, user_id) is None:
        raise VideoNotFoundError(video_id)
    return await queries.page(video_id, user_id, params, codec)


async def delete_splat(
    splat_id: str, user_id: str, *, splats: Splats, now: Clock = domain.now_ms
) -> None:
    """Delete the caller's splat; one not finished is cancelled."""
    doc = await splats.repo.soft_delete(splat_id, user_id, now())
    if doc is None:
        raise SplatNotFoundError(splat_id)
    await _cancel_soon([doc], splats, now)


async def publish_cancels(owed: Sequence[dict[str, Any]], splats: Splats, now: Clock) -> int:
    """Publish the cancellations `owed` (splats with `cancelReason` whose cancellation was not
    published) and mark them published; raises when the broker does not acknowledge."""
    owed = [s for s in owed if s["cancelReason"] is not None and s["cancelPublishedAt"] is None]
    if not owed:
        return 0
    await asyncio.gather(*(splats.jobs.cancel(s) for s in owed))
    await splats.repo.mark_cancels_published([s["_id"] for s in owed], now())
    return len(owed)


async def _cancel_soon(owed: Sequence[dict[str, Any]], splats: Splats, now: Clock) -> None:
    """`publish_cancels`, where a failure only delays them: they stay owed, and the worker's
    outbox publishes them."""
    try:
        await publish_cancels(owed, splats, now)
    except Exception as exc:
        log.warning(
            "splat cancellations not published; the outbox will",
            extra={"splats": len(owed), "error": f"{type(exc).__name__}: {exc}"},
        )


def decode_status(value: bytes) -> Decoded[SplatReport]:
    """A record of the status topic: a `SplatStatusMessage` (anything else is poison),
    deduped by its content, its `at` the moment it entered the system."""
    report = SplatStatusMessage.model_validate_json(value).report()
    return Decoded(report.dedupe_id, report, report.at)


async def apply_reports(
    reports: Sequence[SplatReport],
    *,
    splats: Splats,
    notify: Notify | None = None,
    now: Clock = domain.now_ms,
) -> int:
    """Apply a batch of the pipeline's reports: each splat's newest, when it supersedes what
    is stored (one unordered write). Reports for unknown or deleted splats are ignored (and
    counted). Then (`notify`) the change notices of every splat reported on, applied or
    not: a redelivered batch finds its reports stale and still tells the live streams.
    Returns how many reports did not apply (stale, or ignored)."""
    newest = domain.newest_reports(reports)
    stored = await splats.queries.by_ids([r.splat_id for r in newest])
    known = [r for r in newest if r.splat_id in stored and stored[r.splat_id]["deletedAt"] is None]
    IGNORED_REPORTS.inc(len(newest) - len(known))
    changing = [r for r in known if domain.supersedes(r, stored[r.splat_id])]
    applied = await splats.repo.apply_reports(changing, now())
    final = [r for r in changing if r.final]
    if final and applied != len(changing):  # another writer won some: count only ours
        after = await splats.queries.by_ids([r.splat_id for r in final])
        final = [
            r
            for r in final
            if (s := after.get(r.splat_id)) is not None
            and (s["status"], s["statusAt"]) == (r.status, r.at)
        ]
    for report in final:
        if report.status == domain.READY:
            COMPLETED.inc()
            READY_SECONDS.observe(domain.ready_seconds(stored[report.splat_id], report))
        else:
            FAILED.labels("pipeline").inc()
    if notify is not None:
        await notify(domain.splat_changed(stored[r.splat_id]["userId"], r.splat_id) for r in known)
    return len(reports) - applied


async def sweep_timeouts(
    splats: Splats,
    *,
    timeout_seconds: float,
    notify: Notify | None = None,
    now: Clock = domain.now_ms,
) -> int:
    """Fail the open splats that have not changed for `timeout_seconds`, each by a conditional
    update (several sweepers at once fail it once), cancel their jobs and (`notify`) tell
    the live streams."""
    at = now()
    stalled = await splats.queries.stalled(domain.stalled_since(at, timeout_seconds))
    failed = [s["_id"] for s in stalled if await splats.repo.fail_stalled(s, at, timeout_seconds)]
    if failed:
        FAILED.labels("timeout").inc(len(failed))
        log.info("splats timed out", extra={"splats": len(failed)})
        timed_out = await splats.queries.by_ids(failed)
        await _cancel_soon(list(timed_out.values()), splats, now)
        if notify is not None:
            await notify(domain.splat_changed(s["userId"], s["_id"]) for s in timed_out.values())
    return len(failed)


async def flush_outbox(splats: Splats, *, grace_seconds: float, now: Clock = domain.now_ms) -> int:
    """Publish the job requests and cancellations still unpublished `grace_seconds` after they
    were stored (their writer failed or stopped before the broker acknowledged them), and mark
    them; raises when the broker does not acknowledge (the next round tries again)."""
    before = now() - int(grace_seconds * 1000)
    jobs = await splats.queries.jobs_unpublished(before)
    if jobs:
        await asyncio.gather(*(splats.jobs.request(s) for s in jobs))
        await splats.repo.mark_jobs_published([s["_id"] for s in jobs], now())
    cancels = await publish_cancels(await splats.queries.cancels_unpublished(before), splats, now)
    if jobs or cancels:
        log.info("published from the outbox", extra={"jobs": len(jobs), "cancels": cancels})
    return len(jobs) + cancels
