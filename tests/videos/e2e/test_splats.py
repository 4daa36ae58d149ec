"""Splats end to end: the videos API and worker as running processes, the job and status
topics on the session's broker, the GPU pipeline played by this test (it reads the job topic
and publishes status reports as the pipeline would)."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from pymongo.asynchronous.database import AsyncDatabase
from sse_reader import open_stream
from videos.e2e.callers import Caller

from conftest import Backend, service_env
from siteview_common.events import HEADER_DLQ_REASON, Topics
from siteview_devstack.broker import free_port
from siteview_devstack.processes import ProcessSpec, Supervisor
from siteview_videos import domain, schema
from siteview_videos.bootstrap import SPLATS_GROUP
from support import (
    ExtraWorker,
    KeyPair,
    eventually,
    eventually_async,
    metric_value,
    partition_count,
    partition_of,
    user_event,
    wait_in_ledger,
)

pytestmark = pytest.mark.e2e

SPLAT_FIELDS = {
    "id",
    "videoId",
    "userId",
    "status",
    "quality",
    "progress",
    "result",
    "error",
    "createdAt",
    "updatedAt",
}
JOBS_SCHEMA = json.loads(
    (Path(__file__).resolve().parents[3] / "docs" / "schemas" / "splat-jobs.v1.json").read_text()
)
RESULT = {
    "url": "https://cdn.example.com/splats/a.ply",
    "format": "ply",
    "sizeBytes": 52_428_800,
    "gaussians": 1_200_000,
}


class Pipeline:
    """The GPU pipeline's side of the topics: reads job messages, publishes status reports."""

    def __init__(self, backend: Backend, producer: AIOKafkaProducer, stack: Any) -> None:
        self.kafka = backend.kafka
        self.mongo = backend.mongo
        self.producer = producer
        self.stack = stack

    async def report(self, value: dict[str, Any] | bytes, key: str) -> None:
        body = value if isinstance(value, bytes) else json.dumps(value).encode()
        await self.producer.send_and_wait(Topics.SPLAT_STATUS, body, key=key.encode())

    async def jobs(
        self, user_id: str, until: Callable[[list[dict[str, Any]]], bool]
    ) -> list[dict[str, Any]]:
        """The job topic's messages for `user_id` (its partition, from the start), once `until`
        holds for them; each is checked against the committed JSON Schema."""
        partition = partition_of(user_id, await partition_count(self.kafka, Topics.SPLAT_JOBS))

        def mine(records: Sequence[ConsumerRecord[Any, Any]]) -> list[dict[str, Any]]:
            found = [json.loads(r.value) for r in records]
            return [m for m in found if m["userId"] == user_id]

        records = await read_partition(
            self.kafka, Topics.SPLAT_JOBS, partition, lambda rs: until(mine(rs))
        )
        messages = mine(records)
        assert [r.key for r in records if json.loads(r.value)["userId"] == user_id] == [
            user_id.encode()
        ] * len(messages), "job messages are keyed by the user id"
        for message in messages:
            jsonschema.validate(message, JOBS_SCHEMA)
        return messages

    async def applied(self, *reports: dict[str, Any]) -> None:
        """Wait until the worker processed each report (applied or found stale: its ledger
        holds the report's id)."""
        for each in reports:
            dedupe = (
                f"splat-status:{each['splatId']}:{each['status']}:{each['at']}:{each['progress']}"
            )
            await asyncio.to_thread(
                wait_in_ledger, self.mongo, self.stack.databases["videos"], dedupe
            )


