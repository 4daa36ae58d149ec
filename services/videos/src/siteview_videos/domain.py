"""The videos service's rules, as pure functions: what a valid video is, and what a Clerk user
event means for a user's videos.

Deletion is soft: a deleted video keeps its document with `deletedAt` set and answers 404
everywhere. A Clerk user's deletion is final: their live videos are soft-deleted and a tombstone
(the user id, Clerk's deletion time and when this service first applied it) stays behind. The
tombstone refuses new videos from that account, and bounds every replay of the deletion to
videos created up to `cascade_cutoff`, so a replay never reaches a video the first application
could not have seen.

Splats (3D Gaussian splats of a video, reconstructed by a GPU pipeline outside this service)
follow the rules at the end of this module.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from siteview_common.changes import Change
from siteview_common.events import USER_DELETED, PublishedEvent, user_deletion

MAX_TITLE_LENGTH = 200
MAX_URL_LENGTH = 2048
URL_SCHEMES = frozenset({"http", "https"})


class VideoNotFoundError(LookupError):
    """No live video with this id belongs to the caller (whether it exists is not revealed)."""


class AccountDeletedError(PermissionError):
    """The caller's Clerk account was deleted: it may not add videos any more."""


def now_ms() -> int:
    return int(time.time() * 1000)


def new_video_id() -> str:
    return uuid.uuid4().hex


def clean_title(value: str) -> str:
    """The title without surrounding whitespace: 1 to 200 characters."""
    title = value.strip()
    if not title:
        raise ValueError("title must not be blank")
    if len(title) > MAX_TITLE_LENGTH:
        raise ValueError(f"title must be at most {MAX_TITLE_LENGTH} characters")
    return title


def clean_url(value: str) -> str:
    """The URL without surrounding whitespace: absolute http(s) with a host, ≤ 2048 characters."""
    url = value.strip()
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"url must be at most {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise ValueError("url must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a malformed port
    except ValueError as exc:
        raise ValueError("url is not a valid URL") from exc
    if parts.scheme.lower() not in URL_SCHEMES or not parts.hostname:
        raise ValueError("url must be an absolute http or https URL")
    return url


def new_video(*, video_id: str, user_id: str, title: str, url: str, now: int) -> dict[str, Any]:
    """The stored document of a new, live video."""
    return {
        "_id": video_id,
        "userId": user_id,
        "title": title,
        "url": url,
        "views": 0,
        "createdAt": now,
        "updatedAt": now,
        "deletedAt": None,
    }


def edit(changes: dict[str, Any], *, now: int) -> dict[str, Any]:
    """The fields an edit sets: the changed title and/or url, and `updatedAt`."""
    allowed = {k: v for k, v in changes.items() if k in ("title", "url")}
    if not allowed:
        raise ValueError("an edit changes the title, the url or both")
    return {**allowed, "updatedAt": now}


def ensure_may_create(account_deleted_at: int | None) -> None:
    """A deleted account adds no videos."""
    if account_deleted_at is not None:
        raise AccountDeletedError("account deleted")


@dataclass(frozen=True, slots=True)
class DeleteUserVideos:
    """Close the user's account and soft-delete their live videos (see `cascade_cutoff`)."""

    user_id: str
    deleted_at: int


def to_command(published: PublishedEvent) -> DeleteUserVideos | None:
    """The command a published event asks of this service, or None if it is none of ours: only
    `user.deleted` is (a deletion without a user id can never apply, so it is poison)."""
    if published.event.type != USER_DELETED:
        return None
    deletion = user_deletion(published)
    return DeleteUserVideos(user_id=deletion.user_id, deleted_at=deletion.deleted_at)


def cascade_cutoff(deleted_at: int, first_applied_at: int | None) -> int:
    """Up to when a user's videos are removed: Clerk's deletion time, or, when the deletion
    reached this service later, the moment it first did. Videos created in between (a session
    token outlives its user by up to a minute, and the worker may lag) go too; after that
    moment the tombstone refuses new videos, so a replay has nothing newer to touch."""
    return max(deleted_at, first_applied_at or deleted_at)


