"""Live queries: Server-Sent Events streams of a value the API reads, pushed again whenever it
changed, the way Convex's reactive queries re-render a page.

One broker consumer per API process (`LiveKafka`: no consumer group, so every replica reads
every change notice, from the latest offset) hands each notice to the `LiveHub`, which wakes
the streams of that user and collection. A woken stream re-reads its value from the API's own
database and sends it only when it differs from the last one sent, so stale and repeated
notices cost a read and send nothing. Each stream has one flag, not a queue: notices arriving
while it reads coalesce into one more read, and nothing piles up behind a slow client. A send
blocked longer than LIVE_SEND_TIMEOUT_SECONDS ends the stream.

Every value event carries `id:` = a digest of its data; a client reconnecting with that id as
`Last-Event-ID` is not sent the same value again. Streams are served by sse-starlette's
`EventSourceResponse`: `retry: 2000`, a heartbeat comment every LIVE_HEARTBEAT_SECONDS, and
closed when the server shuts down.

When Kafka cannot be reached the REST routes are untouched and a stream still starts with the
current value; the consumer keeps reconnecting, and once it is back every stream re-reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import Counter as Tally
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pydantic_core
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from fastapi import HTTPException, Request
from prometheus_client import Counter, Gauge
from pydantic import ValidationError
from pymongo.errors import PyMongoError
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.types import Receive, Scope, Send

from siteview_common.changes import ChangeNotice
from siteview_common.events import Topics
from siteview_common.kafka import create_topics, start_producer
from siteview_common.settings import KafkaSettings, LiveSettings

log = logging.getLogger(__name__)

STREAMS = Gauge("siteview_live_streams", "Open live streams", ["stream"])
NOTICES = Counter("siteview_live_notices_total", "Change notices received")
PUSHES = Counter("siteview_live_pushes_total", "Values sent on live streams", ["stream"])
DROPS = Counter(
    "siteview_live_drops_total",
    "Live streams refused (limit: too many open) or ended (slow: a send blocked too long)",
    ["reason"],
)
CONSUMER_READY = Gauge(
    "siteview_live_consumer_ready",
    "1 while this process's change-notice consumer is positioned on every partition",
)

#: What a client waits before reconnecting (`retry:`), in ms.
RETRY_MS = 2000
#: What a 429 tells the client to wait before trying again, in seconds.
LIMIT_RETRY_AFTER_SECONDS = 5

#: Reads a stream's current value as JSON (`null` when there is none).
Read = Callable[[], Awaitable[bytes]]


def encode(value: Any) -> bytes:
    """A value as its REST route's body: camelCase JSON (None → `null`)."""
    return pydantic_core.to_json(value, by_alias=True)


def digest(data: bytes) -> str:
    """A value event's id: the first 16 hex digits of the BLAKE2b of its data."""
    return hashlib.blake2b(data).hexdigest()[:16]


class Lease:
    """One open stream's place in the hub: its signal is set when a notice for its user and
    collection arrives (or the consumer reconnected)."""

    __slots__ = ("collection", "released", "signal", "stream", "user_id")

    def __init__(self, user_id: str, collection: str, stream: str) -> None:
        self.user_id = user_id
        self.collection = collection
        self.stream = stream
        self.signal = asyncio.Event()
        self.released = False


