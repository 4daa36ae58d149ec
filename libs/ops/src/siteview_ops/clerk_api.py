"""A small client of Clerk's Backend API for the reconcile commands: bearer authentication with
`CLERK_SECRET_KEY`, offset pagination, and Clerk's rate limit (429 with `Retry-After`) and
passing failures (5xx, connection errors) retried with back-off (tenacity)."""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import Field
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from siteview_common.settings import KafkaSettings, MissingSettingError
from siteview_ops.console import OpsError, one_line, progress
from siteview_ops.transfer import OpsMongoSettings

CLERK_API_URL = "https://api.clerk.com"


class ReconcileSettings(OpsMongoSettings, KafkaSettings):
    #: Clerk's Backend API secret key (`sk_live_…`).
    clerk_secret_key: str | None = None
    #: Clerk's Backend API base URL.
    clerk_api_url: str = CLERK_API_URL
    #: Attempts per Clerk request (429, 5xx and connection errors are retried with back-off).
    clerk_max_attempts: int = Field(default=8, ge=1)
    #: Longest wait before a retry, whatever `Retry-After` says.
    clerk_max_wait_seconds: float = Field(default=60.0, gt=0)
    #: Objects per page of a Clerk list (Clerk allows 1 to 500).
    clerk_page_size: int = Field(default=100, ge=1, le=500)

    @property
    def secret_key(self) -> str:
        if not self.clerk_secret_key:
            raise MissingSettingError("CLERK_SECRET_KEY")
        return self.clerk_secret_key


class ClerkApiError(OpsError):
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


def page_items(page: Any, path: str) -> tuple[list[dict[str, Any]], int | None]:
    """A list page's objects and `total_count`: Clerk answers some lists with a bare array
    (`/v1/users`) and others with `{data, total_count}` (the billing lists)."""
    total = None
    if isinstance(page, dict):
        total = page.get("total_count") if isinstance(page.get("total_count"), int) else None
        page = page.get("data")
    if not isinstance(page, list):
        raise ClerkApiError(f"Clerk's answer to GET {path} is not a list")
    return [item for item in page if isinstance(item, dict)], total


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

    async def get(
        self, path: str, params: dict[str, Any] | None = None, *, missing_ok: bool = False
    ) -> Any:
        """The JSON Clerk answers; None for a 404 when `missing_ok`."""
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_retryable),
                wait=self._wait,
                stop=stop_after_attempt(self._settings.clerk_max_attempts),
                reraise=True,
            ):
                with attempt:
                    response = await self._http.get(path, params=params)
                    if missing_ok and response.status_code == 404:
                        return None
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

    async def list_all(
        self, path: str, what: str, *, total: int | None = None, **params: Any
    ) -> list[dict[str, Any]]:
        """Every object of a list, page by page with `limit`/`offset`, until a short page or
        `total_count` (from the pages, or `total` when the list does not say)."""
        size = self._settings.clerk_page_size
        found: list[dict[str, Any]] = []
        with progress() as bar:
            task = bar.add_task(f"fetch {what} from Clerk", total=total)
            while total is None or len(found) < total:
                page = await self.get(path, {**params, "limit": size, "offset": len(found)})
                items, page_total = page_items(page, path)
                found.extend(items)
                total = page_total if page_total is not None else total
                bar.update(task, completed=len(found), total=total)
                if len(items) < size:
                    break
        return found

    async def users(self) -> list[dict[str, Any]]:
        """Every user, oldest first, counted first so the progress bar knows its end."""
        count = await self.get("/v1/users/count")
        total = count.get("total_count") if isinstance(count, dict) else None
        if not isinstance(total, int):
            raise ClerkApiError("Clerk's /v1/users/count answer has no total_count")
        return await self.list_all("/v1/users", "users", total=total, order_by="+created_at")

    async def payment_attempts(self) -> list[dict[str, Any]]:
        """Every payment attempt of every billing statement."""
        statements = await self.list_all("/v1/billing/statements", "statements", paginated="true")
        attempts: list[dict[str, Any]] = []
        for statement in statements:
            statement_id = statement.get("id")
            if not isinstance(statement_id, str) or not statement_id:
                raise ClerkApiError("Clerk listed a billing statement without an id")
            attempts += await self.list_all(
                f"/v1/billing/statements/{statement_id}/payment_attempts",
                f"payment attempts of {statement_id}",
                paginated="true",
            )
        return attempts

    async def subscription_of(self, user_id: str) -> dict[str, Any] | None:
        """The user's billing subscription; None when the user has none."""
        found = await self.get(f"/v1/users/{user_id}/billing/subscription", missing_ok=True)
        return found if isinstance(found, dict) else None
