"""`siteview dlq list|show|redrive`: look into a topic's dead-letter queue and send messages
back to the topic they came from.

The DLQ is read by a throwaway consumer: no consumer group, partitions assigned by hand, read
from the beginning up to the end offsets captured at start. Listing therefore never commits,
moves or waits for anything.

A redrive republishes each selected message (value, key, and headers minus the `dlq-*` ones
the worker added) to its source topic with acks=all, adds a `redriven-from` header naming the
DLQ entry, and then appends a record to the log topic `<topic>.dlq.redriven`. That log lives
next to the DLQ in Kafka (same cluster, same durability, visible to every operator on any
machine), unlike a local file. A later redrive reads it and skips every DLQ entry already
redriven: the same DLQ offset, and a message that came back to the DLQ after a redrive (it
carries `redriven-from`), so a message that still fails is not sent round in circles.
`--again` redrives them anyway.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from rich.table import Table

from siteview_common.events import (
    HEADER_DLQ_REASON,
    HEADER_DLQ_SOURCE,
    HEADER_EVENT_ID,
    HEADER_EVENT_TYPE,
)
from siteview_common.settings import KafkaSettings, load_settings
from siteview_ops.console import OpsError, fail, out, progress, run

app = typer.Typer(
    help="Dead-letter queues: list, show and redrive the messages parked in `<topic>.dlq`.",
    no_args_is_help=True,
)

HEADER_DLQ_GROUP = "dlq-group"
#: Added to a redriven message: the DLQ entry it came from (`<dlq topic>/<partition>/<offset>`).
HEADER_REDRIVEN_FROM = "redriven-from"
#: The headers a worker adds when it dead-letters a message; a redrive removes them.
DLQ_HEADERS = frozenset({HEADER_DLQ_REASON, HEADER_DLQ_SOURCE, HEADER_DLQ_GROUP})
DLQ_SUFFIX = ".dlq"
REDRIVEN_SUFFIX = ".redriven"


def kafka_settings() -> KafkaSettings:
    return load_settings(KafkaSettings, "kafka_servers")


# --- reading a topic to the end offsets captured at start ---------------------------------


async def partitions_of(servers: str, topic: str) -> list[int]:
    """The partition ids of `topic` (none when it does not exist), asked of the cluster now:
    a fresh consumer's own metadata may not know the topic yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=servers, client_id="siteview-ops")
    await admin.start()
    try:
        if topic not in set(await admin.list_topics()):
            return []
        [described] = await admin.describe_topics([topic])
        return sorted(int(p["partition"]) for p in described["partitions"])
    finally:
        await admin.close()


async def assign_whole_topic(
    consumer: AIOKafkaConsumer, servers: str, topic: str
) -> tuple[list[TopicPartition], dict[TopicPartition, int], dict[TopicPartition, int]]:
    """Assign every partition of `topic` to `consumer`; its partitions with their first and
    end offsets as of now (what a read "to the end" stops at)."""
    partitions = await partitions_of(servers, topic)
    if not partitions:
        raise OpsError(f"topic {topic} does not exist")
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer.assign(tps)
    starts = await consumer.beginning_offsets(tps)
    ends = await consumer.end_offsets(tps)
    return tps, starts, ends


async def topic_exists(servers: str, topic: str) -> bool:
    return bool(await partitions_of(servers, topic))