async def read_partition(
    kafka: str,
    topic: str,
    partition: int,
    until: Callable[[list[ConsumerRecord[Any, Any]]], bool],
    timeout: float = 30.0,
) -> list[ConsumerRecord[Any, Any]]:
    """A partition's records from its start, read until `until` holds for them."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=50
    )
    await consumer.start()
    tp = TopicPartition(topic, partition)
    records: list[ConsumerRecord[Any, Any]] = []
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        deadline = time.monotonic() + timeout
        while not until(records):
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}/{partition}: not found in {len(records)} records")
            batch = await consumer.getmany(tp, timeout_ms=200)
            records += batch.get(tp, [])
    finally:
        await consumer.stop()
    return records


@pytest.fixture(scope="module")
async def pipeline(stack: Any, backend: Backend) -> AsyncIterator[Pipeline]:
    producer = AIOKafkaProducer(bootstrap_servers=backend.kafka, acks="all", linger_ms=0)
    await producer.start()
    try:
        yield Pipeline(backend, producer, stack)
    finally:
        await producer.stop()


def report(
    splat_id: str,
    status: str,
    at: int,
    progress: int,
    *,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "splatId": splat_id,
        "status": status,
        "progress": progress,
        "result": result,
        "error": error,
        "at": at,
    }


def cancels(splat_id: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda ms: any(m["type"] == "splat.cancelled" and m["splatId"] == splat_id for m in ms)


def requested(*splat_ids: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda ms: {m["splatId"] for m in ms if m["type"] == "splat.requested"} >= set(splat_ids)


async def test_a_splat_is_requested_followed_through_shuffled_reports_and_served(
    stack: Any, owner: Caller, pipeline: Pipeline
) -> None:
    video_id = await owner.video()
    response = await owner.request("POST", f"/videos/{video_id}/splats")
    assert response.status_code == 202, response.text
    splat = response.json()
    assert set(splat) == SPLAT_FIELDS
    assert splat["videoId"] == video_id and splat["userId"] == owner.user_id
    assert (splat["status"], splat["quality"], splat["progress"]) == ("queued", "preview", 0)
    assert (splat["result"], splat["error"]) == (None, None)
    assert splat["createdAt"] == splat["updatedAt"]
    assert response.headers["location"] == f"/splats/{splat['id']}"
    assert await owner.read(splat["id"]) == splat

    [job] = await pipeline.jobs(owner.user_id, requested(splat["id"]))
    assert job == {
        "type": "splat.requested",
        "splatId": splat["id"],
        "videoId": video_id,
        "userId": owner.user_id,
        "videoUrl": "https://example.com/walk",
        "quality": "preview",
        "requestedAt": splat["createdAt"],
    }

    start = int(time.time() * 1000)
    sent = [report(splat["id"], "processing", start + i, i * 20) for i in range(1, 5)]
    sent.append(report(splat["id"], "ready", start + 5, 100, result=RESULT))
    arrival = sent + random.sample(sent, 3)
    random.shuffle(arrival)
    for each in arrival:
        await pipeline.report(each, key=splat["id"])
    await pipeline.applied(*sent)

    ready = await owner.read(splat["id"])
    assert (ready["status"], ready["progress"]) == ("ready", 100)
    assert (ready["result"], ready["error"]) == (RESULT, None)
    assert ready["updatedAt"] >= splat["updatedAt"]

    # A late processing report, even one with a later `at`, never reopens a ready splat.
    late = report(splat["id"], "processing", start + 6, 50)
    await pipeline.report(late, key=splat["id"])
    await pipeline.applied(late)
    assert await owner.read(splat["id"]) == ready

    listed = await owner.request("GET", f"/videos/{video_id}/splats")
    assert listed.status_code == 200, listed.text
    assert listed.json()["page"] == [ready]
    worker = stack.urls["videos-worker"]
    assert metric_value(worker, "siteview_splats_completed_total") >= 1
    assert metric_value(worker, "siteview_splat_ready_seconds_count") >= 1
    assert metric_value(stack.urls["videos-api"], "siteview_splats_requested_total") >= 1


async def test_a_failed_report_is_final_and_quality_full_is_carried(
    stack: Any, owner: Caller, pipeline: Pipeline
) -> None:
    video_id = await owner.video()
    splat = await owner.splat(video_id, json={"quality": "full"})
    assert splat["quality"] == "full"
    [job] = await pipeline.jobs(owner.user_id, requested(splat["id"]))
    assert job["quality"] == "full"
    at = int(time.time() * 1000)
    error = {"code": "too_dark", "message": "not enough light to reconstruct"}
    sent = [
        report(splat["id"], "failed", at + 2, 30, error=error),
        report(splat["id"], "processing", at + 1, 30),
        report(splat["id"], "ready", at + 1, 100, result=RESULT),  # older than the failure
    ]
    for each in sent:
        await pipeline.report(each, key=splat["id"])
    await pipeline.applied(*sent)
    failed = await owner.read(splat["id"])
    assert (failed["status"], failed["error"], failed["result"]) == ("failed", error, None)
    labels = {"reason": "pipeline"}
    assert metric_value(stack.urls["videos-worker"], "siteview_splats_failed_total", **labels) >= 1


async def test_bodies_that_are_not_a_request_are_refused(owner: Caller) -> None:
    video_id = await owner.video()
    path = f"/videos/{video_id}/splats"
    for body in ({"quality": "ultra"}, {"quality": None}, {"other": 1}, [1]):
        response = await owner.request("POST", path, json=body)
        assert response.status_code == 422, (body, response.text)
    response = await owner.request(
        "POST", path, content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code in (400, 422), response.text
    assert (await owner.request("GET", path)).json()["page"] == []


async def test_only_the_owner_reaches_a_splat_and_its_video(
    owner: Caller, other: Caller, client: httpx.AsyncClient, signing_key: KeyPair
) -> None:
    video_id = await owner.video()
    splat = await owner.splat(video_id)
    nobody = Caller(client, signing_key, None)
    for caller, status in ((other, 404), (nobody, 401)):
        for method, path in (
            ("GET", f"/splats/{splat['id']}"),
            ("DELETE", f"/splats/{splat['id']}"),
            ("GET", f"/videos/{video_id}/splats"),
            ("POST", f"/videos/{video_id}/splats"),
        ):
            response = await caller.request(method, path)
            assert response.status_code == status, (method, path, response.text)
    gone = await other.request("GET", f"/splats/{splat['id']}")
    assert gone.json() == {"detail": "splat not found"}
    assert (await other.request("POST", f"/videos/{video_id}/splats")).json() == {
        "detail": "video not found"
    }
    assert await owner.read(splat["id"]) == splat  # nothing changed
    missing = await owner.request("POST", f"/videos/{uuid.uuid4().hex}/splats")
    assert missing.status_code == 404


async def test_a_videos_splats_are_paginated_like_the_videos(owner: Caller, other: Caller) -> None:
    video_id, elsewhere = await owner.video(), await owner.video()
    made = [await owner.splat(video_id) for _ in range(2)]  # with the next: the open limit
    await owner.splat(elsewhere)
    path = f"/videos/{video_id}/splats"
    seen: list[str] = []
    params: dict[str, Any] = {"numItems": 1}
    while True:
        page = (await owner.request("GET", path, params=params)).json()
        seen += [s["id"] for s in page["page"]]
        assert isinstance(page["continueCursor"], str)
        if page["isDone"]:
            break
        params = {"numItems": 1, "cursor": page["continueCursor"]}
    newest_first = sorted(made, key=lambda s: (s["createdAt"], s["id"]), reverse=True)
    assert seen == [s["id"] for s in newest_first]
    cursor = (await owner.request("GET", path, params={"numItems": 1})).json()["continueCursor"]
    for who, where in ((owner, f"/videos/{elsewhere}/splats"), (owner, "/videos")):
        foreign = await who.request("GET", where, params={"cursor": cursor})
        assert (foreign.status_code, foreign.json()) == (400, {"detail": "invalid cursor"})
    for num_items in (0, 101):
        refused = await owner.request("GET", path, params={"numItems": num_items})
        assert refused.status_code == 422


async def test_an_idempotency_key_makes_one_splat_and_one_job(
    owner: Caller, other: Caller, pipeline: Pipeline
) -> None:
    video_id = await owner.video()
    key = {"Idempotency-Key": f"splat {uuid.uuid4()}"}
    first = await owner.request("POST", f"/videos/{video_id}/splats", headers=key)
    assert first.status_code == 202, first.text
    splat = first.json()
    at = int(time.time() * 1000)
    progress = report(splat["id"], "processing", at, 40)
    await pipeline.report(progress, key=splat["id"])
    await pipeline.applied(progress)
    assert (await owner.read(splat["id"]))["status"] == "processing"

    again = await owner.request("POST", f"/videos/{video_id}/splats", headers=key)
    assert (again.status_code, again.json()) == (202, splat)  # as the first answer, exactly
    assert again.headers["location"] == first.headers["location"]
    full = await owner.request(
        "POST", f"/videos/{video_id}/splats", headers=key, json={"quality": "full"}
    )
    assert full.status_code == 422, full.text
    elsewhere = await owner.request("POST", f"/videos/{await owner.video()}/splats", headers=key)
    assert elsewhere.status_code == 422, elsewhere.text
    # The same key is another user's own.
    theirs = await other.splat(await other.video(), headers=key)
    assert theirs["id"] != splat["id"]
    for bad in ("x" * 201, "tab\there", ""):
        response = await owner.request(
            "POST", f"/videos/{video_id}/splats", headers={"Idempotency-Key": bad}
        )
        assert response.status_code == 422, (bad, response.text)

    # Proof that the repeats published nothing: a later request's job comes after them.
    marker = await owner.splat(video_id)
    jobs = await pipeline.jobs(owner.user_id, requested(marker["id"]))
    assert [j["splatId"] for j in jobs if j["splatId"] == splat["id"]] == [splat["id"]]
    listed = (await owner.request("GET", f"/videos/{video_id}/splats")).json()["page"]
    assert [s["id"] for s in listed] == [marker["id"], splat["id"]]


async def test_the_open_splats_per_user_are_limited(owner: Caller, pipeline: Pipeline) -> None:
    video_id = await owner.video()
    opened = [await owner.splat(video_id) for _ in range(3)]
    refused = await owner.request("POST", f"/videos/{video_id}/splats")
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["retry-after"]) > 0
    assert "detail" in refused.json()
    # A finished splat and a deleted one each free a place.
    done = report(opened[0]["id"], "ready", int(time.time() * 1000), 100, result=RESULT)
    await pipeline.report(done, key=opened[0]["id"])
    await pipeline.applied(done)
    await owner.splat(video_id)
    assert (await owner.request("POST", f"/videos/{video_id}/splats")).status_code == 429
    assert (await owner.request("DELETE", f"/splats/{opened[1]['id']}")).status_code == 204
    await owner.splat(video_id)
    page = (await owner.request("GET", f"/videos/{video_id}/splats")).json()["page"]
    assert len(page) == 4


async def test_a_deleted_splat_is_gone_and_cancelled(
    owner: Caller, pipeline: Pipeline, videos_db: AsyncDatabase[Any]
) -> None:
    video_id = await owner.video()
    splat = await owner.splat(video_id)
    finished = await owner.splat(video_id)
    done = report(finished["id"], "ready", int(time.time() * 1000), 100, result=RESULT)
    await pipeline.report(done, key=finished["id"])
    await pipeline.applied(done)

    deleted = await owner.request("DELETE", f"/splats/{splat['id']}")
    assert (deleted.status_code, deleted.content) == (204, b"")
    for method in ("GET", "DELETE"):
        response = await owner.request(method, f"/splats/{splat['id']}")
        assert (response.status_code, response.json()) == (404, {"detail": "splat not found"})
    jobs = await pipeline.jobs(owner.user_id, cancels(splat["id"]))
    [cancel] = [j for j in jobs if j["type"] == "splat.cancelled"]
    assert cancel["splatId"] == splat["id"] and cancel["videoId"] == video_id
    assert cancel["reason"] == "deleted" and isinstance(cancel["at"], int)

    # A finished splat is deleted without a cancellation.
    assert (await owner.request("DELETE", f"/splats/{finished['id']}")).status_code == 204
    stored = await videos_db[schema.SPLATS].find_one({"_id": finished["id"]})
    assert stored is not None and stored["deletedAt"] is not None
    assert stored["cancelReason"] is None
    assert (await owner.request("GET", f"/videos/{video_id}/splats")).json()["page"] == []


async def test_deleting_a_video_deletes_its_splats_and_cancels_the_open_ones(
    owner: Caller, pipeline: Pipeline
) -> None:
    video_id = await owner.video()
    kept_video = await owner.video()
    open_splat = await owner.splat(video_id)
    ready_splat = await owner.splat(video_id)
    kept = await owner.splat(kept_video)
    done = report(ready_splat["id"], "ready", int(time.time() * 1000), 100, result=RESULT)
    await pipeline.report(done, key=ready_splat["id"])
    await pipeline.applied(done)

    assert (await owner.request("DELETE", f"/videos/{video_id}")).status_code == 204
    for each in (open_splat, ready_splat):
        assert (await owner.request("GET", f"/splats/{each['id']}")).status_code == 404
    assert (await owner.request("GET", f"/videos/{video_id}/splats")).status_code == 404
    assert (await owner.request("POST", f"/videos/{video_id}/splats")).status_code == 404
    assert await owner.read(kept["id"]) == kept
    jobs = await pipeline.jobs(owner.user_id, cancels(open_splat["id"]))
    cancelled = [j for j in jobs if j["type"] == "splat.cancelled"]
    assert [(c["splatId"], c["reason"]) for c in cancelled] == [(open_splat["id"], "video_deleted")]


async def test_a_clerk_user_deletion_deletes_their_splats_and_cancels_the_open_ones(
    stack: Any, owner: Caller, other: Caller, pipeline: Pipeline
) -> None:
    video_id = await owner.video()
    splat = await owner.splat(video_id)
    theirs = await other.splat(await other.video())
    event = user_event("user.deleted", owner.user_id, updated_at=int(time.time() * 1000))
    delivered = await asyncio.to_thread(stack.gateway.deliver, event)
    assert delivered.status_code == 202, delivered.text

    async def gone() -> bool:
        return (await owner.request("GET", f"/splats/{splat['id']}")).status_code == 404

    await eventually_async(gone)
    jobs = await pipeline.jobs(owner.user_id, cancels(splat["id"]))
    [cancel] = [j for j in jobs if j["type"] == "splat.cancelled"]
    assert (cancel["reason"], cancel["videoId"]) == ("user_deleted", video_id)
    refused = await owner.request("POST", f"/videos/{video_id}/splats")
    assert (refused.status_code, refused.json()) == (403, {"detail": "account deleted"})
    assert await other.read(theirs["id"]) == theirs


async def test_reports_for_unknown_splats_are_ignored_and_poison_is_dead_lettered(
    stack: Any, owner: Caller, pipeline: Pipeline, backend: Backend
) -> None:
    unknown = report(uuid.uuid4().hex, "processing", int(time.time() * 1000), 5)
    ignored_before = metric_value(
        stack.urls["videos-worker"], "siteview_splat_reports_ignored_total"
    )
    await pipeline.report(unknown, key=unknown["splatId"])
    await pipeline.applied(unknown)
    assert (
        metric_value(stack.urls["videos-worker"], "siteview_splat_reports_ignored_total")
        > ignored_before
    )

    splat = await owner.splat(await owner.video())
    poison = json.dumps(
        {**report(splat["id"], "ready", int(time.time() * 1000), 100), "note": uuid.uuid4().hex}
    ).encode()  # ready without a result, and an unknown field
    valid = report(splat["id"], "processing", int(time.time() * 1000), 10)
    await pipeline.report(poison, key=splat["id"])
    await pipeline.report(valid, key=splat["id"])  # the same partition, after the poison
    await pipeline.applied(valid)
    assert (await owner.read(splat["id"]))["status"] == "processing"

    dlq = Topics.dlq(Topics.SPLAT_STATUS)
    partition = partition_of(splat["id"], await partition_count(backend.kafka, dlq))
    records = await read_partition(
        backend.kafka, dlq, partition, lambda rs: any(r.value == poison for r in rs)
    )
    [parked] = [r for r in records if r.value == poison]
    headers = {k: v.decode() for k, v in parked.headers}
    assert parked.key == splat["id"].encode()
    assert headers[HEADER_DLQ_REASON].startswith("ValidationError")
    assert headers["dlq-group"] == SPLATS_GROUP


async def test_a_videos_splats_are_a_live_stream(
    stack: Any, owner: Caller, other: Caller, pipeline: Pipeline, signing_key: KeyPair
) -> None:
    """GET /videos/{id}/splats/live: the first page now, again after the API's own writes and
    the worker's reports, `null` once the video is deleted."""
    url = stack.urls["videos-api"]
    eventually(lambda: metric_value(url, "siteview_live_consumer_ready") == 1, timeout=60)
    video_id = await owner.video()
    path = f"/videos/{video_id}/splats/live"
    assert (await other.request("GET", path)).status_code == 404
    assert (await owner.client.get(path)).status_code == 401
    token = signing_key.token(owner.user_id)
    with open_stream(f"{url}{path}", token=token, params={"numItems": 5}) as stream:
        first = await asyncio.to_thread(stream.next_value)
        assert (first.event, first.value["page"]) == ("splats", [])
        splat = await owner.splat(video_id)
        requested_value = (await asyncio.to_thread(stream.next_value)).value
        assert requested_value["page"] == [splat]
        at = int(time.time() * 1000)
        await pipeline.report(report(splat["id"], "processing", at, 40), key=splat["id"])
        reported = (await asyncio.to_thread(stream.next_value)).value
        rest = await owner.request("GET", f"/videos/{video_id}/splats", params={"numItems": 5})
        assert reported == rest.json()
        assert (reported["page"][0]["status"], reported["page"][0]["progress"]) == (
            "processing",
            40,
        )
        assert (await owner.request("DELETE", f"/videos/{video_id}")).status_code == 204
        gone = await asyncio.to_thread(stream.next_value)
        assert gone.data == "null"


