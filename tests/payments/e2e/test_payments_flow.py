"""Signed Clerk Billing webhooks → gateway → Kafka → payments worker → MongoDB → the payments
API, over real processes, the real broker and the real driver."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from payments.billing import attempt_event, item_event, new_id, subscription_event
from pymongo import AsyncMongoClient

from conftest import Backend, Stack
from siteview_common.events import HEADER_DLQ_REASON, Topics
from support import (
    KeyPair,
    dead_letter_headers,
    eventually,
    eventually_async,
    new_svix_id,
    new_user_id,
    wait_in_ledger,
)

pytestmark = pytest.mark.e2e


def get(stack: Stack, path: str, token: str | None = None, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(
        f"{stack.urls['payments-api']}{path}", headers=headers, params=params, timeout=10
    )


def my_attempts(stack: Stack, token: str, **params: Any) -> list[dict[str, Any]]:
    response = get(stack, "/payments/me", token, **params)
    assert response.status_code == 200, response.text
    page: list[dict[str, Any]] = response.json()["page"]
    return page


def attempt_with(stack: Stack, token: str, attempt_id: str, status: str) -> dict[str, Any] | None:
    for item in my_attempts(stack, token):
        if item["id"] == attempt_id and item["status"] == status:
            return item
    return None


def deliver(stack: Stack, event: dict[str, Any], svix_id: str | None = None) -> None:
    response = stack.gateway.deliver(event, svix_id=svix_id)
    assert response.status_code == 202, response.text


def settle(stack: Stack, backend: Backend, signing_key: KeyPair, user_id: str) -> None:
    """Deliver a marker attempt (a new one, so it hides nothing) on the user's key, and wait
    until the worker recorded it in its ledger: the partition is consumed in order and a batch
    is recorded only after all its writes (attempts, subscriptions, items) returned, so every
    event delivered before it for this user has been applied or found stale by then. Seeing
    the marker through the API would not be enough: it may sit in the same batch as the event
    under test, whose write to another collection can still be running."""
    marker, svix_id = new_id("pa"), new_svix_id()
    deliver(stack, attempt_event(user_id, attempt_id=marker, created_at=1, updated_at=1), svix_id)
    wait_in_ledger(backend.mongo, stack.databases["payments"], svix_id)
    assert attempt_with(stack, signing_key.token(user_id), marker, "pending")


def test_a_paid_checkout_is_readable_by_its_payer_before_the_user_is_ever_seen(
    stack: Stack, signing_key: KeyPair
) -> None:
    uid = new_user_id()  # no user.* event for this user is ever sent
    token = signing_key.token(uid)
    pa, pay = new_id("pa"), new_id("pay")
    created = attempt_event(uid, attempt_id=pa, payment_id=pay, updated_at=1_773_153_000_000)
    paid = attempt_event(
        uid, attempt_id=pa, payment_id=pay, status="paid", updated_at=1_773_153_004_000
    )
    deliver(stack, created)
    deliver(stack, paid)
    body = eventually(lambda: attempt_with(stack, token, pa, "paid"))
    assert body["paymentId"] == pay
    assert body["userId"] == uid
    assert body["chargeType"] == "checkout"
    assert (body["createdAt"], body["updatedAt"], body["paidAt"]) == (
        1_773_153_000_000,
        1_773_153_004_000,
        1_773_153_004_000,
    )
    assert (body["failedAt"], body["failedReason"]) == (None, None)
    assert body["totals"]["grandTotal"]["amount"] == 2000
    assert body["subscriptionItems"][0]["plan"]["slug"] == "pro"
    assert "raw" not in body
    one = get(stack, f"/payments/{pay}", token)
    assert one.status_code == 200 and one.json() == body
    users = httpx.get(
        f"{stack.urls['users-api']}/users/me", headers={"Authorization": f"Bearer {token}"}
    )
    assert users.status_code == 404  # the users service never heard of this user


def test_reordered_and_duplicate_deliveries_converge_on_the_terminal_state(
    stack: Stack, backend: Backend, signing_key: KeyPair
) -> None:
    uid = new_user_id()
    token = signing_key.token(uid)
    pa = new_id("pa")
    failed = attempt_event(uid, attempt_id=pa, status="failed", updated_at=1_775_831_460_000)
    pending = attempt_event(uid, attempt_id=pa, updated_at=1_775_831_400_000)
    failed_id, pending_id = new_svix_id(), new_svix_id()
    deliver(stack, failed, failed_id)
    deliver(stack, pending, pending_id)
    deliver(stack, failed, failed_id)  # Clerk retry
    deliver(stack, pending, pending_id)  # replay
    deliver(stack, pending)  # the same state under another delivery id
    late = attempt_event(uid, attempt_id=pa, updated_at=1_775_831_999_000)
    deliver(stack, late)  # a newer clock, but a failed attempt is settled for good
    settle(stack, backend, signing_key, uid)
    body = attempt_with(stack, token, pa, "failed")
    assert body is not None, my_attempts(stack, token)
    assert body["failedReason"] == {"code": "card_declined", "declineCode": "insufficient_funds"}
    assert body["chargeType"] == "recurring"
    assert [a["id"] for a in my_attempts(stack, token)].count(pa) == 1


def test_the_latest_attempt_of_a_retried_payment_is_returned(
    stack: Stack, signing_key: KeyPair
) -> None:
    uid = new_user_id()
    token = signing_key.token(uid)
    pay, first, retry = new_id("pay"), new_id("pa"), new_id("pa")
    deliver(
        stack,
        attempt_event(
            uid, attempt_id=first, payment_id=pay, status="failed", created_at=10, updated_at=11
        ),
    )
    deliver(
        stack,
        attempt_event(
            uid, attempt_id=retry, payment_id=pay, status="paid", created_at=20, updated_at=21
        ),
    )
    eventually(lambda: attempt_with(stack, token, first, "failed"))
    eventually(lambda: attempt_with(stack, token, retry, "paid"))
    body = get(stack, f"/payments/{pay}", token).json()
    assert (body["id"], body["status"]) == (retry, "paid")


def test_subscriptions_show_items_merged_with_their_own_events(
    stack: Stack, backend: Backend, signing_key: KeyPair
) -> None:
    uid = new_user_id()
    token = signing_key.token(uid)
    sub, free, pro = new_id("sub"), new_id("subi"), new_id("subi")
    deliver(stack, item_event(uid, item_id=pro, status="active", timestamp=2_000))
    deliver(
        stack,
        subscription_event(
            uid,
            subscription_id=sub,
            items=[(free, "ended"), (pro, "active")],
            updated_at=2_000,
        ),
    )
    deliver(  # past due after a failed renewal: newer than the subscription event
        stack,
        item_event(uid, item_id=pro, status="past_due", timestamp=3_000, period_end=4_000),
    )
    deliver(  # an older subscription state arriving late changes nothing
        stack,
        subscription_event(uid, subscription_id=sub, items=[(free, "active")], updated_at=1_000),
    )
    settle(stack, backend, signing_key, uid)
    response = get(stack, "/subscriptions/me", token)
    assert response.status_code == 200
    [view] = response.json()
    assert [i["status"] for i in view["items"]] == ["ended", "past_due"]
    assert (view["id"], view["userId"], view["status"], view["updatedAt"]) == (
        sub,
        uid,
        "active",
        2_000,
    )
    ended, past_due = view["items"]
    assert ended["id"] == free
    assert (past_due["id"], past_due["periodEnd"]) == (pro, 4_000)
    assert past_due["plan"] == {
        "id": "plan_2abcPROxyz000000000001",
        "name": "Pro",
        "slug": "pro",
        "amount": 2000,
        "currency": "USD",
        "period": "month",
        "interval": 1,
    }


async def test_an_organization_attempt_is_kept_for_the_organization(
    stack: Stack, backend: Backend
) -> None:
    org, pa = new_id("org"), new_id("pa")
    await asyncio.to_thread(deliver, stack, attempt_event(None, attempt_id=pa, org_id=org))
    client: AsyncMongoClient[Any] = AsyncMongoClient(backend.mongo)
    try:
        attempts = client[stack.databases["payments"]]["payment_attempts"]

        async def stored() -> dict[str, Any] | None:
            return await attempts.find_one({"_id": pa})

        doc = await eventually_async(stored)
    finally:
        await client.close()
    assert (doc["userId"], doc["organizationId"]) == (None, org)
    assert doc["raw"]["data"]["id"] == pa


async def test_a_malformed_attempt_reaches_the_dlq_and_the_partition_moves_on(
    stack: Stack, backend: Backend, signing_key: KeyPair
) -> None:
    uid = new_user_id()
    malformed = attempt_event(uid, drop=["status"])
    svix_id = new_svix_id()
    await asyncio.to_thread(deliver, stack, malformed, svix_id)
    pa = new_id("pa")
    await asyncio.to_thread(deliver, stack, attempt_event(uid, attempt_id=pa))  # same key
    headers = await dead_letter_headers(backend.kafka, Topics.dlq(Topics.BILLING), svix_id)
    assert "ValidationError" in headers[HEADER_DLQ_REASON]
    assert headers["dlq-group"] == "payments-service"
    assert headers["event-type"] == "paymentAttempt.created"
    token = signing_key.token(uid)
    await asyncio.to_thread(eventually, lambda: attempt_with(stack, token, pa, "pending"))
    assert [a["id"] for a in my_attempts(stack, token)] == [pa]


@pytest.fixture(scope="module")
def owned(stack: Stack, signing_key: KeyPair) -> dict[str, str]:
    """One user's attempt and subscription, synced."""
    uid = new_user_id()
    pa, pay, sub = new_id("pa"), new_id("pay"), new_id("sub")
    deliver(stack, attempt_event(uid, attempt_id=pa, payment_id=pay))
    deliver(
        stack,
        subscription_event(
            uid, subscription_id=sub, items=[(new_id("subi"), "active")], updated_at=5
        ),
    )
    token = signing_key.token(uid)
    eventually(lambda: get(stack, "/subscriptions/me", token).json())
    eventually(lambda: attempt_with(stack, token, pa, "pending"))
    return {"uid": uid, "pa": pa, "pay": pay, "sub": sub}


