"""`siteview reconcile users|billing` against a local fake of Clerk's Backend API (users: count
and limit/offset pages, one 429 with Retry-After; billing: statements, their payment attempts,
each user's subscription, all paginated): each publishes exactly what the read model misses or
holds older, the workers apply it, and a second run publishes nothing."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from payments.billing import attempt_event, new_id, subscription_event
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from conftest import Backend, Stack
from siteview_devstack.processes import base_env
from support import (
    KeyPair,
    eventually,
    example,
    new_user_id,
    run_module,
    served,
    user_event,
)

SECRET = "sk_test_reconcile"
T0 = 1_770_000_000_000


class FakeClerk:
    """The documented endpoints, paginated, answering the first user page request with 429.

    Billing answers as the Backend API does, not as webhooks do: `{data, total_count}` pages,
    an attempt with one `subscription_item` and a `payment_method`, a subscription listing
    `subscription_items` and naming its payer only by `payer_id`."""

    def __init__(
        self,
        users: list[dict[str, Any]],
        statements: dict[str, list[dict[str, Any]]] | None = None,
        subscriptions: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.users = users
        self.statements = statements or {}
        self.subscriptions = subscriptions or {}
        self.requests: list[tuple[str, dict[str, str], int]] = []
        self.app = Starlette(
            routes=[
                Route("/v1/users/count", self.count),
                Route("/v1/users", self.list),
                Route("/v1/users/{user_id}/billing/subscription", self.subscription),
                Route("/v1/billing/statements", self.list_statements),
                Route("/v1/billing/statements/{statement_id}/payment_attempts", self.attempts),
            ]
        )

    def _page(self, request: Request, items: list[dict[str, Any]]) -> JSONResponse:
        if not self._authorized(request):
            return JSONResponse({"errors": [{"code": "unauthorized"}]}, 401)
        params = dict(request.query_params)
        self.requests.append((request.url.path, params, 200))
        offset, limit = int(params["offset"]), int(params["limit"])
        return JSONResponse({"data": items[offset : offset + limit], "total_count": len(items)})

    async def list_statements(self, request: Request) -> JSONResponse:
        statements = [{"object": "commerce_statement", "id": s} for s in self.statements]
        return self._page(request, statements)

    async def attempts(self, request: Request) -> JSONResponse:
        return self._page(request, self.statements[request.path_params["statement_id"]])

    async def subscription(self, request: Request) -> JSONResponse:
        if not self._authorized(request):
            return JSONResponse({"errors": [{"code": "unauthorized"}]}, 401)
        found = self.subscriptions.get(request.path_params["user_id"])
        self.requests.append((request.url.path, {}, 200 if found else 404))
        if found is None:
            return JSONResponse({"errors": [{"code": "resource_not_found"}]}, 404)
        return JSONResponse(found)

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


def reconcile(backend: Backend, stack: Stack, clerk_url: str, *args: str) -> str:
    env = base_env()
    env.update(
        APP_ENV=backend.app_env,
        MONGODB_URL=backend.mongo,
        KAFKA_BOOTSTRAP_SERVERS=backend.kafka,
        USERS_MONGODB_DATABASE=stack.databases["users"],
        PAYMENTS_MONGODB_DATABASE=stack.databases["payments"],
        CLERK_SECRET_KEY=SECRET,
        CLERK_API_URL=clerk_url,
        CLERK_PAGE_SIZE="2",
    )
    done = run_module(["siteview_ops.cli", "reconcile", *args], env)
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
        planned = reconcile(backend, stack, clerk_url, "users", "--dry-run")
        assert f"would publish user.created {missing} version={T0 + 5}" in planned
        assert f"would publish user.updated {older} version={T0 + 9}" in planned
        assert current not in planned
        assert "users: 3 in Clerk, 1 up to date, 1 missing, 1 older" in planned

        # Pagination and the rate limit: a 429 first, then offsets 0 and 2 of limit 2.
        pages = [
            (q.get("offset"), q.get("limit"), s) for p, q, s in clerk.requests if p == "/v1/users"
        ]
        assert pages == [("0", "2", 429), ("0", "2", 200), ("2", "2", 200)]

        first = reconcile(backend, stack, clerk_url, "users")
        assert "published 2" in first
        eventually(
            lambda: (profile(stack, signing_key, missing) or {}).get("name") == "Missing Lovelace"
        )
        eventually(lambda: (profile(stack, signing_key, older) or {}).get("updatedAt") == T0 + 9)
        assert profile(stack, signing_key, older)["name"] == "After Lovelace"  # type: ignore[index]
        assert profile(stack, signing_key, current)["updatedAt"] == T0  # type: ignore[index]

        second = reconcile(backend, stack, clerk_url, "users")
        assert "users: 3 in Clerk, 3 up to date, 0 missing, 0 older; published 0" in second


def api_attempt(event: dict[str, Any]) -> dict[str, Any]:
    """A webhook's payment attempt as the Backend API lists it."""
    data = dict(event["data"])
    data["subscription_item"] = data.pop("subscription_items")[0]
    data["payment_method"] = data.pop("payment_source")
    data["amount"] = data.pop("totals")["grand_total"]
    data["object"] = "commerce_payment_attempt"
    return data


