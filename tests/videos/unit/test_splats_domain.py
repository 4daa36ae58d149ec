"""The splat rules: the pipeline's reports in the order of their `at`, final states, the
storage filter that mirrors the rule, validation of the messages, and requests."""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import jsonschema
import mongomock
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from siteview_videos import domain, handlers, schema
from siteview_videos.domain import SplatReport
from siteview_videos.views import (
    SplatCancelled,
    SplatRequested,
    SplatStatusMessage,
    SplatView,
    status_schema,
)

SPLAT_ID = "0123456789abcdef0123456789abcdef"
RESULT = {"url": "https://cdn.example.com/s.ply", "format": "ply", "sizeBytes": 10, "gaussians": 5}
ERROR = {"code": "bad_input", "message": "too dark"}


def report(status: str = "processing", at: int = 1000, progress: int = 10) -> SplatReport:
    return SplatReport(
        splat_id=SPLAT_ID,
        status=status,  # type: ignore[arg-type]
        progress=progress,
        result=RESULT if status == "ready" else None,
        error=ERROR if status == "failed" else None,
        at=at,
    )


def stored(status: str = "queued", status_at: int = -1, progress: int = 0) -> dict[str, Any]:
    video = {"_id": "v1", "userId": "user_1", "url": "https://example.com/v"}
    splat = domain.new_splat(splat_id=SPLAT_ID, video=video, quality="preview", now=500)
    return {**splat, "status": status, "statusAt": status_at, "progress": progress}


def message(**fields: Any) -> dict[str, Any]:
    base = {
        "splatId": SPLAT_ID,
        "status": "processing",
        "progress": 40,
        "result": None,
        "error": None,
        "at": 1_776_000_000_000,
    }
    return {**base, **fields}


def final_state(reports: list[SplatReport]) -> dict[str, Any]:
    """Apply `reports` one at a time, as batches of one would."""
    splat = stored()
    for each in reports:
        if domain.supersedes(each, splat):
            splat = {**splat, **domain.reported(each, now=0)}
    return splat


class TestOrdering:
    def test_a_later_report_wins_whatever_the_arrival(self) -> None:
        sent = [report("processing", 1, 10), report("processing", 2, 50), report("ready", 3, 100)]
        for arrival in itertools.permutations(sent):
            state = final_state(list(arrival))
            assert (state["status"], state["statusAt"]) == ("ready", 3), arrival

    def test_an_older_report_never_wins(self) -> None:
        splat = stored("processing", status_at=2000, progress=60)
        assert not domain.supersedes(report("processing", 1999, 90), splat)
        assert not domain.supersedes(report("ready", 1999, 100), splat)
        assert not domain.supersedes(report("failed", 1999, 0), splat)
        assert domain.supersedes(report("processing", 2001, 10), splat)

    def test_at_the_same_at_more_progress_wins_and_a_final_report_wins(self) -> None:
        splat = stored("processing", status_at=2000, progress=60)
        assert domain.supersedes(report("processing", 2000, 61), splat)
        assert not domain.supersedes(report("processing", 2000, 60), splat)
        assert not domain.supersedes(report("processing", 2000, 59), splat)
        assert domain.supersedes(report("ready", 2000, 100), splat)
        assert domain.supersedes(report("failed", 2000, 0), splat)

    def test_a_queued_splat_takes_any_report(self) -> None:
        assert domain.supersedes(report("processing", 0, 0), stored())
        assert domain.supersedes(report("ready", 0, 100), stored())

    @pytest.mark.parametrize("final", ["ready", "failed"])
    def test_final_states_are_final(self, final: str) -> None:
        splat = stored(final, status_at=1000, progress=100)
        for late in (report("processing", 5000, 99), report("ready", 5000), report("failed", 5000)):
            assert not domain.supersedes(late, splat), late

    def test_a_deleted_splat_takes_nothing(self) -> None:
        splat = {**stored(), "deletedAt": 700}
        assert not domain.supersedes(report("ready", 5000, 100), splat)

    def test_the_newest_report_of_each_splat_in_a_batch(self) -> None:
        other = SplatReport("f" * 32, "processing", 5, None, None, 1)
        batch = [
            report("processing", 3, 30),
            other,
            report("ready", 3, 100),
            report("processing", 4, 40),
            report("processing", 4, 40),
            report("failed", 2, 0),
        ]
        newest = domain.newest_reports(batch)
        assert sorted(newest, key=lambda r: r.splat_id) == [report("processing", 4, 40), other]
        ready, failed = report("ready", 3, 100), report("failed", 3, 100)
        assert domain.newest_reports([ready, failed]) == [ready]  # of equals, the first
        assert domain.newest_reports([failed, ready]) == [failed]

    def test_shuffled_and_repeated_reports_end_the_same(self) -> None:
        sent = [report("processing", t, t * 10) for t in range(1, 10)] + [report("ready", 10, 100)]
        rng = random.Random(7)
        for _ in range(50):
            arrival = sent + rng.sample(sent, 4)
            rng.shuffle(arrival)
            state = final_state(arrival)
            assert (state["status"], state["progress"], state["result"]) == ("ready", 100, RESULT)

    def test_the_dedupe_id_names_the_report(self) -> None:
        assert report("processing", 5, 50).dedupe_id == report("processing", 5, 50).dedupe_id
        ids = {
            report("processing", 5, 50).dedupe_id,
            report("processing", 5, 51).dedupe_id,
            report("processing", 6, 50).dedupe_id,
            report("ready", 5, 50).dedupe_id,
        }
        assert len(ids) == 4


