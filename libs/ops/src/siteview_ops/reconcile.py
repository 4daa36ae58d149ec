"""`siteview reconcile users|billing`: what Clerk holds, compared with our read models, and
what they miss or hold older published through the normal topics.

Clerk does not guarantee webhook delivery. `users` lists every user (`GET /v1/users/count`,
then `GET /v1/users` page by page) and compares each user's `updated_at` with the users read
model's `version`. `billing` lists every billing statement (`GET /v1/billing/statements`) and
each statement's payment attempts (`GET /v1/billing/statements/{id}/payment_attempts`), and
each Clerk user's subscription (`GET /v1/users/{id}/billing/subscription`), and compares them
with the payments read model by the payments service's own rule (a terminal attempt outranks
a pending one; otherwise the newer clock wins).

What is missing is published as `*.created` (a payment attempt no longer pending as
`paymentAttempt.updated`, as Clerk would have sent it), what is older as `*.updated`, keyed as
the gateway keys it, as the gateway's `PublishedEvent` with a synthetic Svix id,
`reconcile_<sha256 of the event type, record id and version>`: a run that publishes a state
twice publishes the same id, which the workers' ledger applies once, and a record already
brought up to date is not published again. A user the store holds deleted is left alone:
deletion is final.

The Backend API's billing objects are not quite the webhooks' (an attempt has one
`subscription_item`, a `payment_method` and an `amount`; a subscription lists
`subscription_items`): they are published in the webhooks' shape, fields renamed, nothing
invented. Organizations' subscriptions are not listed (SiteView's payers are users); their
payment attempts are.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import httpx
import typer
from pydantic import ValidationError
from pymongo.errors import PyMongoError

from siteview_common.consumer import PoisonMessageError
from siteview_common.events import (
    HEADER_EVENT_ID,
    HEADER_EVENT_TYPE,
    ClerkEvent,
    PublishedEvent,
    route,
    strip_private_metadata,
)
from siteview_common.kafka import make_broker
from siteview_common.mongo import make_mongo_client
from siteview_common.settings import load_settings
from siteview_ops.clerk_api import ClerkClient, ReconcileSettings
from siteview_ops.console import OpsError, Service, err, one_line, progress, run
from siteview_payments.domain import attempt_command, rank, subscription_command
from siteview_users.domain import ClerkUser

C = TypeVar("C")

app = typer.Typer(
    help="Compare Clerk with our read models and publish what they miss.", no_args_is_help=True
)

DryRun = Annotated[
    bool, typer.Option("--dry-run", help="List what would be published; publish nothing")
]


@dataclass(frozen=True, slots=True)
class Plan:
    """One event to publish."""

    event_type: str
    record_id: str
    version: int
    #: Whether the store lacks the record (else it holds it older).
    missing: bool
    published: PublishedEvent


def synthetic_svix_id(event_type: str, record_id: str, version: int) -> str:
    digest = hashlib.sha256(f"{event_type}\n{record_id}\n{version}".encode()).hexdigest()
    return f"reconcile_{digest[:40]}"


def plan(
    event_type: str, record_id: str, version: int, data: dict[str, Any], *, missing: bool
) -> Plan:
    """The event that carries `data`, as the gateway would have published it."""
    event = ClerkEvent(
        type=event_type, data=strip_private_metadata(data), timestamp=version or None
    )
    published = PublishedEvent(
        svix_id=synthetic_svix_id(event_type, record_id, version),
        received_at=int(time.time() * 1000),
        event=event,
    )
    return Plan(event_type, record_id, version, missing, published)


def plan_users(users: Sequence[dict[str, Any]], stored: dict[str, dict[str, Any]]) -> list[Plan]:
    """What to publish: users the store misses (user.created) or holds older (user.updated)."""
    plans = []
    for raw in users:
        try:
            user = ClerkUser.model_validate(raw)
        except ValidationError:
            err.print(f"skipped a user Clerk listed that is not a user: {raw.get('id')!r}")
            continue
        updated_at = user.updated_at or user.created_at or 0
        record = stored.get(user.id)
        if record is None:
            event_type = "user.created"
        elif record.get("deleted") or int(record.get("version", 0)) >= updated_at:
            continue
        else:
            event_type = "user.updated"
        plans.append(plan(event_type, user.id, updated_at, raw, missing=record is None))
    return plans


def attempt_as_webhook(api: dict[str, Any]) -> dict[str, Any]:
    """A Backend API payment attempt in the shape `paymentAttempt.*` webhooks carry."""
    data = dict(api)
    if "payment_source" not in data and isinstance(api.get("payment_method"), dict):
        data["payment_source"] = api["payment_method"]
    if "subscription_items" not in data and isinstance(api.get("subscription_item"), dict):
        data["subscription_items"] = [api["subscription_item"]]
    if "totals" not in data and isinstance(api.get("amount"), dict):
        data["totals"] = {"grand_total": api["amount"]}
    return data


def subscription_as_webhook(api: dict[str, Any], user_id: str) -> dict[str, Any]:
    """A Backend API subscription in the shape `subscription.*` webhooks carry, paid by the
    user it was fetched for when Clerk's answer does not name a payer."""
    data = dict(api)
    if "items" not in data and isinstance(api.get("subscription_items"), list):
        data["items"] = api["subscription_items"]
    given = data.get("payer")
    payer: dict[str, Any] = given if isinstance(given, dict) else {}
    if not (payer.get("user_id") or payer.get("organization_id")):
        data["payer"] = {**payer, "user_id": user_id}
    return data