async def read_topic(
    servers: str,
    topic: str,
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[Any]:
    """Every record of `topic` from the beginning to the end offsets captured now, read by a
    consumer without a group (nothing is committed). `on_progress(done, total)` per batch."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
        client_id="siteview-ops",
    )
    await consumer.start()
    try:
        tps, starts, ends = await assign_whole_topic(consumer, servers, topic)
        total = sum(ends[tp] - starts[tp] for tp in tps)
        pending = {tp for tp in tps if ends[tp] > starts[tp]}
        for tp in tps:
            consumer.seek(tp, starts[tp])
        records: list[Any] = []
        if on_progress:
            on_progress(0, total)
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=500, max_records=1000)
            for tp, batch in batches.items():
                records += [r for r in batch if r.offset < ends[tp]]
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
            if on_progress:
                on_progress(len(records), total)
        return records
    finally:
        await consumer.stop()


# --- DLQ entries and filters --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def of(cls, record: Any) -> Entry:
        return cls(
            record.topic,
            record.partition,
            record.offset,
            record.timestamp,
            record.key,
            record.value or b"",
            tuple((k, bytes(v)) for k, v in record.headers or ()),
        )

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode(errors="replace")
        return None

    @property
    def ref(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def event_id(self) -> str | None:
        return self.header(HEADER_EVENT_ID)

    @property
    def event_type(self) -> str | None:
        return self.header(HEADER_EVENT_TYPE)

    @property
    def reason(self) -> str:
        return self.header(HEADER_DLQ_REASON) or ""

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp / 1000, UTC)

    def source_topic(self, default: str) -> str:
        """The topic it was dead-lettered from (`dlq-source-topic` is `topic/partition/offset`)."""
        source = self.header(HEADER_DLQ_SOURCE)
        if source and source.count("/") >= 2:
            return source.rsplit("/", 2)[0]
        return default

    def as_json(self, redriven: bool) -> dict[str, Any]:
        return {
            "dlq": self.ref,
            "time": self.time.isoformat(),
            "eventId": self.event_id,
            "eventType": self.event_type,
            "reason": self.reason,
            "source": self.header(HEADER_DLQ_SOURCE),
            "group": self.header(HEADER_DLQ_GROUP),
            "redrivenFrom": self.header(HEADER_REDRIVEN_FROM),
            "redriven": redriven,
        }


def topics_of(topic: str) -> tuple[str, str]:
    """(source topic, DLQ topic) for either name."""
    if topic.endswith(DLQ_SUFFIX):
        return topic.removesuffix(DLQ_SUFFIX), topic
    return topic, f"{topic}{DLQ_SUFFIX}"


_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_time(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 time (UTC unless it names its zone) or a duration ago (`30m`, `2h`, `7d`)."""
    if value is None:
        return None
    if match := _DURATION.match(value.strip()):
        amount, unit = match.groups()
        return datetime.now(UTC) - timedelta(**{_UNITS[unit]: int(amount)})
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        fail(
            f"invalid {option} {value!r}: give an ISO 8601 time (2026-11-30T12:00:00Z) "
            "or a duration ago (30m, 2h, 7d)",
            2,
        )
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Filters:
    type: str | None = None
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    event_id: str | None = None

    def match(self, entry: Entry) -> bool:
        return (
            (self.event_id is None or entry.event_id == self.event_id)
            and (self.type is None or entry.event_type == self.type)
            and (self.reason is None or self.reason.lower() in entry.reason.lower())
            and (self.since is None or entry.time >= self.since)
            and (self.until is None or entry.time < self.until)
        )


@dataclass(slots=True)
class RedriveLog:
    """What `<dlq>.redriven` says was redriven: DLQ entries and event ids."""

    refs: set[str] = field(default_factory=set)
    event_ids: set[str] = field(default_factory=set)

    def holds(self, entry: Entry) -> bool:
        return (
            entry.ref in self.refs
            or (entry.header(HEADER_REDRIVEN_FROM) or "") in self.refs
            or (entry.event_id is not None and entry.event_id in self.event_ids)
        )


async def redrive_log(servers: str, dlq_topic: str) -> RedriveLog:
    log = RedriveLog()
    name = f"{dlq_topic}{REDRIVEN_SUFFIX}"
    if not await topic_exists(servers, name):
        return log
    for record in await read_topic(servers, name):
        try:
            note = json.loads(record.value or b"")
        except ValueError:
            continue
        if isinstance(note, dict):
            if isinstance(note.get("dlq"), str):
                log.refs.add(note["dlq"])
            if isinstance(note.get("eventId"), str):
                log.event_ids.add(note["eventId"])
    return log


async def load_dlq(servers: str, dlq_topic: str) -> list[Entry]:
    if not await topic_exists(servers, dlq_topic):
        raise OpsError(f"topic {dlq_topic} does not exist")
    with progress() as bar:
        task = bar.add_task(f"reading {dlq_topic}", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        records = await read_topic(servers, dlq_topic, on_progress=update)
    return sorted((Entry.of(r) for r in records), key=lambda e: (e.timestamp, e.ref))


TypeOpt = Annotated[str | None, typer.Option("--type", help="Only this event type (exact).")]
ReasonOpt = Annotated[
    str | None, typer.Option("--reason", help="Only reasons containing this (any case).")
]
SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since", help="Dead-lettered at or after: ISO 8601 (UTC unless zoned) or 30m, 2h, 7d."
    ),
]
UntilOpt = Annotated[str | None, typer.Option("--until", help="Dead-lettered before: as --since.")]
EventIdOpt = Annotated[
    str | None, typer.Option("--event-id", help="Only this event id (the Svix message id).")
]
TopicArg = Annotated[
    str, typer.Argument(help="The source topic (clerk.users.v1) or its DLQ (clerk.users.v1.dlq).")
]


def filters(
    type_: str | None,
    reason: str | None,
    since: str | None,
    until: str | None,
    event_id: str | None,
) -> Filters:
    return Filters(
        type_, reason, parse_time(since, "--since"), parse_time(until, "--until"), event_id
    )


def _table(rows: Iterable[tuple[Entry, bool]], title: str) -> Table:
    table = Table(title=title)
    for column in ("entry", "dead-lettered at", "event id", "type", "reason", "redriven"):
        table.add_column(column, overflow="fold")
    for entry, redriven in rows:
        table.add_row(
            entry.ref,
            entry.time.isoformat(timespec="seconds"),
            entry.event_id or "-",
            entry.event_type or "-",
            entry.reason[:120],
            "yes" if redriven else "",
        )
    return table