def touched(commands: Sequence[DeleteUserVideos]) -> list[Change]:
    """A deleted user's cascade changes their list, and their splats; which videos or splats
    it removed is not read back (`ids` is empty: any of the user's)."""
    return [Change(c.user_id, kind) for c in commands for kind in ("videos", "splats")]


def video_changed(user_id: str, video_id: str) -> Change:
    """One of the API's own writes: created, edited, deleted or viewed."""
    return Change(user_id, "videos", video_id)


def splat_changed(user_id: str, splat_id: str | None = None) -> Change:
    """A splat was requested, reported on, failed or deleted (`splat_id` None: some of the
    user's splats, as when a video's are deleted with it)."""
    return Change(user_id, "splats", splat_id)


# --- Splats ----------------------------------------------------------------------------------
#
# A splat is requested for one of the caller's videos and is then `queued` (its job is on its
# way to the pipeline), `processing` (the pipeline reports progress), and finally `ready`
# (with its result) or `failed` (with the pipeline's error, or `timeout` when the pipeline
# stopped reporting). Ready and failed are final. The pipeline's reports apply in the order of
# their `at`, never of their arrival. Deletion is soft, as for videos; deleting a splat that is
# not finished owes the pipeline a cancellation, kept on the splat until it was published.

QUEUED = "queued"
PROCESSING = "processing"
READY = "ready"
FAILED = "failed"
OPEN_STATUSES = (QUEUED, PROCESSING)
FINAL_STATUSES = (READY, FAILED)

Quality = Literal["preview", "full"]
DEFAULT_QUALITY: Quality = "preview"

ReportedStatus = Literal["processing", "ready", "failed"]
CancelReason = Literal["deleted", "video_deleted", "user_deleted", "timeout"]

#: The error code of a splat failed by the timeout sweep.
TIMEOUT_ERROR = "timeout"
#: `statusAt` of a splat no report has reached yet: any report is newer.
NO_REPORT_AT = -1


class SplatNotFoundError(LookupError):
    """No live splat with this id belongs to the caller (whether it exists is not revealed)."""


class IdempotencyConflictError(ValueError):
    """The caller used this Idempotency-Key for another request (another video or quality)."""


class TooManyOpenSplatsError(Exception):
    """The caller has as many queued or processing splats as one may have."""


def new_splat_id(user_id: str, idempotency_key: str | None) -> str:
    """A new splat's id (32 hex digits): random, or, for a request with an Idempotency-Key,
    derived from the user and the key, so that the same request made again finds the splat its
    first attempt stored, and two at once meet on the unique `_id`."""
    if idempotency_key is None:
        return uuid.uuid4().hex
    seed = f"{user_id}\n{idempotency_key}".encode()
    return hashlib.blake2b(seed, digest_size=16).hexdigest()


def new_splat(
    *, splat_id: str, video: dict[str, Any], quality: Quality, now: int
) -> dict[str, Any]:
    """The stored document of a splat just requested for `video` (its job not published yet;
    the video's URL as it is now goes into the job)."""
    return {
        "_id": splat_id,
        "videoId": video["_id"],
        "userId": video["userId"],
        "videoUrl": video["url"],
        "quality": quality,
        "status": QUEUED,
        "progress": 0,
        "result": None,
        "error": None,
        "statusAt": NO_REPORT_AT,
        "createdAt": now,
        "updatedAt": now,
        "deletedAt": None,
        "jobPublishedAt": None,
        "cancelReason": None,
        "cancelledAt": None,
        "cancelPublishedAt": None,
    }


def as_first_answered(splat: dict[str, Any]) -> dict[str, Any]:
    """The splat as its request first answered it (queued, nothing reported yet): what the
    same request repeated with its Idempotency-Key answers, whatever happened since."""
    return {
        **splat,
        "status": QUEUED,
        "progress": 0,
        "result": None,
        "error": None,
        "updatedAt": splat["createdAt"],
    }


