"""`siteview dlq list|show|redrive`, run as a process over the backend's broker, on a message
the users worker dead-lettered for real."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from typer.testing import CliRunner, Result

from conftest import Backend, Stack, service_env
from siteview_common.events import Topics
from siteview_ops import cli
from siteview_ops.dlq import (
    HEADER_REDRIVEN_FROM,
    Entry,
    Filters,
    RedriveLog,
    parse_time,
    read_topic,
    topics_of,
)
from support import (
    KeyPair,
    eventually_async,
    new_svix_id,
    new_user_id,
    partition_count,
    user_event,
)

DLQ = Topics.dlq(Topics.USERS)


def siteview(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "siteview_ops.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def cli_in_process(env: dict[str, str], *args: str) -> Result:
    """The same app in this process, without an interpreter's start-up: the steps between the
    ones run as a process."""
    return CliRunner().invoke(cli.app, list(args), env={**env, "COLUMNS": "200"})


def in_process_ok(result: Result) -> str:
    assert result.exit_code == 0, result.stderr
    return result.stdout


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def listed(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    out = ok(siteview(env, "dlq", "list", Topics.USERS, "--json", *args))
    return [json.loads(line) for line in out.splitlines() if line.strip()]


async def records_of(kafka: str, topic: str) -> list[Any]:
    """Every record of `topic` now (no group; nothing committed)."""
    return await read_topic(kafka, topic)


async def in_dlq(kafka: str, wanted: Callable[[dict[str, str]], bool]) -> None:
    """Wait until the DLQ holds a record whose headers are `wanted` (read without a group:
    joining one costs seconds)."""

    async def found() -> bool:
        return any(wanted(headers_of(r)) for r in await records_of(kafka, DLQ))

    await eventually_async(found, timeout=30, interval=0.2)


async def record_at(kafka: str, where: str) -> Any:
    """The record at `topic/partition/offset`."""
    topic, partition, offset = where.rsplit("/", 2)
    tp = TopicPartition(topic, int(partition))
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, group_id=None, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, int(offset))
        async with asyncio.timeout(30):
            return await consumer.getone(tp)
    finally:
        await consumer.stop()


async def end_offset_total(kafka: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(await partition_count(kafka, topic))]
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


def headers_of(record: Any) -> dict[str, str]:
    return {k: bytes(v).decode() for k, v in record.headers or ()}


@pytest.mark.e2e
async def test_list_show_and_redrive_a_dead_lettered_message(
    stack: Stack, backend: Backend, signing_key: KeyPair, run_id: str
) -> None:
    env = service_env(backend, signing_key, run_id)
    poison = user_event("user.updated", new_user_id(), updated_at=1)
    poison["data"]["email_addresses"] = "not a list"
    svix_id = new_svix_id()
    assert stack.gateway.deliver(poison, svix_id=svix_id).status_code == 202
    await in_dlq(backend.kafka, lambda h: h.get("event-id") == svix_id)  # dead-lettered for real

    # list: found with every filter matching; the filters themselves are tested below
    hits = await asyncio.to_thread(
        listed,
        env,
        *("--event-id", svix_id, "--type", "user.updated"),
        *("--reason", "validationerror", "--since", "10m"),
    )
    assert len(hits) == 1
    entry = hits[0]
    assert entry["group"] == "users-service" and entry["redriven"] is False
    assert "ValidationError" in entry["reason"] and entry["dlq"].startswith(f"{DLQ}/")
    assert entry["source"].startswith(f"{Topics.USERS}/")
    table = await asyncio.to_thread(cli_in_process, env, "dlq", "list", DLQ, "--event-id", svix_id)
    assert table.exit_code == 0 and svix_id in table.stdout

    # show: the message itself with its headers
    shown = json.loads(
        in_process_ok(await asyncio.to_thread(cli_in_process, env, "dlq", "show", DLQ, svix_id))
    )
    assert shown["value"]["svixId"] == svix_id
    assert shown["value"]["event"]["data"]["email_addresses"] == "not a list"
    assert shown["headers"]["dlq-group"] == "users-service"
    missing = await asyncio.to_thread(cli_in_process, env, "dlq", "show", DLQ, "msg_nothing_here")
    assert missing.exit_code == 1 and missing.stdout == ""
    assert missing.stderr.strip() == f"siteview: no message with event id msg_nothing_here in {DLQ}"

    # redrive --dry-run publishes nothing
    before = await end_offset_total(backend.kafka, Topics.USERS)
    dry = in_process_ok(
        await asyncio.to_thread(
            cli_in_process, env, "dlq", "redrive", Topics.USERS, "--event-id", svix_id, "--dry-run"
        )
    )
    assert f"would redrive {entry['dlq']}" in dry and "dry run: would redrive 1" in dry
    assert await end_offset_total(backend.kafka, Topics.USERS) == before

    # redrive: once, to the source topic, without the dlq-* headers, and recorded
    done = ok(
        await asyncio.to_thread(
            siteview, env, "dlq", "redrive", Topics.USERS, "--event-id", svix_id
        )
    )
    assert "redriven: 1" in done
    assert await end_offset_total(backend.kafka, Topics.USERS) == before + 1
    log = [json.loads(r.value) for r in await records_of(backend.kafka, f"{DLQ}.redriven")]
    notes = [n for n in log if n["eventId"] == svix_id]
    assert [n["dlq"] for n in notes] == [entry["dlq"]]
    republished = await record_at(backend.kafka, notes[0]["to"])
    assert republished.topic == Topics.USERS
    headers = headers_of(republished)
    assert headers["event-id"] == svix_id
    assert not {"dlq-reason", "dlq-source-topic", "dlq-group"} & headers.keys()
    assert headers["redriven-from"] == entry["dlq"]
    assert json.loads(republished.value)["svixId"] == svix_id

    # the worker processed it (still poison: it is back in the DLQ, marked as a redrive) ...
    await in_dlq(backend.kafka, lambda h: h.get("redriven-from") == entry["dlq"])

    # ... and a second redrive without --again does nothing
    again = in_process_ok(
        await asyncio.to_thread(
            cli_in_process, env, "dlq", "redrive", Topics.USERS, "--event-id", svix_id
        )
    )
    assert "redriven: 0; 2 already redriven" in again
    assert await end_offset_total(backend.kafka, Topics.USERS) == before + 1
    forced = await asyncio.to_thread(
        cli_in_process, env, "dlq", "redrive", DLQ, "--event-id", svix_id, "--again", "--dry-run"
    )
    assert forced.exit_code == 0 and "dry run: would redrive 2" in forced.stdout


def test_failures_are_one_line_and_non_zero(
    backend: Backend, signing_key: KeyPair, run_id: str
) -> None:
    env = service_env(backend, signing_key, run_id)
    bad_time = cli_in_process(env, "dlq", "list", Topics.USERS, "--since", "yesterday")
    assert bad_time.exit_code == 2
    assert bad_time.stderr.startswith("siteview: invalid --since 'yesterday'")
    no_topic = cli_in_process(env, "dlq", "redrive", "no.such.topic")
    assert no_topic.exit_code == 1
    assert no_topic.stderr.strip() == "siteview: topic no.such.topic.dlq does not exist"
    unset = {**env, "KAFKA_BOOTSTRAP_SERVERS": "", "APP_ENV": "production"}
    missing = cli_in_process(unset, "dlq", "list", Topics.USERS)
    assert missing.exit_code == 2
    assert missing.stderr.strip() == "siteview: missing required setting KAFKA_BOOTSTRAP_SERVERS"


# --- the rules, without a broker -------------------------------------------------------------


def entry_of(**headers: str) -> Entry:
    return Entry(
        DLQ,
        3,
        17,
        1_780_000_000_000,
        b"k",
        b"{}",
        tuple((k, v.encode()) for k, v in headers.items()),
    )


def test_filters_select_by_type_reason_time_and_event_id() -> None:
    entry = entry_of(
        **{
            "event-id": "msg_1",
            "event-type": "user.updated",
            "dlq-reason": "ValidationError: 1 validation error",
        }
    )
    at = entry.time
    assert Filters().match(entry)
    assert Filters(type="user.updated", reason="VALIDATIONERROR", event_id="msg_1").match(entry)
    assert Filters(since=at, until=at + timedelta(seconds=1)).match(entry)
    assert not Filters(type="user.created").match(entry)
    assert not Filters(reason="KeyError").match(entry)
    assert not Filters(event_id="msg_2").match(entry)
    assert not Filters(since=at + timedelta(milliseconds=1)).match(entry)
    assert not Filters(until=at).match(entry)


def test_times_are_iso_8601_or_a_duration_ago() -> None:
    assert parse_time("2026-11-30T12:00:00Z", "--since") == datetime(2026, 11, 30, 12, tzinfo=UTC)
    assert parse_time("2026-11-30T12:00:00", "--since") == datetime(2026, 11, 30, 12, tzinfo=UTC)
    ago = parse_time("2h", "--since")
    assert ago is not None
    assert abs((datetime.now(UTC) - ago) - timedelta(hours=2)) < timedelta(minutes=1)
    assert parse_time(None, "--since") is None


def test_either_topic_name_and_the_source_of_an_entry() -> None:
    assert topics_of("clerk.users.v1") == ("clerk.users.v1", DLQ)
    assert topics_of(DLQ) == ("clerk.users.v1", DLQ)
    assert entry_of(**{"dlq-source-topic": "clerk.billing.v1/4/99"}).source_topic("x") == (
        "clerk.billing.v1"
    )
    assert entry_of().source_topic("clerk.users.v1") == "clerk.users.v1"


def test_the_redrive_log_knows_an_entry_and_its_copies() -> None:
    log = RedriveLog(refs={f"{DLQ}/3/17"}, event_ids={"msg_9"})
    assert log.holds(entry_of())
    copy = Entry(DLQ, 5, 2, 0, None, b"", ((HEADER_REDRIVEN_FROM, f"{DLQ}/3/17".encode()),))
    assert log.holds(copy)
    assert log.holds(Entry(DLQ, 1, 1, 0, None, b"", (("event-id", b"msg_9"),)))
    assert not log.holds(Entry(DLQ, 1, 1, 0, None, b"", (("event-id", b"msg_8"),)))