STATUSES = st.sampled_from(["queued", "processing", "ready", "failed"])
REPORTED = st.sampled_from(["processing", "ready", "failed"])
TIMES = st.integers(min_value=-1, max_value=4)
PROGRESS = st.integers(min_value=0, max_value=3)


@given(
    status=STATUSES,
    status_at=TIMES,
    progress=PROGRESS,
    deleted=st.booleans(),
    reported=REPORTED,
    at=st.integers(min_value=0, max_value=4),
    new_progress=PROGRESS,
)
def test_the_storage_filter_is_the_rule(
    status: str,
    status_at: int,
    progress: int,
    deleted: bool,
    reported: str,
    at: int,
    new_progress: int,
) -> None:
    """`schema.superseded_by` (what the worker's guarded update matches) selects exactly the
    splats `domain.supersedes` says a report changes."""
    splat = {**stored(status, status_at, progress), "deletedAt": 1 if deleted else None}
    collection = mongomock.MongoClient().db.splats
    collection.insert_one(splat)
    each = report(reported, at, new_progress)
    matched = collection.find_one(schema.superseded_by(each)) is not None
    assert matched == domain.supersedes(each, splat)


class TestStatusMessage:
    def test_a_valid_report_of_each_status(self) -> None:
        processing = SplatStatusMessage.model_validate_json(json.dumps(message()))
        assert processing.report() == SplatReport(
            SPLAT_ID, "processing", 40, None, None, 1_776_000_000_000
        )
        ready = SplatStatusMessage.model_validate(message(status="ready", result=RESULT))
        assert ready.report().result == RESULT
        failed = SplatStatusMessage.model_validate(message(status="failed", error=ERROR))
        assert failed.report().error == ERROR

    @pytest.mark.parametrize(
        "fields",
        [
            {"status": "ready"},  # no result
            {"status": "ready", "result": RESULT, "error": ERROR},
            {"status": "failed"},  # no error
            {"status": "failed", "error": ERROR, "result": RESULT},
            {"result": RESULT},  # processing with a result
            {"error": ERROR},
            {"status": "queued"},
            {"status": "done"},
            {"progress": -1},
            {"progress": 101},
            {"progress": "40"},
            {"progress": True},
            {"at": -5},
            {"at": "1776000000000"},
            {"splatId": "not-a-splat-id"},
            {"splatId": SPLAT_ID.upper()},
            {"extra": 1},
            {"status": "ready", "result": {**RESULT, "url": "ftp://x.example/s"}},
            {"status": "ready", "result": {**RESULT, "sizeBytes": -1}},
            {"status": "ready", "result": {**RESULT, "unknown": 1}},
            {"status": "ready", "result": {k: v for k, v in RESULT.items() if k != "format"}},
            {"status": "failed", "error": {"code": "", "message": "x"}},
        ],
    )
    def test_invalid_reports_are_refused_by_the_model_and_the_schema(
        self, fields: dict[str, Any]
    ) -> None:
        body = message(**fields)
        with pytest.raises(ValidationError):
            SplatStatusMessage.model_validate_json(json.dumps(body))
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(body, status_schema())

    def test_a_whole_float_is_no_integer_for_the_model(self) -> None:
        """JSON Schema counts 40.0 as an integer; the model, strict, does not."""
        with pytest.raises(ValidationError):
            SplatStatusMessage.model_validate_json(json.dumps(message(progress=40.0)))

    @pytest.mark.parametrize("missing", ["splatId", "status", "progress", "result", "error", "at"])
    def test_every_field_is_required(self, missing: str) -> None:
        body = {k: v for k, v in message().items() if k != missing}
        with pytest.raises(ValidationError):
            SplatStatusMessage.model_validate_json(json.dumps(body))
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(body, status_schema())

    @pytest.mark.parametrize(
        "fields",
        [
            {},
            {"progress": 0},
            {"progress": 100},
            {"status": "ready", "progress": 100, "result": RESULT},
            {"status": "failed", "progress": 12, "error": ERROR},
        ],
    )
    def test_valid_reports_pass_the_model_and_the_schema(self, fields: dict[str, Any]) -> None:
        body = message(**fields)
        SplatStatusMessage.model_validate_json(json.dumps(body))
        jsonschema.validate(body, status_schema())

    def test_not_json_is_refused(self) -> None:
        with pytest.raises(ValidationError):
            handlers.decode_status(b"\xff not json")

    def test_decoding_dedupes_by_content(self) -> None:
        value = json.dumps(message()).encode()
        first, again = handlers.decode_status(value), handlers.decode_status(value)
        assert first == again
        assert first.command == SplatStatusMessage.model_validate_json(value).report()
        assert first.received_at == 1_776_000_000_000