class LiveHub:
    """The open streams of one API process, by user and collection, within the limits."""

    def __init__(self, settings: LiveSettings) -> None:
        self.settings = settings
        self._streams: dict[tuple[str, str], set[Lease]] = {}
        self._per_user: Tally[str] = Tally()
        self._open = 0

    @property
    def open_streams(self) -> int:
        return self._open

    def acquire(self, user_id: str, collection: str, stream: str) -> Lease:
        """A place for one more stream, or 429 when the user or the process holds the most
        it may."""
        if self._per_user[user_id] >= self.settings.live_max_streams_per_user:
            raise _limit("too many live streams for this user")
        if self._open >= self.settings.live_max_streams:
            raise _limit("too many live streams")
        lease = Lease(user_id, collection, stream)
        self._streams.setdefault((user_id, collection), set()).add(lease)
        self._per_user[user_id] += 1
        self._open += 1
        STREAMS.labels(stream).inc()
        return lease

    def release(self, lease: Lease) -> None:
        if lease.released:
            return
        lease.released = True
        key = (lease.user_id, lease.collection)
        leases = self._streams.get(key)
        if leases is not None:
            leases.discard(lease)
            if not leases:
                del self._streams[key]
        self._per_user[lease.user_id] -= 1
        if self._per_user[lease.user_id] <= 0:
            del self._per_user[lease.user_id]
        self._open -= 1
        STREAMS.labels(lease.stream).dec()

    def notify(self, user_id: str, collection: str) -> None:
        """Wake the streams of this user and collection (each re-reads once, however many
        notices arrive meanwhile)."""
        for lease in self._streams.get((user_id, collection), ()):
            lease.signal.set()

    def wake_all(self) -> None:
        """Every stream re-reads: after notices may have been missed."""
        for leases in self._streams.values():
            for lease in leases:
                lease.signal.set()

    def receive(self, value: bytes | None) -> None:
        """One record of the notices topic; a record that is not a notice is skipped."""
        try:
            notice = ChangeNotice.model_validate_json(value or b"")
        except ValidationError:
            log.warning("skipped a record that is not a change notice")
            return
        NOTICES.inc()
        self.notify(notice.user_id, notice.collection)


def _limit(detail: str) -> HTTPException:
    DROPS.labels("limit").inc()
    return HTTPException(429, detail, headers={"Retry-After": str(LIMIT_RETRY_AFTER_SECONDS)})


class LiveResponse(EventSourceResponse):
    """sse-starlette's response, giving its place in the hub back however it ends, and
    counting a client dropped for not reading."""

    def __init__(
        self,
        content: AsyncIterator[ServerSentEvent],
        *,
        hub: LiveHub,
        lease: Lease,
        status_code: int = 200,  # read by FastAPI for the route's documented status
    ) -> None:
        super().__init__(
            content,
            status_code=status_code,
            ping=hub.settings.live_heartbeat_seconds,
            send_timeout=hub.settings.live_send_timeout_seconds,
        )
        self._hub = hub
        self._lease = lease

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            # The client stopped reading: the server closes the connection under it.
            DROPS.labels("slow").inc()
            log.warning(
                "live stream dropped: the client does not read",
                extra={"stream": self._lease.stream, "path": scope.get("path")},
            )
        finally:
            self._hub.release(self._lease)


async def _values(
    lease: Lease, read: Read, first: bytes, last_id: str | None
) -> AsyncIterator[ServerSentEvent]:
    yield ServerSentEvent(retry=RETRY_MS)
    data = first
    while True:
        ident = digest(data)
        if ident != last_id:
            yield ServerSentEvent(data=data.decode(), event=lease.stream, id=ident)
            PUSHES.labels(lease.stream).inc()
            last_id = ident
        await lease.signal.wait()
        lease.signal.clear()  # a notice arriving while this reads sets it again
        try:
            data = await read()
        except PyMongoError as exc:
            # Ended cleanly: the client reconnects after `retry` and is answered 503 or
            # the value, like any request.
            log.warning(
                "live stream ended: the database is unavailable",
                extra={"stream": lease.stream, "error": type(exc).__name__},
            )
            return


async def live_response(
    request: Request, *, user_id: str, collection: str, stream: str, read: Read
) -> LiveResponse:
    """The SSE response of one stream: `read` (the value its REST route answers, as JSON) now,
    then again after every notice for `user_id` and `collection`, sent as `event: <stream>`
    when it changed. 429 beyond the limits; a database that is down answers 503 before the
    stream starts, as the REST route would."""
    hub: LiveHub = request.app.state.live
    lease = hub.acquire(user_id, collection, stream)
    try:
        first = await read()
    except BaseException:
        hub.release(lease)
        raise
    last_id = request.headers.get("last-event-id")
    return LiveResponse(_values(lease, read, first, last_id), hub=hub, lease=lease)