async def test_a_publish_failure_answers_503_and_the_retry_with_its_key_completes_it(
    stack: Any,
    backend: Backend,
    signing_key: KeyPair,
    run_id: str,
    owner: Caller,
    pipeline: Pipeline,
    videos_db: AsyncDatabase[Any],
) -> None:
    """A videos API whose broker is gone (nothing listens on its port) stores the splat and
    answers 503; the same request with its key, to an API whose broker answers, publishes
    the job."""
    env = {
        **service_env(backend, signing_key, run_id),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
    }
    spec = ProcessSpec("videos-api-no-broker", "siteview_videos", ("api",), free_port())
    supervisor = Supervisor(env, echo=False)
    try:
        supervisor.start(spec, {"MONGODB_DATABASE": stack.databases["videos"]})
        await asyncio.to_thread(supervisor.wait_ready, [spec.name], 90)
        video_id = await owner.video()
        key = {"Idempotency-Key": uuid.uuid4().hex}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{spec.port}", timeout=30) as api:
            failed = await api.post(f"/videos/{video_id}/splats", headers={**owner.headers, **key})
        assert failed.status_code == 503, failed.text
        assert failed.json() == {"detail": "job queue unavailable"}
        assert int(failed.headers["retry-after"]) > 0
    finally:
        await asyncio.to_thread(supervisor.stop_all)
    [stored] = await videos_db[schema.SPLATS].find({"videoId": video_id}).to_list()
    assert stored["jobPublishedAt"] is None  # (unless the outbox was quicker)

    retried = await owner.request("POST", f"/videos/{video_id}/splats", headers=key)
    assert retried.status_code == 202, retried.text
    assert retried.json()["id"] == stored["_id"]
    await pipeline.jobs(owner.user_id, requested(stored["_id"]))
    published = await videos_db[schema.SPLATS].find_one({"_id": stored["_id"]})
    assert published is not None and published["jobPublishedAt"] is not None