async def _entries(
    servers: str, dlq_topic: str, match: Callable[[Entry], bool]
) -> tuple[list[Entry], RedriveLog]:
    """The DLQ's entries that `match`, and the log of what was redriven from it."""
    entries = [e for e in await load_dlq(servers, dlq_topic) if match(e)]
    return entries, await redrive_log(servers, dlq_topic)


@app.command("list")
def list_(
    topic: TopicArg,
    type_: TypeOpt = None,
    reason: ReasonOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    event_id: EventIdOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object a line instead of a table.")
    ] = False,
) -> None:
    """List the messages in a DLQ, oldest first. Reads without a consumer group: nothing moves."""
    chosen = filters(type_, reason, since, until, event_id)
    settings = kafka_settings()
    _, dlq_topic = topics_of(topic)

    entries, log = run(lambda: _entries(settings.kafka_servers, dlq_topic, chosen.match))
    if as_json:
        for entry in entries:
            out.print_json(json.dumps(entry.as_json(log.holds(entry))), indent=None)
        return
    out.print(_table(((e, log.holds(e)) for e in entries), f"{dlq_topic}: {len(entries)}"))


@app.command()
def show(
    topic: TopicArg,
    event_id: Annotated[str, typer.Argument(help="The event id (the Svix message id).")],
) -> None:
    """Show every DLQ entry of one event: headers, key and the message itself."""
    settings = kafka_settings()
    _, dlq_topic = topics_of(topic)

    entries, log = run(
        lambda: _entries(settings.kafka_servers, dlq_topic, lambda e: e.event_id == event_id)
    )
    if not entries:
        fail(f"no message with event id {event_id} in {dlq_topic}")
    for entry in entries:
        try:
            value: Any = json.loads(entry.value)
        except ValueError:
            value = entry.value.decode(errors="replace")
        document = {
            **entry.as_json(log.holds(entry)),
            "key": entry.key.decode(errors="replace") if entry.key is not None else None,
            "headers": {k: v.decode(errors="replace") for k, v in entry.headers},
            "value": value,
        }
        out.print_json(json.dumps(document))


async def _record(producer: AIOKafkaProducer, log_topic: str, note: dict[str, Any]) -> None:
    await producer.send_and_wait(
        log_topic,
        json.dumps(note).encode(),
        key=(note.get("eventId") or note["dlq"]).encode(),
    )


@app.command()
def redrive(
    topic: TopicArg,
    type_: TypeOpt = None,
    reason: ReasonOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    event_id: EventIdOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be redriven; publish nothing.")
    ] = False,
    again: Annotated[
        bool, typer.Option("--again", help="Also redrive entries already redriven before.")
    ] = False,
) -> None:
    """Republish the selected DLQ messages to their source topic (acks=all) and record each in
    `<topic>.dlq.redriven`; entries recorded there before are skipped unless --again."""
    chosen = filters(type_, reason, since, until, event_id)
    settings = kafka_settings()
    source, dlq_topic = topics_of(topic)
    log_topic = f"{dlq_topic}{REDRIVEN_SUFFIX}"

    async def main() -> tuple[int, int, int]:
        servers = settings.kafka_servers
        entries, log = await _entries(servers, dlq_topic, chosen.match)
        selected = [e for e in entries if again or not log.holds(e)]
        skipped = len(entries) - len(selected)
        if dry_run or not selected:
            for entry in selected:
                target = entry.source_topic(source)
                out.print(f"would redrive {entry.ref} ({entry.event_id}) to {target}")
            return 0, len(selected), skipped
        # faststream: only when publishing
        from siteview_common.kafka import create_topics, start_producer

        await create_topics(settings, [log_topic])
        producer = await start_producer(settings, client_id="siteview-ops-redrive")
        done = 0
        try:
            with progress() as bar:
                task = bar.add_task("redriving", total=len(selected))
                for entry in selected:
                    target = entry.source_topic(source)
                    headers = [(k, v) for k, v in entry.headers if k not in DLQ_HEADERS]
                    headers = [(k, v) for k, v in headers if k != HEADER_REDRIVEN_FROM]
                    headers.append((HEADER_REDRIVEN_FROM, entry.ref.encode()))
                    sent = await producer.send_and_wait(
                        target, entry.value, key=entry.key, headers=headers
                    )
                    await _record(
                        producer,
                        log_topic,
                        {
                            "dlq": entry.ref,
                            "eventId": entry.event_id,
                            "eventType": entry.event_type,
                            "to": f"{sent.topic}/{sent.partition}/{sent.offset}",
                            "at": datetime.now(UTC).isoformat(),
                        },
                    )
                    done += 1
                    bar.update(task, advance=1)
                    out.print(f"redrove {entry.ref} ({entry.event_id}) to {target}")
        finally:
            await producer.stop()
        return done, 0, skipped

    done, would, skipped = run(main)
    skipped_note = f"; {skipped} already redriven, skipped (--again redrives them)"
    if dry_run:
        out.print(f"dry run: would redrive {would}{skipped_note if skipped else ''}")
    else:
        out.print(f"redriven: {done}{skipped_note if skipped else ''}")