class TestOwnership:
    """Owner, another user, no token and a forged token, on every payments endpoint."""

    def test_the_owner_sees_everything(
        self, stack: Stack, signing_key: KeyPair, owned: dict[str, str]
    ) -> None:
        token = signing_key.token(owned["uid"])
        assert [a["id"] for a in my_attempts(stack, token)] == [owned["pa"]]
        one = get(stack, f"/payments/{owned['pay']}", token)
        assert (one.status_code, one.json()["id"]) == (200, owned["pa"])
        subs = get(stack, "/subscriptions/me", token)
        assert (subs.status_code, [s["id"] for s in subs.json()]) == (200, [owned["sub"]])

    def test_another_user_sees_nothing_of_it(
        self, stack: Stack, signing_key: KeyPair, owned: dict[str, str]
    ) -> None:
        token = signing_key.token(new_user_id())
        me = get(stack, "/payments/me", token)
        assert (me.status_code, me.json()["page"], me.json()["isDone"]) == (200, [], True)
        one = get(stack, f"/payments/{owned['pay']}", token)
        assert (one.status_code, one.json()) == (404, {"detail": "payment not found"})
        subs = get(stack, "/subscriptions/me", token)
        assert (subs.status_code, subs.json()) == (200, [])

    @pytest.mark.parametrize("path", ["/payments/me", "/payments/{pay}", "/subscriptions/me"])
    @pytest.mark.parametrize("token", [None, "not.a.jwt", "forged"])
    def test_without_a_valid_token_every_endpoint_answers_401(
        self, stack: Stack, owned: dict[str, str], path: str, token: str | None
    ) -> None:
        if token == "forged":
            token = KeyPair("test-key-1").token(owned["uid"])  # same kid, another key
        response = get(stack, path.format(pay=owned["pay"]), token)
        assert response.status_code == 401
        assert response.json() == {"detail": "missing or invalid session token"}


