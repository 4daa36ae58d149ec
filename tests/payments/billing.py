"""Clerk Billing events for the payments tests, built from examples/clerk with fresh ids."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from siteview_common.events import PublishedEvent
from support import example, new_svix_id

CREATED_AT = 1_773_153_000_000


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def published(
    event: dict[str, Any], *, svix_id: str | None = None, received_at: int = 1
) -> PublishedEvent:
    return PublishedEvent.model_validate(
        {"svixId": svix_id or new_svix_id(), "receivedAt": received_at, "event": event}
    )


def envelope(event: dict[str, Any], *, svix_id: str | None = None, received_at: int = 1) -> bytes:
    return published(event, svix_id=svix_id, received_at=received_at).to_json()


def _set_payer(payer: dict[str, Any], user_id: str | None, org_id: str | None) -> None:
    payer.pop("user_id", None)
    if user_id is not None:
        payer["user_id"] = user_id
    if org_id is not None:
        payer["organization_id"] = org_id


def attempt_event(
    user_id: str | None,
    *,
    status: str = "pending",
    attempt_id: str | None = None,
    payment_id: str | None = None,
    updated_at: int = CREATED_AT,
    created_at: int = CREATED_AT,
    kind: str | None = None,
    org_id: str | None = None,
    drop: Iterable[str] = (),
) -> dict[str, Any]:
    """A paymentAttempt: pending → .created, paid → .updated, failed → .updated (recurring)."""
    name = {
        "pending": "paymentAttempt.created",
        "paid": "paymentAttempt.updated",
        "failed": "paymentAttempt.updated.failed-recurring",
    }[status]
    event = example(name)
    data = event["data"]
    data.update(
        id=attempt_id or new_id("pa"),
        payment_id=payment_id or new_id("pay"),
        created_at=created_at,
        updated_at=updated_at,
    )
    if status == "paid":
        data["paid_at"] = updated_at
    if status == "failed":
        data["failed_at"] = updated_at
    _set_payer(data["payer"], user_id, org_id)
    for item in data["subscription_items"]:
        _set_payer(item["payer"], user_id, org_id)
    for field in drop:
        data.pop(field, None)
    event["timestamp"] = updated_at
    if kind is not None:
        event["type"] = kind
    return event


def subscription_event(
    user_id: str | None,
    *,
    subscription_id: str,
    items: Iterable[tuple[str, str]],
    status: str = "active",
    updated_at: int,
    kind: str = "subscription.updated",
    org_id: str | None = None,
) -> dict[str, Any]:
    """A subscription event listing `items` as (item id, status), Pro plan for each."""
    event = example("subscription.updated")
    data = event["data"]
    pro = data["items"][1]
    listed = []
    for item_id, item_status in items:
        item = {**pro, "id": item_id, "status": item_status}
        _set_payer(item["payer"], user_id, org_id)
        listed.append(item)
    data.update(id=subscription_id, status=status, updated_at=updated_at, items=listed)
    data["created_at"] = CREATED_AT
    _set_payer(data["payer"], user_id, org_id)
    event["type"] = kind
    event["timestamp"] = updated_at
    return event


def item_event(
    user_id: str | None,
    *,
    item_id: str,
    status: str,
    timestamp: int,
    kind: str | None = None,
    period_end: int | None = None,
) -> dict[str, Any]:
    """A subscriptionItem event (no subscription id, no updated_at: the envelope clock)."""
    event = example("subscriptionItem.active")
    data = event["data"]
    data.update(id=item_id, status=status)
    if period_end is not None:
        data["period_end"] = period_end
    _set_payer(data["payer"], user_id, None)
    event["type"] = kind or f"subscriptionItem.{status}"
    event["timestamp"] = timestamp
    return event
