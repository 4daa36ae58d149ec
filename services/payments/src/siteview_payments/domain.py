"""The payments service's rules, as pure functions: what a Clerk Billing event means for our
records, and which version of a record wins.

Every record carries `version`, Clerk's own clock for the state it holds: `data.updated_at`,
else the envelope `timestamp` (subscriptionItem events have no `updated_at`), else the time the
gateway received the event. A write applies only over an older version, so duplicates and
stale events never win. For payment attempts `paid` and `failed` are terminal: a terminal
state outranks every non-terminal one whatever the clocks say, so a late `pending` never
reopens a settled attempt. Subscription and item statuses are not monotonic (active →
past_due → active), so for them the clock alone decides.

Ownership: a record belongs to `payer.user_id`, whether or not the users service has seen that
user yet. A payer without a user id is an organization: the record is kept and attributed to
`payer.organization_id`. A payer with neither cannot be attributed and is dead-lettered.

Subscription items: `subscriptionItem.*` payloads do not say which subscription they belong
to, so item state is kept by item id, and a subscription's view merges, item by item, the
newest of the state its own event listed and the latest standalone item event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from siteview_common.changes import Change, Collection
from siteview_common.consumer import PoisonMessageError
from siteview_common.events import PublishedEvent
from siteview_payments.clerk import Payer, PaymentAttempt, Subscription, SubscriptionItem

ATTEMPT_PREFIX = "paymentAttempt"
SUBSCRIPTION_PREFIX = "subscription"
ITEM_PREFIX = "subscriptionItem"

TERMINAL_STATUSES = frozenset({"paid", "failed"})


@dataclass(frozen=True, slots=True)
class Owner:
    user_id: str | None
    organization_id: str | None

    def fields(self) -> dict[str, str | None]:
        return {"userId": self.user_id, "organizationId": self.organization_id}


@dataclass(frozen=True, slots=True)
class UpsertAttempt:
    attempt_id: str
    version: int
    terminal: bool
    #: Clerk's `created_at`; None when the payload lacks it (the earliest clock seen is kept).
    created_at: int | None
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class UpsertSubscription:
    subscription_id: str
    version: int
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class UpsertSubscriptionItem:
    item_id: str
    version: int
    fields: dict[str, Any]


BillingCommand = UpsertAttempt | UpsertSubscription | UpsertSubscriptionItem


def is_terminal(status: str) -> bool:
    return status in TERMINAL_STATUSES


def rank(command: BillingCommand) -> tuple[bool, int]:
    """How a version compares: terminal attempts first, then Clerk's clock."""
    if isinstance(command, UpsertAttempt):
        return (command.terminal, command.version)
    return (False, command.version)


def supersedes(new: BillingCommand, old: BillingCommand) -> bool:
    """Whether `new` replaces `old` (same record). A tie keeps what came first."""
    return rank(new) > rank(old)


def record_key(command: BillingCommand) -> tuple[str, str]:
    if isinstance(command, UpsertAttempt):
        return ("attempt", command.attempt_id)
    if isinstance(command, UpsertSubscription):
        return ("subscription", command.subscription_id)
    return ("item", command.item_id)


def newest_per_record(commands: Iterable[BillingCommand]) -> list[BillingCommand]:
    """The winning command of each record in a batch, in the order records first appeared."""
    winners: dict[tuple[str, str], BillingCommand] = {}
    for command in commands:
        key = record_key(command)
        current = winners.get(key)
        if current is None or supersedes(command, current):
            winners[key] = command
    return list(winners.values())


def owner_of(payer: Payer | None, what: str) -> Owner:
    """The payer's user, else its organization; a payer with neither is poison."""
    if payer is not None and payer.user_id:
        return Owner(payer.user_id, payer.organization_id)
    if payer is not None and payer.organization_id:
        return Owner(None, payer.organization_id)
    raise PoisonMessageError(f"{what} has no payer user_id or organization_id")


def clock(updated_at: int | None, published: PublishedEvent) -> int:
    return updated_at or published.event.timestamp or published.received_at


