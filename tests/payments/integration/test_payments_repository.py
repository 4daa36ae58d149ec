"""The payments repository on a real MongoDB driver over TCP (whichever backend the run uses):
guarded upserts, terminal statuses, pagination, the subscription item merge."""

from __future__ import annotations

from typing import Any

import pytest
from payments.billing import attempt_event, item_event, new_id, published, subscription_event
from pymongo.asynchronous.database import AsyncDatabase

from siteview_common.pagination import CursorCodec, InvalidCursorError, PageParams
from siteview_payments.domain import BillingCommand, to_command
from siteview_payments.repository import PaymentsRepository
from support import new_user_id

CODEC = CursorCodec("repository-test-secret")


def command(event: dict[str, Any]) -> BillingCommand:
    parsed = to_command(published(event))
    assert parsed is not None
    return parsed


def attempt(user_id: str, attempt_id: str, status: str, version: int, **kw: Any) -> BillingCommand:
    return command(
        attempt_event(user_id, attempt_id=attempt_id, status=status, updated_at=version, **kw)
    )


async def status_of(repo: PaymentsRepository, attempt_id: str) -> tuple[str, int]:
    doc = await repo.get_attempt(attempt_id)
    assert doc is not None
    return doc["status"], doc["version"]


async def test_created_then_updated_ends_paid_and_a_late_created_is_stale(
    repo: PaymentsRepository,
) -> None:
    uid, pa = new_user_id(), new_id("pa")
    assert await repo.apply([attempt(uid, pa, "pending", 100)]) == 0
    assert await repo.apply([attempt(uid, pa, "paid", 200)]) == 0
    assert await status_of(repo, pa) == ("paid", 200)
    assert await repo.apply([attempt(uid, pa, "pending", 100)]) == 1
    assert await status_of(repo, pa) == ("paid", 200)


async def test_a_duplicate_is_stale(repo: PaymentsRepository) -> None:
    uid, pa = new_user_id(), new_id("pa")
    paid = attempt(uid, pa, "paid", 200)
    assert await repo.apply([paid]) == 0
    assert await repo.apply([paid]) == 1


async def test_a_terminal_attempt_is_never_reopened_even_by_a_newer_clock(
    repo: PaymentsRepository,
) -> None:
    uid, pa = new_user_id(), new_id("pa")
    await repo.apply([attempt(uid, pa, "failed", 200)])
    assert await repo.apply([attempt(uid, pa, "pending", 900)]) == 1
    assert await status_of(repo, pa) == ("failed", 200)


async def test_a_terminal_state_replaces_a_newer_pending_one(repo: PaymentsRepository) -> None:
    uid, pa = new_user_id(), new_id("pa")
    await repo.apply([attempt(uid, pa, "pending", 500)])
    assert await repo.apply([attempt(uid, pa, "paid", 300)]) == 0
    assert await status_of(repo, pa) == ("paid", 300)


async def test_a_batch_in_any_order_converges_on_the_winner(repo: PaymentsRepository) -> None:
    uid, pa = new_user_id(), new_id("pa")
    batch = [
        attempt(uid, pa, "pending", 300),
        attempt(uid, pa, "paid", 200),
        attempt(uid, pa, "pending", 100),
    ]
    assert await repo.apply(batch) == 2
    assert await status_of(repo, pa) == ("paid", 200)


async def test_the_document_keeps_the_raw_event_and_the_owner(repo: PaymentsRepository) -> None:
    uid, pa = new_user_id(), new_id("pa")
    event = attempt_event(uid, attempt_id=pa, status="paid", updated_at=250, created_at=240)
    await repo.apply([command(event)])
    doc = await repo.get_attempt(pa)
    assert doc is not None
    assert doc["raw"] == event
    assert (doc["userId"], doc["createdAt"], doc["paidAt"], doc["terminal"]) == (
        uid,
        240,
        250,
        True,
    )


async def test_without_created_at_the_earliest_clock_is_kept(repo: PaymentsRepository) -> None:
    uid, pa = new_user_id(), new_id("pa")
    await repo.apply([attempt(uid, pa, "pending", 300, drop=["created_at"])])
    await repo.apply([attempt(uid, pa, "paid", 400, drop=["created_at"])])
    doc = await repo.get_attempt(pa)
    assert doc is not None and (doc["createdAt"], doc["status"]) == (300, "paid")


async def test_an_organization_attempt_is_kept_but_listed_for_no_user(
    repo: PaymentsRepository,
) -> None:
    org, pa = new_id("org"), new_id("pa")
    await repo.apply([command(attempt_event(None, attempt_id=pa, org_id=org))])
    doc = await repo.get_attempt(pa)
    assert doc is not None and (doc["userId"], doc["organizationId"]) == (None, org)