def stored_rank(record: dict[str, Any]) -> tuple[bool, int]:
    """A stored payment attempt's rank, as `siteview_payments.domain.rank` ranks commands."""
    return (bool(record.get("terminal")), int(record.get("version", 0)))


def command_of(candidate: Plan, to_command: Callable[[PublishedEvent], C], what: str) -> C | None:
    """What the payments service would make of `candidate`; None (and a line on stderr) when
    it would dead-letter it."""
    try:
        return to_command(candidate.published)
    except (ValidationError, PoisonMessageError) as exc:
        err.print(f"skipped {what}: {one_line(exc)}")
        return None


def plan_attempts(
    attempts: Sequence[dict[str, Any]], stored: dict[str, dict[str, Any]]
) -> list[Plan]:
    """Attempts the store misses, or holds at a lower rank (pending where Clerk says paid)."""
    plans = []
    for api in attempts:
        data = attempt_as_webhook(api)
        record_id = str(data.get("id"))
        record = stored.get(record_id)
        # Clerk sends .created for a new (pending) attempt and .updated for every change.
        new = record is None and data.get("status") == "pending"
        event_type = "paymentAttempt.created" if new else "paymentAttempt.updated"
        version = int(data.get("updated_at") or 0)
        candidate = plan(event_type, record_id, version, data, missing=record is None)
        command = command_of(candidate, attempt_command, f"payment attempt {record_id!r}")
        if command is None:
            continue
        if record is None or rank(command) > stored_rank(record):
            plans.append(candidate)
    return plans


def plan_subscriptions(
    subscriptions: Sequence[tuple[str, dict[str, Any]]], stored: dict[str, dict[str, Any]]
) -> list[Plan]:
    """Subscriptions (user id, Clerk's answer) the store misses or holds older."""
    plans = []
    for user_id, api in subscriptions:
        data = subscription_as_webhook(api, user_id)
        record_id, version = str(data.get("id")), int(data.get("updated_at") or 0)
        record = stored.get(record_id)
        event_type = "subscription.created" if record is None else "subscription.updated"
        candidate = plan(event_type, record_id, version, data, missing=record is None)
        command = command_of(candidate, subscription_command, f"the subscription of {user_id}")
        if command is None:
            continue
        if record is None or int(record.get("version", 0)) < command.version:
            plans.append(candidate)
    return plans


async def stored_records(
    settings: ReconcileSettings, service: Service, collection: str, key: str, ids: Sequence[str]
) -> dict[str, Any]:
    """The stored records among `ids`, by `key`, with what the plans compare."""
    client = make_mongo_client(settings, appname="siteview-ops")
    try:
        coll = client[settings.database_of(service)][collection]
        projection = {key: 1, "version": 1, "deleted": 1, "terminal": 1}
        found: dict[str, Any] = {}
        for start in range(0, len(ids), 1000):
            chunk = list(ids[start : start + 1000])
            async for doc in coll.find({key: {"$in": chunk}}, projection):
                found[doc[key]] = doc
        return found
    finally:
        await client.close()


