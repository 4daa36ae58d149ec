"""Change notices: which of a user's documents a write touched, so every API replica can push
the new value to that user's live streams (`siteview_common.live`).

A notice carries ids, never data: `{"userId", "service", "collection", "ids", "at"}` on
`siteview.changes.v1`, keyed by the Clerk user id. A worker publishes one per (user,
collection) its batch touched, after the batch applied and before its offsets commit, so a
failed publish fails the batch (redelivered; applying is idempotent). The videos API publishes
one after each of its own writes. Notices may be stale or repeated: a receiver re-reads the
value and pushes only when it changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from siteview_common.events import Topics

log = logging.getLogger(__name__)

C = TypeVar("C")

Collection = Literal["users", "payment_attempts", "subscriptions", "videos", "splats"]
Service = Literal["users", "payments", "videos"]

#: The service that owns each collection (and so publishes its notices).
SERVICE_OF: dict[str, Service] = {
    "users": "users",
    "payment_attempts": "payments",
    "subscriptions": "payments",
    "videos": "videos",
    "splats": "videos",
}


@dataclass(frozen=True, slots=True)
class Change:
    """One document of `user_id`'s in `collection` was written; `doc_id` None: some of the
    user's documents there, which ones unknown (the videos cascade on `user.deleted`)."""

    user_id: str
    collection: Collection
    doc_id: str | None = None


#: A service's pure rule: the changes a batch of its commands makes.
Changes = Callable[[Sequence[C]], Iterable[Change]]


class ChangeNotice(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True)

    user_id: str = Field(alias="userId", min_length=1)
    service: Service
    collection: Collection
    ids: list[str]
    #: When it was published, in ms since the epoch.
    at: int

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


def now_ms() -> int:
    return int(time.time() * 1000)


def notices(changes: Iterable[Change], at: int) -> list[ChangeNotice]:
    """One notice per (user, collection), its ids merged in the order they came, each once."""
    grouped: dict[tuple[str, Collection], list[str]] = {}
    for change in changes:
        ids = grouped.setdefault((change.user_id, change.collection), [])
        if change.doc_id is not None and change.doc_id not in ids:
            ids.append(change.doc_id)
    return [
        ChangeNotice(
            user_id=user_id,
            service=SERVICE_OF[collection],
            collection=collection,
            ids=ids,
            at=at,
        )
        for (user_id, collection), ids in grouped.items()
    ]


#: Hands one record (topic, value, key) to a producer; the future resolves on the broker's ack.
Send = Callable[[str, bytes, bytes], Awaitable["asyncio.Future[Any]"]]


class ChangePublisher:
    """Publishes the notices for a set of changes, keyed by user, all sent before any ack is
    awaited (the producer batches them)."""

    def __init__(self, send: Send, clock: Callable[[], int] = now_ms) -> None:
        self._send = send
        self._clock = clock

    async def publish(self, changes: Iterable[Change]) -> int:
        """Publish and wait for every ack (or raise); how many notices went out."""
        batch = notices(changes, self._clock())
        acks = [
            await self._send(Topics.CHANGES, notice.to_json(), notice.user_id.encode())
            for notice in batch
        ]
        await asyncio.gather(*acks)
        return len(batch)


#: Most notices an API keeps in flight at once; past that a notice is dropped (logged): a
#: notice is a hint, and a broker that does not answer must not grow the API's memory.
MAX_PENDING_NOTICES = 1000
#: Longest an API waits for a notice's ack.
NOTICE_TIMEOUT_SECONDS = 5.0


class BackgroundNotices:
    """For a request handler: publish after the write without making the request wait for
    the broker. A notice that cannot be published (the broker is down or slow) is logged and
    dropped; the write itself has happened, and the next change or reconnect re-reads it."""

    def __init__(self, publisher: ChangePublisher) -> None:
        self._publisher = publisher
        self._pending: set[asyncio.Task[None]] = set()

    def publish_soon(self, changes: Iterable[Change]) -> None:
        if len(self._pending) >= MAX_PENDING_NOTICES:
            log.warning("change notice dropped: too many in flight")
            return
        task = asyncio.create_task(self._publish(list(changes)))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish(self, changes: list[Change]) -> None:
        try:
            async with asyncio.timeout(NOTICE_TIMEOUT_SECONDS):
                await self._publisher.publish(changes)
        except Exception as exc:
            log.warning(
                "change notice not published", extra={"error": f"{type(exc).__name__}: {exc}"}
            )

    async def drain(self) -> None:
        """At shutdown: let the notices in flight finish (each is bounded by its timeout)."""
        if self._pending:
            await asyncio.wait(set(self._pending))