def ensure_same_request(splat: dict[str, Any], *, video_id: str, quality: Quality) -> None:
    """A repeated Idempotency-Key must repeat the request: the same video and quality."""
    if (splat["videoId"], splat["quality"]) != (video_id, quality):
        raise IdempotencyConflictError("Idempotency-Key already used for another request")


def ensure_within_limit(open_splats: int, limit: int) -> None:
    """`open_splats` (queued or processing, the new one included) may not exceed `limit`."""
    if open_splats > limit:
        raise TooManyOpenSplatsError(f"at most {limit} splats may be queued or processing")


def job_unpublished(splat: dict[str, Any]) -> bool:
    """A live, queued splat whose job request has not reached the broker yet."""
    return (
        splat["deletedAt"] is None and splat["status"] == QUEUED and splat["jobPublishedAt"] is None
    )


def cancellation(reason: CancelReason, now: int) -> dict[str, Any]:
    """The fields that owe the pipeline a cancellation (published later, then marked)."""
    return {"cancelReason": reason, "cancelledAt": now, "cancelPublishedAt": None}


@dataclass(frozen=True, slots=True)
class SplatReport:
    """One status report of the pipeline, validated (`views.SplatStatusMessage`)."""

    splat_id: str
    status: ReportedStatus
    progress: int
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    at: int

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def dedupe_id(self) -> str:
        """The ledger's id: the same report sent twice is applied once."""
        return f"splat-status:{self.splat_id}:{self.status}:{self.at}:{self.progress}"

    def order(self) -> tuple[int, bool, int]:
        """Newer reports sort later: a later `at`; at the same `at`, a final report after a
        processing one, and more progress after less."""
        return (self.at, self.final, self.progress)


def newest_reports(reports: Sequence[SplatReport]) -> list[SplatReport]:
    """Each splat's newest report of `reports` (of equals, the first)."""
    newest: dict[str, SplatReport] = {}
    for report in reports:
        held = newest.get(report.splat_id)
        if held is None or report.order() > held.order():
            newest[report.splat_id] = report
    return list(newest.values())


def supersedes(report: SplatReport, splat: dict[str, Any]) -> bool:
    """Whether `report` changes the stored `splat`: only a live splat that is not finished
    changes; a final report applies from the same `at` on, a processing one needs a later
    `at`, or more progress at the same `at` (`schema.superseded_by` is this as a filter)."""
    if splat["deletedAt"] is not None or splat["status"] not in OPEN_STATUSES:
        return False
    if report.final:
        return bool(splat["statusAt"] <= report.at)
    return bool(
        splat["statusAt"] < report.at
        or (splat["statusAt"] == report.at and splat["progress"] < report.progress)
    )


def reported(report: SplatReport, now: int) -> dict[str, Any]:
    """The fields a report sets."""
    return {
        "status": report.status,
        "progress": report.progress,
        "result": report.result,
        "error": report.error,
        "statusAt": report.at,
        "updatedAt": now,
    }


def ready_seconds(splat: dict[str, Any], report: SplatReport) -> float:
    """From the request to the pipeline's report that the splat is ready."""
    return max(0, report.at - int(splat["createdAt"])) / 1000


def stalled_since(now: int, timeout_seconds: float) -> int:
    """An open splat unchanged since this moment (ms) has timed out."""
    return now - int(timeout_seconds * 1000)


def timed_out(now: int, timeout_seconds: float) -> dict[str, Any]:
    """The fields that fail a splat the pipeline stopped reporting on, and owe it a
    cancellation."""
    return {
        "status": FAILED,
        "result": None,
        "error": {
            "code": TIMEOUT_ERROR,
            "message": f"no report from the pipeline for {timeout_seconds:g} seconds",
        },
        "updatedAt": now,
        **cancellation("timeout", now),
    }
