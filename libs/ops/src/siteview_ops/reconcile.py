"""`siteview reconcile users`: what Clerk holds, compared with our read model, republished.

Clerk does not guarantee webhook delivery. This command lists every user through Clerk's Backend
API (`GET /v1/users/count`, then `GET /v1/users` page by page with `limit`/`offset`), compares
each user's `updated_at` with the users read model's `version`, and publishes, through the
normal topic and keyed as the gateway keys it, a `user.created` event for every user the store
is missing and a `user.updated` one for every user it holds older. A user the store holds
deleted is left alone: deletion is final.

The published event is the gateway's `PublishedEvent` with a synthetic Svix id,
`reconcile_<sha256 of the event type, user id and updated_at>`: a run that publishes a state
twice publishes the same id, which the workers' ledger applies once, and a user already
brought up to date is not published again. Clerk's rate limit (429 with `Retry-After`) and
its passing failures (5xx, connection errors) are retried with back-off (tenacity).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import typer
from aiokafka.errors import KafkaError
from pydantic import Field, ValidationError
from pymongo.errors import PyMongoError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

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
from siteview_common.settings import KafkaSettings, MissingSettingError, load_settings
from siteview_ops.console import Service, err, fail, one_line, progress
from siteview_ops.transfer import OpsMongoSettings
from siteview_users.domain import ClerkUser

CLERK_API_URL = "https://api.clerk.com"


app = typer.Typer(
    help="Compare Clerk with our read models and publish what they miss.", no_args_is_help=True
)


class ReconcileSettings(OpsMongoSettings, KafkaSettings):
    #: Clerk's Backend API secret key (`sk_live_…`).
    clerk_secret_key: str | None = None
    #: Clerk's Backend API base URL.
    clerk_api_url: str = CLERK_API_URL
    #: Attempts per Clerk request (429, 5xx and connection errors are retried with back-off).
    clerk_max_attempts: int = Field(default=8, ge=1)
    #: Longest wait before a retry, whatever `Retry-After` says.
    clerk_max_wait_seconds: float = Field(default=60.0, gt=0)
    #: Users per `GET /v1/users` page (Clerk allows 1 to 500).
    clerk_page_size: int = Field(default=100, ge=1, le=500)

    @property
    def secret_key(self) -> str:
        if not self.clerk_secret_key:
            raise MissingSettingError("CLERK_SECRET_KEY")
        return self.clerk_secret_key


class ClerkApiError(RuntimeError):
    pass


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code == 429 or exc.response.status_code >= 500
    return False


def retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class ClerkClient:
    def __init__(self, http: httpx.AsyncClient, settings: ReconcileSettings) -> None:
        self._http = http
        self._settings = settings
        self._backoff = wait_exponential(multiplier=0.5, max=settings.clerk_max_wait_seconds)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, httpx.HTTPStatusError):
            after = retry_after_seconds(exc.response)
            if after is not None:
                return min(after, self._settings.clerk_max_wait_seconds)
        return float(self._backoff(state))

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_retryable),
                wait=self._wait,
                stop=stop_after_attempt(self._settings.clerk_max_attempts),
                reraise=True,
            ):
                with attempt:
                    response = await self._http.get(path, params=params)
                    response.raise_for_status()
        except httpx.HTTPStatusError as exc:
            raise ClerkApiError(
                f"Clerk answered {exc.response.status_code} to GET {path}: "
                f"{one_line(Exception(exc.response.text[:200]))}"
            ) from exc
        except httpx.TransportError as exc:
            raise ClerkApiError(f"Clerk's API did not answer GET {path}: {one_line(exc)}") from exc
        try:
            return response.json()
        except ValueError as exc:
            raise ClerkApiError(f"Clerk's answer to GET {path} is not JSON") from exc

    async def users(self) -> list[dict[str, Any]]:
        """Every user, following `limit`/`offset` up to `total_count`."""
        count = await self.get("/v1/users/count")
        total = count.get("total_count") if isinstance(count, dict) else None
        if not isinstance(total, int):
            raise ClerkApiError("Clerk's /v1/users/count answer has no total_count")
        users: list[dict[str, Any]] = []
        with progress() as bar:
            task = bar.add_task("fetch users from Clerk", total=total)
            while len(users) < total:
                page = await self.get(
                    "/v1/users",
                    {
                        "limit": self._settings.clerk_page_size,
                        "offset": len(users),
                        "order_by": "+created_at",
                    },
                )
                items = page.get("data") if isinstance(page, dict) else page
                if not isinstance(items, list):
                    raise ClerkApiError("Clerk's /v1/users answer is not a list of users")
                if not items:
                    break
                users.extend(u for u in items if isinstance(u, dict))
                bar.update(task, completed=len(users))
        return users


@dataclass(frozen=True, slots=True)
class Plan:
    """One event to publish."""

    event_type: str
    user_id: str
    updated_at: int
    published: PublishedEvent


def synthetic_svix_id(event_type: str, user_id: str, updated_at: int) -> str:
    digest = hashlib.sha256(f"{event_type}\n{user_id}\n{updated_at}".encode()).hexdigest()
    return f"reconcile_{digest[:40]}"


def plan_users(users: Sequence[dict[str, Any]], stored: dict[str, dict[str, Any]]) -> list[Plan]:
    """What to publish: users the store misses (user.created) or holds older (user.updated)."""
    plans = []
    now = int(time.time() * 1000)
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
        svix_id = synthetic_svix_id(event_type, user.id, updated_at)
        event = ClerkEvent(
            type=event_type,
            data=strip_private_metadata(raw),
            timestamp=updated_at or None,
        )
        published = PublishedEvent(svix_id=svix_id, received_at=now, event=event)
        plans.append(Plan(event_type, user.id, updated_at, published))
    return plans


async def stored_users(settings: ReconcileSettings, ids: Sequence[str]) -> dict[str, Any]:
    client = make_mongo_client(settings, appname="siteview-ops")
    try:
        coll = client[settings.database_of(Service.users)]["users"]
        found: dict[str, Any] = {}
        for start in range(0, len(ids), 1000):
            chunk = list(ids[start : start + 1000])
            async for doc in coll.find(
                {"externalId": {"$in": chunk}}, {"externalId": 1, "version": 1, "deleted": 1}
            ):
                found[doc["externalId"]] = doc
        return found
    finally:
        await client.close()


async def publish(settings: ReconcileSettings, plans: Sequence[Plan]) -> None:
    broker = make_broker(settings, client_id="siteview-reconcile")
    await broker.connect()
    try:
        with progress() as bar:
            task = bar.add_task("publish", total=len(plans))
            for plan in plans:
                target = route(plan.published.event, plan.published.svix_id)
                await broker.publish(
                    plan.published.to_json(),
                    topic=target.topic,
                    key=target.key.encode(),
                    headers={
                        HEADER_EVENT_ID: plan.published.svix_id,
                        HEADER_EVENT_TYPE: plan.event_type,
                    },
                )
                bar.advance(task)
    finally:
        await broker.stop()


async def reconcile_users(settings: ReconcileSettings, dry_run: bool) -> None:
    headers = {"Authorization": f"Bearer {settings.secret_key}", "Accept": "application/json"}
    async with httpx.AsyncClient(
        base_url=settings.clerk_api_url.rstrip("/"), headers=headers, timeout=30
    ) as http:
        users = await ClerkClient(http, settings).users()
    stored = await stored_users(settings, [str(u.get("id")) for u in users])
    plans = plan_users(users, stored)
    for plan in plans:
        verb = "would publish" if dry_run else "publish"
        print(f"{verb} {plan.event_type} {plan.user_id} updated_at={plan.updated_at}")
    if plans and not dry_run:
        await publish(settings, plans)
    created = sum(p.event_type == "user.created" for p in plans)
    summary = (
        f"users: {len(users)} in Clerk, {len(users) - len(plans)} up to date, "
        f"{created} missing, {len(plans) - created} older"
    )
    print(summary + ("; nothing published (dry run)" if dry_run else f"; published {len(plans)}"))


@app.command("users")
def users(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be published; publish nothing")
    ] = False,
) -> None:
    """Publish user.created / user.updated for every Clerk user our read model misses or holds
    older (CLERK_SECRET_KEY, CLERK_API_URL, MONGODB_URL, KAFKA_BOOTSTRAP_SERVERS)."""
    required = ("secret_key", "mongo_url") + (() if dry_run else ("kafka_servers",))
    settings = load_settings(ReconcileSettings, *required)
    try:
        asyncio.run(reconcile_users(settings, dry_run))
    except ClerkApiError as exc:
        fail(str(exc))
    except PyMongoError as exc:
        fail(f"database error: {one_line(exc)}")
    except (OSError, KafkaError) as exc:
        fail(f"publishing failed: {one_line(exc)}")