# --- With a worker of its own: test-sized timeout and outbox (these run last: its sweep
# --- fails any splat left open by the tests above, which are done with them by then)

TIMEOUT_SECONDS = 3
OUTBOX_SECONDS = 0.5


@pytest.fixture(scope="module")
def fast_worker(
    stack: Any, backend: Backend, signing_key: KeyPair, run_id: str
) -> Iterator[ExtraWorker]:
    """Another videos worker (in the stack worker's groups, on its database) whose timeout,
    sweep and outbox are test-sized."""
    env = {
        **service_env(backend, signing_key, run_id),
        "SPLATS_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),
        "SPLATS_SWEEP_SECONDS": "0.2",
        "SPLATS_OUTBOX_SECONDS": str(OUTBOX_SECONDS),
    }
    with ExtraWorker(env, "videos", stack.databases["videos"]) as worker:
        worker.start()
        yield worker


async def test_a_splat_without_news_times_out_once_and_is_cancelled(
    owner: Caller, pipeline: Pipeline, fast_worker: ExtraWorker
) -> None:
    splat = await owner.splat(await owner.video())
    progress = report(splat["id"], "processing", int(time.time() * 1000), 30)
    await pipeline.report(progress, key=splat["id"])

    async def timed_out() -> dict[str, Any] | None:
        now = await owner.read(splat["id"])
        return now if now["status"] == "failed" else None

    failed = await eventually_async(timed_out, timeout=30)
    assert failed["error"]["code"] == domain.TIMEOUT_ERROR
    assert failed["result"] is None
    jobs = await pipeline.jobs(owner.user_id, cancels(splat["id"]))
    [cancel] = [j for j in jobs if j["type"] == "splat.cancelled"]
    assert cancel["reason"] == "timeout"
    assert metric_value(fast_worker.url, "siteview_splats_failed_total", reason="timeout") >= 1

    # The pipeline's late ready does not undo it.
    late = report(splat["id"], "ready", int(time.time() * 1000), 100, result=RESULT)
    await pipeline.report(late, key=splat["id"])
    await pipeline.applied(late)
    assert await owner.read(splat["id"]) == failed


