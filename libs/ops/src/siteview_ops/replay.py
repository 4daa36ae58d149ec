"""`siteview replay SERVICE`: rebuild a service's read model from its topic into a fresh
database on the same MongoDB, with the service's own worker composition (indexes, parse,
apply, ledger) driven over records this command fetches.

The records are read from the earliest offset up to the end offsets captured at start, in a
consumer group of its own (`<service>-replay-<time>`: partitions assigned by hand, offsets
committed after each batch is written, so its progress shows in Kafka's group tooling and
never touches the service's live group). Poison met on the way is counted and reported, never
dead-lettered again: the live DLQ already holds it. A replay is complete only when Kafka still
holds the topic's whole history: the command checks that every partition starts at offset 0
and warns loudly when one does not.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, cast

import typer
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import OffsetAndMetadata
from faststream.kafka import KafkaBroker
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from siteview_common.consumer import BatchProcessor
from siteview_common.mongo import check_server, make_mongo_client
from siteview_common.runtime import Runtime, Subscription, WorkerSettings
from siteview_common.settings import load_settings
from siteview_ops.console import OpsError, Service, err, out, run
from siteview_ops.dlq import assign_whole_topic

app = typer.Typer(help="Rebuild a service's read model from its Kafka topic.")


@dataclass(frozen=True, slots=True)
class Composition:
    settings: type[WorkerSettings]
    setup: Callable[[Runtime], Awaitable[object]]
    note: str = ""


def composition(service: Service) -> Composition:
    if service is Service.users:
        from siteview_users.bootstrap import subscribe as users_setup
        from siteview_users.settings import UsersSettings

        return Composition(UsersSettings, users_setup)
    if service is Service.payments:
        from siteview_payments.bootstrap import consume_billing
        from siteview_payments.settings import PaymentsSettings

        return Composition(PaymentsSettings, consume_billing)
    from siteview_videos.bootstrap import subscribe as videos_setup
    from siteview_videos.settings import VideosSettings

    return Composition(
        VideosSettings,
        videos_setup,
        note=(
            "videos are written by the videos API, not by a topic: this replay rebuilds only "
            "the deleted-user tombstones and their cascade, never the videos themselves. "
            "Do not point the videos service at it; use it to compare tombstones."
        ),
    )


class ReplayRuntime(Runtime):
    """The service's worker setup runs against this: it records the subscription instead of
    starting a consumer, so the replay drives the same parse and apply itself."""

    def __init__(self, settings: WorkerSettings, mongo: Any) -> None:
        super().__init__(settings, mongo, cast(KafkaBroker, None))
        self.subscriptions: list[Subscription] = []

    def subscribe(self, sub: Subscription) -> None:
        """Records the subscription. Its `changes` are left out: a replay writes a fresh
        database that no API serves, so no live stream is told about it. Only the gateway's
        topics (`parse`) are replayed."""
        if sub.parse is None or sub.decode is not None:
            raise OpsError(f"{sub.topic} does not carry the gateway's events: it is not replayed")
        self.subscriptions.append(sub)


class PoisonCounter:
    """Takes the place of the broker in the replay's `BatchProcessor`: a message that cannot
    apply is counted, not dead-lettered a second time."""

    def __init__(self) -> None:
        self.count = 0

    async def publish(self, *_: Any, **__: Any) -> None:
        self.count += 1


@dataclass(frozen=True, slots=True)
class Outcome:
    topic: str
    records: int
    poison: int
    truncated: dict[int, int]


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S")


async def replay_into(
    service: Service, settings: WorkerSettings, database: str, group: str
) -> Outcome:
    chosen = composition(service)
    target = settings.model_copy(update={"mongodb_database": database})
    mongo = make_mongo_client(target, appname=f"siteview-replay-{service}")
    try:
        await check_server(mongo, target)
        if await mongo[database].list_collection_names():
            raise OpsError(f"database {database} exists already: replay only into a fresh one")
        runtime = ReplayRuntime(target, mongo)
        await chosen.setup(runtime)
        await runtime.ledger.create_indexes()
        if len(runtime.subscriptions) != 1:
            raise OpsError(f"{service} subscribes to {len(runtime.subscriptions)} topics, not 1")
        sub = runtime.subscriptions[0]
        poison = PoisonCounter()
        processor = BatchProcessor(
            group=group,
            broker=cast(KafkaBroker, poison),
            ledger=runtime.ledger,
            decode=sub.decoder(),
            apply=sub.apply,
        )
        return await _consume(settings.kafka_servers, sub.topic, group, processor, poison)
    finally:
        await mongo.close()


async def _consume(
    servers: str,
    topic: str,
    group: str,
    processor: BatchProcessor[Any],
    poison: PoisonCounter,
) -> Outcome:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
        client_id=group,
    )
    await consumer.start()
    try:
        tps, starts, ends = await assign_whole_topic(consumer, servers, topic)
        truncated = {tp.partition: starts[tp] for tp in tps if starts[tp] > 0}
        if truncated:
            first = ", ".join(f"partition {p} starts at offset {o}" for p, o in truncated.items())
            err.print(
                f"[bold red]WARNING: {topic}'s history was truncated by retention ({first}): "
                "events older than that are gone, so this replay is NOT complete.[/]"
            )
        for tp in tps:
            consumer.seek(tp, starts[tp])
        total = sum(ends[tp] - starts[tp] for tp in tps)
        pending = {tp for tp in tps if ends[tp] > starts[tp]}
        done = 0
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err,
        ) as bar:
            task = bar.add_task(f"replaying {topic}", total=total)
            while pending:
                batches = await consumer.getmany(*pending, timeout_ms=500, max_records=500)
                records = [r for tp, batch in batches.items() for r in batch if r.offset < ends[tp]]
                if records:
                    await processor.process(records)
                    done += len(records)
                    bar.update(task, completed=done)
                    await consumer.commit(
                        {
                            tp: OffsetAndMetadata(min(batch[-1].offset + 1, ends[tp]), "")
                            for tp, batch in batches.items()
                            if batch
                        }
                    )
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
        return Outcome(topic, done, poison.count, truncated)
    finally:
        await consumer.stop()


@app.command("replay")
def replay(
    service: Annotated[Service, typer.Argument(help="The service whose read model to rebuild.")],
    database: Annotated[
        str | None,
        typer.Option(
            "--database", help="The fresh database to fill (default: <db>_replay_<time>)."
        ),
    ] = None,
) -> None:
    """Rebuild SERVICE's read model from the earliest offset of its topic into a fresh
    database, with the service's own parse and apply, and say how to switch over to it."""
    chosen = composition(service)
    settings = load_settings(chosen.settings, "kafka_servers", "mongo_url")
    when = stamp()
    target = database or f"{settings.mongodb_database}_replay_{when}"
    group = f"{service}-replay-{when}"
    if chosen.note:
        err.print(f"[bold yellow]NOTE: {chosen.note}[/]")
    outcome: Outcome = run(lambda: replay_into(service, settings, target, group))
    out.print(
        f"replayed {outcome.records} records of {outcome.topic} into database {target} "
        f"(consumer group {group}); {outcome.poison} could not apply (they are in "
        f"{outcome.topic}.dlq already)"
    )
    if outcome.truncated:
        print("siteview: WARNING: history was truncated; the replay is incomplete", file=sys.stderr)
    if chosen.note:
        return
    live = settings.mongodb_database
    out.print(
        f"To switch {service} over: {service}-api and {service}-worker read their database "
        "from the setting MONGODB_DATABASE, so the switch is a settings change.\n"
        f"  1. {target} holds {outcome.topic} up to the end offsets captured when this replay "
        f"began. Replay with {service}-worker stopped: events a running worker applied "
        f"meanwhile are only in {live} (if it ran, stop it and replay again).\n"
        f"  2. Set MONGODB_DATABASE={target} for {service}-api and {service}-worker, start the "
        "worker and restart the API. The worker resumes from its own consumer group's offsets; "
        "events it applies again are skipped by the ledger.\n"
        f"  3. Keep {live} until you have checked {target}; then drop it.\n"
        "On Kubernetes (deploy/), step 2 is:\n"
        f"  kubectl -n siteview patch configmap {service}-config --type merge "
        f'-p \'{{"data": {{"MONGODB_DATABASE": "{target}"}}}}\'\n'
        f"  kubectl -n siteview rollout restart deployment/{service}-api "
        f"deployment/{service}-worker"
    )
