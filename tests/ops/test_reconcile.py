"""`siteview reconcile users` against a local fake of Clerk's Backend API (`GET /v1/users/count`
and `GET /v1/users` with limit/offset, one 429 with Retry-After): it publishes exactly the users
the read model misses or holds older, the users worker applies them, and a second run publishes
nothing."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from conftest import Backend, Stack
from siteview_devstack.processes import base_env
from support import KeyPair, eventually, example, run_module, served, user_event

SECRET = "sk_test_reconcile"
T0 = 1_770_000_000_000


class FakeClerk:
    """The documented user endpoints, paginated, answering the first page request with 429."""

    def __init__(self, users: list[dict[str, Any]]) -> None:
        self.users = users
        self.requests: list[tuple[str, dict[str, str], int]] = []
        self.app = Starlette(
            routes=[Route("/v1/users/count", self.count), Route("/v1/users", self.list)]
        )

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {SECRET}"

    async def count(self, request: Request) -> JSONResponse:
        status = 200 if self._authorized(request) else 401
        self.requests.append((request.url.path, dict(request.query_params), status))
        return JSONResponse({"object": "total_count", "total_count": len(self.users)}, status)

    async def list(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return JSONResponse({"errors": [{"code": "unauthorized"}]}, 401)
        params = dict(request.query_params)
        if not any(path == "/v1/users" for path, _, _ in self.requests):
            self.requests.append((request.url.path, params, 429))
            return JSONResponse(
                {"errors": [{"code": "too_many_requests"}]}, 429, headers={"Retry-After": "0"}
            )
        self.requests.append((request.url.path, params, 200))
        offset, limit = int(params["offset"]), int(params["limit"])
        return JSONResponse(self.users[offset : offset + limit])


def clerk_user(user_id: str, updated_at: int, first_name: str) -> dict[str, Any]:
    user: dict[str, Any] = example("user.created")["data"]
    user.update(id=user_id, first_name=first_name, updated_at=updated_at, created_at=T0)
    user["private_metadata"] = {"never": "published"}
    return user


def reconcile(backend: Backend, stack: Stack, clerk_url: str, *flags: str) -> str:
    env = base_env()
    env.update(
        APP_ENV=backend.app_env,
        MONGODB_URL=backend.mongo,
        KAFKA_BOOTSTRAP_SERVERS=backend.kafka,
        USERS_MONGODB_DATABASE=stack.databases["users"],
        CLERK_SECRET_KEY=SECRET,
        CLERK_API_URL=clerk_url,
        CLERK_PAGE_SIZE="2",
    )
    done = run_module(["siteview_ops.cli", "reconcile", "users", *flags], env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def profile(stack: Stack, signing_key: KeyPair, user_id: str) -> dict[str, Any] | None:
    response = httpx.get(
        f"{stack.urls['users-api']}/users/me",
        headers={"Authorization": f"Bearer {signing_key.token(user_id)}"},
        timeout=15,
    )
    return response.json() if response.status_code == 200 else None


def test_reconcile_publishes_exactly_the_missing_and_older_users(
    backend: Backend, stack: Stack, signing_key: KeyPair
) -> None:
    run = uuid.uuid4().hex[:10]
    missing, older, current = (f"user_{kind}{run}" for kind in ("missing", "older", "current"))
    # What webhooks delivered: `older` at T0 (Clerk has changed it since), `current` as is.
    for user_id, first in ((older, "Before"), (current, "Current")):
        event = user_event("user.created", user_id, updated_at=T0, first_name=first)
        assert stack.gateway.deliver(event).status_code == 202
    for user_id in (older, current):
        eventually(lambda user_id=user_id: profile(stack, signing_key, user_id))

    clerk = FakeClerk(
        [
            clerk_user(missing, T0 + 5, "Missing"),
            clerk_user(older, T0 + 9, "After"),
            clerk_user(current, T0, "Current"),
        ]
    )
    with served(clerk.app) as clerk_url:
        planned = reconcile(backend, stack, clerk_url, "--dry-run")
        assert f"would publish user.created {missing} updated_at={T0 + 5}" in planned
        assert f"would publish user.updated {older} updated_at={T0 + 9}" in planned
        assert current not in planned
        assert "users: 3 in Clerk, 1 up to date, 1 missing, 1 older" in planned

        # Pagination and the rate limit: a 429 first, then offsets 0 and 2 of limit 2.
        pages = [
            (q.get("offset"), q.get("limit"), s) for p, q, s in clerk.requests if p == "/v1/users"
        ]
        assert pages == [("0", "2", 429), ("0", "2", 200), ("2", "2", 200)]

        first = reconcile(backend, stack, clerk_url)
        assert "published 2" in first
        eventually(
            lambda: (profile(stack, signing_key, missing) or {}).get("name") == "Missing Lovelace"
        )
        eventually(lambda: (profile(stack, signing_key, older) or {}).get("updatedAt") == T0 + 9)
        assert profile(stack, signing_key, older)["name"] == "After Lovelace"  # type: ignore[index]
        assert profile(stack, signing_key, current)["updatedAt"] == T0  # type: ignore[index]

        second = reconcile(backend, stack, clerk_url)
        assert "users: 3 in Clerk, 3 up to date, 0 missing, 0 older; published 0" in second