def test_pagination_walks_newest_first_and_refuses_bad_cursors(
    stack: Stack, signing_key: KeyPair
) -> None:
    uid = new_user_id()
    token = signing_key.token(uid)
    ids = [new_id("pa") for _ in range(5)]
    for i, pa in enumerate(ids):
        deliver(stack, attempt_event(uid, attempt_id=pa, created_at=100 + i, updated_at=100 + i))
    eventually(lambda: len(my_attempts(stack, token)) == 5)

    seen: list[str] = []
    cursors: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"numItems": 2, **({"cursor": cursor} if cursor else {})}
        response = get(stack, "/payments/me", token, **params)
        assert response.status_code == 200
        body = response.json()
        assert isinstance(body["continueCursor"], str)
        assert len(body["page"]) <= 2
        seen.extend(a["id"] for a in body["page"])
        cursor = body["continueCursor"]
        cursors.append(cursor)
        if body["isDone"]:
            break
    assert seen == ids[::-1]
    assert len(cursors) == 3

    done = get(stack, "/payments/me", token, numItems=2, cursor=cursors[-1]).json()
    assert (done["page"], done["isDone"], isinstance(done["continueCursor"], str)) == (
        [],
        True,
        True,
    )
    body_part, mac = cursors[0].split(".")
    tampered = f"{body_part}.{'A' * len(mac)}"
    assert get(stack, "/payments/me", token, cursor=tampered).status_code == 400
    assert get(stack, "/payments/me", token, cursor="garbage").status_code == 400
    other = signing_key.token(new_user_id())
    foreign = get(stack, "/payments/me", other, cursor=cursors[0])
    assert (foreign.status_code, foreign.json()) == (400, {"detail": "invalid cursor"})
    for bad in (0, 101, "many"):
        assert get(stack, "/payments/me", token, numItems=bad).status_code == 422
    assert [a["id"] for a in my_attempts(stack, token)] == ids[::-1]  # default page size 20