async def test_the_latest_attempt_of_a_payment_is_the_callers_newest(
    repo: PaymentsRepository,
) -> None:
    uid, other, pay = new_user_id(), new_user_id(), new_id("pay")
    first, retry = new_id("pa"), new_id("pa")
    await repo.apply(
        [
            attempt(uid, retry, "paid", 2_100, payment_id=pay, created_at=2_000),
            attempt(uid, first, "failed", 1_100, payment_id=pay, created_at=1_000),
        ]
    )
    latest = await repo.latest_attempt(uid, pay)
    assert latest is not None
    assert (latest["_id"], latest["status"]) == (retry, "paid")
    assert "raw" not in latest
    assert await repo.latest_attempt(other, pay) is None
    assert await repo.latest_attempt(uid, new_id("pay")) is None


async def test_pages_walk_newest_first_and_only_the_owners(repo: PaymentsRepository) -> None:
    uid, other = new_user_id(), new_user_id()
    ids = [new_id("pa") for _ in range(5)]
    await repo.apply(
        [attempt(uid, pa, "pending", 100 + i, created_at=100 + i) for i, pa in enumerate(ids)]
        + [attempt(other, new_id("pa"), "pending", 500, created_at=500)]
    )
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await repo.attempts_page(
            uid, params=PageParams(2, cursor), codec=CODEC, shape=lambda d: d["_id"]
        )
        pages += 1
        seen.extend(page.page)
        cursor = page.continue_cursor
        if page.is_done:
            break
    assert seen == ids[::-1]
    assert pages == 3
    with pytest.raises(InvalidCursorError):
        await repo.attempts_page(
            other, params=PageParams(2, cursor), codec=CODEC, shape=lambda d: d
        )


async def test_indexes_serve_every_query(repo: PaymentsRepository, db: AsyncDatabase[Any]) -> None:
    await repo.create_indexes()  # idempotent

    async def keys(collection: str) -> list[list[tuple[str, int]]]:
        return [list(i["key"].items()) async for i in await db[collection].list_indexes()]

    attempts = await keys("payment_attempts")
    assert [("userId", 1), ("createdAt", -1), ("_id", -1)] in attempts
    assert [("paymentId", 1), ("createdAt", -1), ("_id", -1)] in attempts
    assert [("userId", 1), ("createdAt", -1), ("_id", -1)] in await keys("subscriptions")


class TestSubscriptions:
    async def test_statuses_follow_the_clock_both_ways(self, repo: PaymentsRepository) -> None:
        uid, sub = new_user_id(), new_id("sub")

        def at(status: str, version: int) -> BillingCommand:
            return command(
                subscription_event(
                    uid, subscription_id=sub, items=[], status=status, updated_at=version
                )
            )

        await repo.apply([at("active", 100)])
        await repo.apply([at("past_due", 200)])
        await repo.apply([at("active", 300)])
        assert await repo.apply([at("past_due", 200)]) == 1
        [view] = await repo.subscriptions_of(uid)
        assert (view["_id"], view["status"], view["updatedAt"]) == (sub, "active", 300)

    async def test_items_merge_by_id_newest_version_winning(self, repo: PaymentsRepository) -> None:
        uid, sub = new_user_id(), new_id("sub")
        newer, older, untouched = new_id("subi"), new_id("subi"), new_id("subi")
        items = [(newer, "active"), (older, "active"), (untouched, "active")]
        await repo.apply(
            [
                # item events first: they carry no subscription id, the merge finds them later
                command(item_event(uid, item_id=newer, status="past_due", timestamp=900)),
                command(item_event(uid, item_id=older, status="incomplete", timestamp=100)),
                command(subscription_event(uid, subscription_id=sub, items=items, updated_at=500)),
            ]
        )
        [view] = await repo.subscriptions_of(uid)
        assert [(i["id"], i["status"], i["version"]) for i in view["items"]] == [
            (newer, "past_due", 900),
            (older, "active", 500),
            (untouched, "active", 500),
        ]
        assert view["items"][0]["plan"]["slug"] == "pro"

    async def test_a_later_subscription_event_replaces_the_item_list(
        self, repo: PaymentsRepository
    ) -> None:
        uid, sub = new_user_id(), new_id("sub")
        free, pro = new_id("subi"), new_id("subi")
        await repo.apply(
            [
                command(
                    subscription_event(
                        uid, subscription_id=sub, items=[(free, "active")], updated_at=1
                    )
                )
            ]
        )
        await repo.apply(
            [
                command(
                    subscription_event(
                        uid,
                        subscription_id=sub,
                        items=[(free, "ended"), (pro, "active")],
                        updated_at=2,
                    )
                )
            ]
        )
        [view] = await repo.subscriptions_of(uid)
        assert [(i["id"], i["status"]) for i in view["items"]] == [(free, "ended"), (pro, "active")]

    async def test_only_the_callers_subscriptions_are_returned(
        self, repo: PaymentsRepository
    ) -> None:
        uid, other = new_user_id(), new_user_id()
        await repo.apply(
            [
                command(
                    subscription_event(other, subscription_id=new_id("sub"), items=[], updated_at=1)
                )
            ]
        )
        assert await repo.subscriptions_of(uid) == []
        assert len(await repo.subscriptions_of(other)) == 1