def api_subscription(event: dict[str, Any]) -> dict[str, Any]:
    """A webhook's subscription as `GET /v1/users/{id}/billing/subscription` answers it."""
    data = dict(event["data"])
    data["subscription_items"] = data.pop("items")
    data.pop("payer")
    data["payer_id"] = "cpayer_reconcile"
    return data


def test_reconcile_billing_publishes_what_the_payments_model_misses_or_holds_older(
    backend: Backend, stack: Stack, signing_key: KeyPair
) -> None:
    user, other = new_user_id(), new_user_id()
    token = signing_key.token(user)
    ids = {name: new_id("pa") for name in ("settled", "missing", "current", "reopened")}
    # What webhooks delivered: `settled` pending (Clerk has it paid since), `current` and
    # `reopened` paid.
    delivered = [
        attempt_event(user, status="pending", attempt_id=ids["settled"], updated_at=T0),
        attempt_event(user, status="paid", attempt_id=ids["current"], updated_at=T0),
        attempt_event(user, status="paid", attempt_id=ids["reopened"], updated_at=T0),
    ]
    for event in delivered:
        assert stack.gateway.deliver(event).status_code == 202
    eventually(lambda: len(my_payments(stack, token)) == 3)

    clerk_attempts = [
        attempt_event(user, status="paid", attempt_id=ids["settled"], updated_at=T0 + 10),
        attempt_event(user, status="paid", attempt_id=ids["missing"], updated_at=T0 + 5),
        attempt_event(user, status="paid", attempt_id=ids["current"], updated_at=T0),
        # A pending state newer by the clock never reopens a paid attempt.
        attempt_event(user, status="pending", attempt_id=ids["reopened"], updated_at=T0 + 20),
    ]
    subscription_id = new_id("sub")
    subscription = subscription_event(
        user, subscription_id=subscription_id, items=[(new_id("csi"), "active")], updated_at=T0
    )
    clerk = FakeClerk(
        [clerk_user(user, T0, "Payer"), clerk_user(other, T0, "Free")],
        statements={
            new_id("stmt"): [api_attempt(e) for e in clerk_attempts[:3]],
            new_id("stmt"): [api_attempt(clerk_attempts[3])],
        },
        subscriptions={user: api_subscription(subscription)},
    )
    with served(clerk.app) as clerk_url:
        planned = reconcile(backend, stack, clerk_url, "billing", "--dry-run")
        assert f"would publish paymentAttempt.updated {ids['settled']} version={T0 + 10}" in planned
        assert f"would publish paymentAttempt.updated {ids['missing']} version={T0 + 5}" in planned
        assert f"would publish subscription.created {subscription_id} version={T0}" in planned
        assert ids["current"] not in planned and ids["reopened"] not in planned
        assert "payment attempts: 4 in Clerk, 2 up to date, 1 missing, 1 older" in planned
        assert "subscriptions: 1 in Clerk, 0 up to date, 1 missing, 0 older" in planned

        # Pagination: the first statement's three attempts come in pages of two.
        first_statement = next(iter(clerk.statements))
        pages = [q["offset"] for p, q, _ in clerk.requests if first_statement in p]
        assert pages == ["0", "2"]
        assert (f"/v1/users/{other}/billing/subscription", {}, 404) in clerk.requests

        assert "published 3" in reconcile(backend, stack, clerk_url, "billing")
        eventually(
            lambda: (
                {a["id"]: a["status"] for a in my_payments(stack, token)}
                == {
                    ids["settled"]: "paid",
                    ids["missing"]: "paid",
                    ids["current"]: "paid",
                    ids["reopened"]: "paid",
                }
            )
        )
        eventually(lambda: [s["id"] for s in my_subscriptions(stack, token)] == [subscription_id])
        assert my_subscriptions(stack, token)[0]["items"][0]["status"] == "active"

        second = reconcile(backend, stack, clerk_url, "billing")
        assert "payment attempts: 4 in Clerk, 4 up to date, 0 missing, 0 older" in second
        assert "subscriptions: 1 in Clerk, 1 up to date, 0 missing, 0 older; published 0" in second


def my_payments(stack: Stack, token: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{stack.urls['payments-api']}/payments/me",
        headers={"Authorization": f"Bearer {token}"},
        params={"numItems": 20},
        timeout=15,
    )
    assert response.status_code == 200, response.text
    page: list[dict[str, Any]] = response.json()["page"]
    return page


def my_subscriptions(stack: Stack, token: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{stack.urls['payments-api']}/subscriptions/me",
        headers={"Authorization": f"Bearer {token}"},
        timeout=15,
    )
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found