def _provenance(published: PublishedEvent) -> dict[str, Any]:
    """The event a record's state came from, kept whole in the document."""
    return {
        "eventType": published.event.type,
        "svixId": published.svix_id,
        "raw": published.event.model_dump(mode="json"),
    }


def attempt_command(published: PublishedEvent) -> UpsertAttempt:
    attempt = PaymentAttempt.model_validate(published.event.data)
    owner = owner_of(attempt.payer, "payment attempt")
    version = clock(attempt.updated_at, published)
    fields = attempt.model_dump(by_alias=True, exclude={"id", "created_at"})
    fields.update(owner.fields())
    fields["updatedAt"] = attempt.updated_at or version
    fields.update(_provenance(published))
    return UpsertAttempt(
        attempt_id=attempt.id,
        version=version,
        terminal=is_terminal(attempt.status),
        created_at=attempt.created_at,
        fields=fields,
    )


def item_state(item: SubscriptionItem, version: int) -> dict[str, Any]:
    """An item as the subscription view shows it, stamped with the version it is from."""
    return {**item.model_dump(by_alias=True, exclude={"payer"}), "version": version}


def subscription_command(published: PublishedEvent) -> UpsertSubscription:
    subscription = Subscription.model_validate(published.event.data)
    owner = owner_of(subscription.payer, "subscription")
    version = clock(subscription.updated_at, published)
    fields = subscription.model_dump(by_alias=True, exclude={"id", "items"})
    fields.update(owner.fields())
    fields["items"] = [item_state(item, version) for item in subscription.items]
    fields["createdAt"] = subscription.created_at or version
    fields["updatedAt"] = subscription.updated_at or version
    fields.update(_provenance(published))
    return UpsertSubscription(subscription_id=subscription.id, version=version, fields=fields)


def item_command(published: PublishedEvent) -> UpsertSubscriptionItem:
    item = SubscriptionItem.model_validate(published.event.data)
    version = clock(item.updated_at, published)
    payer = item.payer
    owner = Owner(payer.user_id if payer else None, payer.organization_id if payer else None)
    fields = {**item_state(item, version), **owner.fields(), **_provenance(published)}
    del fields["id"]
    if payer is not None:
        fields["payer"] = payer.model_dump(by_alias=True)
    return UpsertSubscriptionItem(item_id=item.id, version=version, fields=fields)


def to_command(published: PublishedEvent) -> BillingCommand | None:
    """The command a published event asks of this service, or None if it is none of ours.

    Every `paymentAttempt.*`, `subscription.*` and `subscriptionItem.*` event carries the
    whole object, so each is a snapshot of its state (created, updated, active, pastDue, ...).
    """
    prefix = published.event.type.split(".", 1)[0]
    if prefix == ATTEMPT_PREFIX:
        return attempt_command(published)
    if prefix == SUBSCRIPTION_PREFIX:
        return subscription_command(published)
    if prefix == ITEM_PREFIX:
        return item_command(published)
    return None


def merge_items(
    listed: Sequence[Mapping[str, Any]], standalone: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """A subscription's items: each item its subscription event listed, replaced by the
    standalone item state when that is at least as new (an item event is the item's own word)."""
    merged: list[dict[str, Any]] = []
    for item in listed:
        newer = standalone.get(item["id"])
        if newer is not None and newer["version"] >= item["version"]:
            merged.append({**newer, "id": item["id"]})
        else:
            merged.append(dict(item))
    return merged


#: The view each kind of record (`record_key`) shows in: an item's state shows inside its
#: subscription.
VIEW_OF: dict[str, Collection] = {
    "attempt": "payment_attempts",
    "subscription": "subscriptions",
    "item": "subscriptions",
}


def touched(commands: Sequence[BillingCommand]) -> list[Change]:
    """What a batch changes in the views of each paying user: their attempts and their
    subscriptions. Records of organizations, and items whose payer is unknown, are in no
    user's view."""
    changes: list[Change] = []
    for command in commands:
        if user_id := command.fields.get("userId"):
            kind, record_id = record_key(command)
            changes.append(Change(user_id, VIEW_OF[kind], record_id))
    return changes