class TestRequests:
    def test_an_idempotency_key_names_one_splat_per_user(self) -> None:
        one = domain.new_splat_id("user_a", "key-1")
        assert one == domain.new_splat_id("user_a", "key-1")
        assert one != domain.new_splat_id("user_b", "key-1")
        assert one != domain.new_splat_id("user_a", "key-2")
        assert len(one) == 32 and int(one, 16) >= 0
        assert domain.new_splat_id("user_a", None) != domain.new_splat_id("user_a", None)

    def test_a_repeated_request_answers_as_the_first_did(self) -> None:
        first = stored()
        later = {**first, "status": "ready", "progress": 100, "result": RESULT, "updatedAt": 900}
        assert SplatView.from_doc(domain.as_first_answered(later)) == SplatView.from_doc(first)

    def test_a_repeated_key_must_repeat_the_request(self) -> None:
        splat = stored()
        domain.ensure_same_request(splat, video_id="v1", quality="preview")
        with pytest.raises(domain.IdempotencyConflictError):
            domain.ensure_same_request(splat, video_id="v2", quality="preview")
        with pytest.raises(domain.IdempotencyConflictError):
            domain.ensure_same_request(splat, video_id="v1", quality="full")

    def test_the_open_limit_is_inclusive(self) -> None:
        domain.ensure_within_limit(3, 3)
        with pytest.raises(domain.TooManyOpenSplatsError):
            domain.ensure_within_limit(4, 3)

    def test_a_new_splat_owes_its_job_until_published(self) -> None:
        splat = stored()
        assert domain.job_unpublished(splat)
        assert not domain.job_unpublished({**splat, "jobPublishedAt": 600})
        assert not domain.job_unpublished({**splat, "deletedAt": 600})
        assert not domain.job_unpublished({**splat, "status": "processing"})

    def test_a_timeout_fails_the_splat_and_owes_a_cancellation(self) -> None:
        assert domain.stalled_since(10_000, 3.5) == 6_500
        fields = domain.timed_out(10_000, 3600)
        assert fields["status"] == "failed"
        assert fields["error"]["code"] == "timeout"
        assert (fields["cancelReason"], fields["cancelledAt"]) == ("timeout", 10_000)
        assert fields["cancelPublishedAt"] is None

    def test_the_job_messages(self) -> None:
        splat = {**stored(), **domain.cancellation("video_deleted", 800)}
        assert json.loads(SplatRequested.of(splat).to_json()) == {
            "type": "splat.requested",
            "splatId": SPLAT_ID,
            "videoId": "v1",
            "userId": "user_1",
            "videoUrl": "https://example.com/v",
            "quality": "preview",
            "requestedAt": 500,
        }
        assert json.loads(SplatCancelled.of(splat).to_json()) == {
            "type": "splat.cancelled",
            "splatId": SPLAT_ID,
            "videoId": "v1",
            "userId": "user_1",
            "reason": "video_deleted",
            "at": 800,
        }