def event_schema(stream: str) -> dict[str, Any]:
    """The JSON schema of one event of `stream`, which is what an OpenAPI 3.1 document's
    `text/event-stream` schema describes (each event, not the whole stream): its fields, the
    data being JSON text."""
    return {
        "type": "object",
        "properties": {
            "event": {"type": "string", "enum": [stream]},
            "id": {"type": "string", "description": "a digest of the data"},
            "data": {"type": "string", "contentMediaType": "application/json"},
            "retry": {"type": "integer", "minimum": 0},
        },
    }


def live_responses(
    what: str, *, stream: str, paged: bool = False
) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of a live route whose events are `stream`'s, carrying `what`
    (`paged`: a list's first page, `numItems` as on the REST route)."""
    responses: dict[int | str, dict[str, Any]] = {
        200: {
            "description": (
                f"An event stream: `retry: {RETRY_MS}`, then `event: {stream}`, `id: <digest>`, "
                f"`data: <JSON>` with {what}, now and whenever it changed; heartbeat comments "
                "in between. Send the last id received as `Last-Event-ID` when reconnecting "
                "to skip a value you have."
            ),
            "content": {"text/event-stream": {"schema": event_schema(stream)}},
        },
        401: {"description": "missing or invalid session token (Bearer header or __session)"},
        429: {"description": "too many open live streams (this user's, or this process's)"},
    }
    if paged:
        responses[422] = {"description": "numItems is not within 1..100"}
    return responses


#: Reconnection back-off of the notices consumer: from this many seconds, doubling ...
RECONNECT_FIRST_SECONDS = 0.5
#: ... up to this many.
RECONNECT_MAX_SECONDS = 30.0
#: How long a new consumer may take to be given its partitions.
ASSIGNMENT_SECONDS = 30.0


class LiveKafka:
    """An API process's link to Kafka, kept in the background so that the API starts and
    serves without it: the change-notice consumer feeding `hub` and, for an API that writes
    (`produce`), the producer its notices go out through. Reconnects with a capped back-off."""

    def __init__(
        self, settings: KafkaSettings, hub: LiveHub, *, client_id: str, produce: bool = False
    ) -> None:
        self._settings = settings
        self._hub = hub
        self._client_id = client_id
        self._produce = produce
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="live-kafka")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[Any]:
        """`changes.Send` through the producer; raises while it is not connected."""
        if self._producer is None:
            raise KafkaConnectionError("not connected to Kafka yet")
        future: asyncio.Future[Any] = await self._producer.send(topic, value, key=key)
        return future

    async def _run(self) -> None:
        delay = RECONNECT_FIRST_SECONDS
        while True:
            consumer: AIOKafkaConsumer | None = None
            try:
                if self._produce and self._producer is None:
                    self._producer = await start_producer(self._settings, client_id=self._client_id)
                consumer = await self._subscribe()
                CONSUMER_READY.set(1)
                log.info("live notices: consuming", extra={"topic": Topics.CHANGES})
                self._hub.wake_all()  # whatever changed while not consuming is read again
                delay = RECONNECT_FIRST_SECONDS
                while True:
                    batches = await consumer.getmany(timeout_ms=1000, max_records=500)
                    for records in batches.values():
                        for record in records:
                            self._hub.receive(record.value)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "live notices unavailable; retrying",
                    extra={"error": f"{type(exc).__name__}: {exc}", "retryInSeconds": delay},
                )
            finally:
                CONSUMER_READY.set(0)
                if consumer is not None:
                    with contextlib.suppress(Exception):
                        await consumer.stop()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    async def _subscribe(self) -> AIOKafkaConsumer:
        """A consumer of every partition of the notices topic (created if missing), each
        positioned at its end before anything is reported ready."""
        await create_topics(self._settings, [Topics.CHANGES])
        consumer = AIOKafkaConsumer(
            Topics.CHANGES,
            bootstrap_servers=self._settings.kafka_servers,
            client_id=self._client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=100,
            metadata_max_age_ms=5000,
        )
        try:
            await consumer.start()
            async with asyncio.timeout(ASSIGNMENT_SECONDS):
                # Without a group, aiokafka assigns every partition once its metadata has
                # the topic, and tells no listener: polled.
                while not consumer.assignment():  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                for partition in consumer.assignment():
                    await consumer.position(partition)
        except BaseException:
            await consumer.stop()
            raise
        return consumer