async def publish(settings: ReconcileSettings, plans: Sequence[Plan]) -> None:
    broker = make_broker(settings, client_id="siteview-reconcile")
    await broker.connect()
    try:
        with progress() as bar:
            task = bar.add_task("publish", total=len(plans))
            for each in plans:
                target = route(each.published.event, each.published.svix_id)
                await broker.publish(
                    each.published.to_json(),
                    topic=target.topic,
                    key=target.key.encode(),
                    headers={
                        HEADER_EVENT_ID: each.published.svix_id,
                        HEADER_EVENT_TYPE: each.event_type,
                    },
                )
                bar.advance(task)
    finally:
        await broker.stop()


def summary(what: str, listed: int, plans: Sequence[Plan]) -> str:
    missing = sum(p.missing for p in plans)
    return (
        f"{what}: {listed} in Clerk, {listed - len(plans)} up to date, "
        f"{missing} missing, {len(plans) - missing} older"
    )


async def report(
    settings: ReconcileSettings, plans: Sequence[Plan], lines: Sequence[str], dry_run: bool
) -> None:
    for each in plans:
        verb = "would publish" if dry_run else "publish"
        print(f"{verb} {each.event_type} {each.record_id} version={each.version}")
    if plans and not dry_run:
        await publish(settings, plans)
    done = "; nothing published (dry run)" if dry_run else f"; published {len(plans)}"
    print("\n".join(lines) + done)


def clerk(settings: ReconcileSettings) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {settings.secret_key}", "Accept": "application/json"}
    return httpx.AsyncClient(
        base_url=settings.clerk_api_url.rstrip("/"), headers=headers, timeout=30
    )


async def reconcile_users(settings: ReconcileSettings, dry_run: bool) -> None:
    async with clerk(settings) as http:
        users = await ClerkClient(http, settings).users()
    ids = [str(u.get("id")) for u in users]
    stored = await stored_records(settings, Service.users, "users", "externalId", ids)
    plans = plan_users(users, stored)
    await report(settings, plans, [summary("users", len(users), plans)], dry_run)


async def reconcile_billing(settings: ReconcileSettings, dry_run: bool) -> None:
    async with clerk(settings) as http:
        api = ClerkClient(http, settings)
        attempts = await api.payment_attempts()
        user_ids = [str(u.get("id")) for u in await api.users()]
        subscriptions = []
        with progress() as bar:
            for user_id in bar.track(user_ids, description="fetch subscriptions from Clerk"):
                found = await api.subscription_of(user_id)
                if found is not None:
                    subscriptions.append((user_id, found))
    ids = [str(a.get("id")) for a in attempts]
    stored = await stored_records(settings, Service.payments, "payment_attempts", "_id", ids)
    attempt_plans = plan_attempts(attempts, stored)
    ids = [str(s.get("id")) for _, s in subscriptions]
    stored = await stored_records(settings, Service.payments, "subscriptions", "_id", ids)
    subscription_plans = plan_subscriptions(subscriptions, stored)
    lines = [
        summary("payment attempts", len(attempts), attempt_plans),
        summary("subscriptions", len(subscriptions), subscription_plans),
    ]
    await report(settings, attempt_plans + subscription_plans, lines, dry_run)


def reconcile(body: Callable[[ReconcileSettings, bool], Awaitable[None]], dry_run: bool) -> None:
    required = ("secret_key", "mongo_url") + (() if dry_run else ("kafka_servers",))
    settings = load_settings(ReconcileSettings, *required)

    async def main() -> None:
        try:
            await body(settings, dry_run)
        except PyMongoError as exc:
            raise OpsError(f"database error: {one_line(exc)}") from exc

    run(main)


@app.command("users")
def users(dry_run: DryRun = False) -> None:
    """Publish user.created / user.updated for every Clerk user our read model misses or holds
    older (CLERK_SECRET_KEY, CLERK_API_URL, MONGODB_URL, KAFKA_BOOTSTRAP_SERVERS)."""
    reconcile(reconcile_users, dry_run)


@app.command("billing")
def billing(dry_run: DryRun = False) -> None:
    """Publish paymentAttempt.* and subscription.* for every payment attempt (from Clerk's
    billing statements) and every user's subscription that our read model misses or holds
    older (CLERK_SECRET_KEY, CLERK_API_URL, MONGODB_URL, KAFKA_BOOTSTRAP_SERVERS)."""
    reconcile(reconcile_billing, dry_run)