async def test_the_outbox_publishes_what_a_writer_stored_but_never_published(
    owner: Caller, pipeline: Pipeline, fast_worker: ExtraWorker, videos_db: AsyncDatabase[Any]
) -> None:
    """As after an API that crashed between storing a splat and publishing its job, or
    between deleting one and publishing its cancellation."""
    video_id = await owner.video()
    video = await videos_db[schema.VIDEOS].find_one({"_id": video_id})
    assert video is not None
    now = int(time.time() * 1000)
    unpublished = domain.new_splat(splat_id=uuid.uuid4().hex, video=video, quality="full", now=now)
    owed = {
        **domain.new_splat(splat_id=uuid.uuid4().hex, video=video, quality="preview", now=now),
        "jobPublishedAt": now,
        "deletedAt": now,
        **domain.cancellation("deleted", now),
    }
    await videos_db[schema.SPLATS].insert_many([unpublished, owed])

    jobs = await pipeline.jobs(
        owner.user_id,
        lambda ms: requested(unpublished["_id"])(ms) and cancels(owed["_id"])(ms),
    )
    [job] = [j for j in jobs if j["splatId"] == unpublished["_id"]]
    assert (job["type"], job["quality"], job["requestedAt"]) == ("splat.requested", "full", now)

    async def marked() -> bool:
        docs = (
            await videos_db[schema.SPLATS]
            .find({"_id": {"$in": [unpublished["_id"], owed["_id"]]}})
            .to_list()
        )
        return all(
            d["jobPublishedAt"] is not None
            and (d["cancelReason"] is None or d["cancelPublishedAt"])
            for d in docs
        )

    await eventually_async(marked)
