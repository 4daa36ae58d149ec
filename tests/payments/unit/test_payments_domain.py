"""The pure rules: what each billing event means, which version wins, how items merge."""

from __future__ import annotations

import pytest
from payments.billing import attempt_event, item_event, new_id, published, subscription_event
from pydantic import ValidationError

from siteview_common.consumer import PoisonMessageError
from siteview_payments.domain import (
    UpsertAttempt,
    UpsertSubscription,
    UpsertSubscriptionItem,
    merge_items,
    newest_per_record,
    supersedes,
    to_command,
)
from siteview_payments.views import PaymentAttemptView
from support import example, new_user_id, user_event


def attempt_command(event: dict[str, object], received_at: int = 1) -> UpsertAttempt:
    command = to_command(published(event, received_at=received_at))
    assert isinstance(command, UpsertAttempt)
    return command


class TestPaymentAttempts:
    def test_a_created_attempt_belongs_to_its_payer_user(self) -> None:
        uid = new_user_id()
        event = attempt_event(uid, updated_at=1_000, created_at=900)
        command = attempt_command(event)
        data = event["data"]
        assert (command.attempt_id, command.version, command.terminal) == (data["id"], 1_000, False)
        assert command.created_at == 900
        fields = command.fields
        assert fields["userId"] == uid
        assert fields["organizationId"] is None
        assert fields["paymentId"] == data["payment_id"]
        assert (fields["status"], fields["chargeType"]) == ("pending", "checkout")
        assert fields["totals"]["grandTotal"] == {
            "amount": 2000,
            "amountFormatted": "20.00",
            "currency": "USD",
            "currencySymbol": "$",
        }
        item = fields["subscriptionItems"][0]
        assert (item["id"], item["status"], item["planPeriod"]) == (
            "subi_2abcPROxyz000000000001",
            "incomplete",
            "month",
        )
        assert (item["plan"]["slug"], item["plan"]["amount"], item["periodEnd"]) == (
            "pro",
            2000,
            1_775_831_400_000,
        )
        assert fields["paymentSource"]["cardType"] == "visa"
        assert fields["paymentSource"]["last4"] == "4242"
        assert (fields["paidAt"], fields["failedAt"], fields["failedReason"]) == (None, None, None)
        assert fields["updatedAt"] == 1_000

    def test_the_raw_event_is_kept(self) -> None:
        event = attempt_event(new_user_id())
        svix = new_id("msg")
        command = to_command(published(event, svix_id=svix))
        assert isinstance(command, UpsertAttempt)
        assert command.fields["raw"] == event
        assert (command.fields["svixId"], command.fields["eventType"]) == (
            svix,
            "paymentAttempt.created",
        )

    def test_paid_is_terminal(self) -> None:
        command = attempt_command(attempt_event(new_user_id(), status="paid", updated_at=5_000))
        assert command.terminal is True
        assert (command.fields["status"], command.fields["paidAt"]) == ("paid", 5_000)

    def test_a_failed_recurring_charge_keeps_its_reason(self) -> None:
        command = attempt_command(attempt_event(new_user_id(), status="failed", updated_at=7_000))
        assert command.terminal is True
        assert command.fields["chargeType"] == "recurring"
        assert command.fields["failedAt"] == 7_000
        assert command.fields["failedReason"] == {
            "code": "card_declined",
            "declineCode": "insufficient_funds",
        }

    @pytest.mark.parametrize("status", ["pending", "requires_action", "processing"])
    def test_other_statuses_are_not_terminal(self, status: str) -> None:
        event = attempt_event(new_user_id())
        event["data"]["status"] = status
        assert attempt_command(event).terminal is False

    def test_created_and_updated_and_future_attempt_events_are_all_handled(self) -> None:
        for kind in ("paymentAttempt.created", "paymentAttempt.updated", "paymentAttempt.new"):
            command = attempt_command(attempt_event(new_user_id(), kind=kind))
            assert command.fields["eventType"] == kind

    def test_every_billing_field_but_ids_and_status_may_be_absent(self) -> None:
        optional = [
            "statement_id",
            "invoice_id",
            "gateway_external_id",
            "charge_type",
            "created_at",
            "updated_at",
            "billing_date",
            "payee",
            "payment_source",
            "subscription_items",
            "totals",
        ]
        event = attempt_event(new_user_id(), updated_at=3_000, drop=optional)
        command = attempt_command(event)
        assert command.version == 3_000  # the envelope timestamp
        assert command.created_at is None
        fields = command.fields
        assert (fields["chargeType"], fields["totals"], fields["paymentSource"]) == (
            None,
            None,
            None,
        )
        assert fields["subscriptionItems"] == []
        assert fields["updatedAt"] == 3_000

    def test_card_fields_and_nested_amounts_may_be_absent(self) -> None:
        event = attempt_event(new_user_id())
        event["data"]["payment_source"] = {"id": "pm_x", "payment_method": "link"}
        event["data"]["totals"] = {"grand_total": {"amount": 2000}}
        del event["data"]["subscription_items"][0]["plan"]
        fields = attempt_command(event).fields
        assert fields["paymentSource"]["paymentMethod"] == "link"
        assert (fields["paymentSource"]["cardType"], fields["paymentSource"]["last4"]) == (
            None,
            None,
        )
        assert fields["totals"]["grandTotal"]["amount"] == 2000
        assert fields["totals"]["subtotal"] is None
        assert fields["subscriptionItems"][0]["plan"] is None

    def test_without_updated_at_or_timestamp_the_receipt_time_orders(self) -> None:
        event = attempt_event(new_user_id(), drop=["updated_at"])
        del event["timestamp"]
        assert attempt_command(event, received_at=42).version == 42

    def test_an_organization_payer_is_kept_and_attributed_to_the_organization(self) -> None:
        org = new_id("org")
        fields = attempt_command(attempt_event(None, org_id=org)).fields
        assert (fields["userId"], fields["organizationId"]) == (None, org)

    def test_a_user_paying_within_an_organization_stays_the_users(self) -> None:
        uid, org = new_user_id(), new_id("org")
        fields = attempt_command(attempt_event(uid, org_id=org)).fields
        assert (fields["userId"], fields["organizationId"]) == (uid, org)

    def test_a_payer_with_neither_user_nor_organization_is_poison(self) -> None:
        with pytest.raises(PoisonMessageError):
            to_command(published(attempt_event(None)))
        without_payer = attempt_event(new_user_id(), drop=["payer"])
        with pytest.raises(PoisonMessageError):
            to_command(published(without_payer))

    @pytest.mark.parametrize("field", ["id", "payment_id", "status"])
    def test_ids_and_status_are_required(self, field: str) -> None:
        with pytest.raises(ValidationError):
            to_command(published(attempt_event(new_user_id(), drop=[field])))

    def test_a_malformed_amount_is_rejected(self) -> None:
        event = attempt_event(new_user_id())
        event["data"]["totals"]["grand_total"]["amount"] = "twenty"
        with pytest.raises(ValidationError):
            to_command(published(event))


class TestOrdering:
    def attempt(self, version: int, status: str = "pending") -> UpsertAttempt:
        event = attempt_event(new_user_id(), status=status, attempt_id="pa_1", updated_at=version)
        return attempt_command(event)

    def test_a_newer_version_supersedes_an_older_one(self) -> None:
        assert supersedes(self.attempt(2), self.attempt(1))
        assert not supersedes(self.attempt(1), self.attempt(2))

    def test_a_tie_keeps_what_came_first(self) -> None:
        assert not supersedes(self.attempt(1), self.attempt(1))

    def test_a_terminal_state_beats_a_newer_non_terminal_one(self) -> None:
        assert supersedes(self.attempt(1, "paid"), self.attempt(9))
        assert not supersedes(self.attempt(9), self.attempt(1, "paid"))
        assert not supersedes(self.attempt(9), self.attempt(1, "failed"))

    def test_a_newer_terminal_state_beats_an_older_terminal_one(self) -> None:
        assert supersedes(self.attempt(5, "paid"), self.attempt(4, "paid"))

    def test_a_batch_keeps_one_winner_per_record(self) -> None:
        uid = new_user_id()
        late_pending = attempt_command(
            attempt_event(uid, attempt_id="pa_a", updated_at=30, status="pending")
        )
        paid = attempt_command(attempt_event(uid, attempt_id="pa_a", updated_at=20, status="paid"))
        other = attempt_command(attempt_event(uid, attempt_id="pa_b", updated_at=1))
        sub_old = to_command(
            published(subscription_event(uid, subscription_id="sub_a", items=[], updated_at=1))
        )
        sub_new = to_command(
            published(subscription_event(uid, subscription_id="sub_a", items=[], updated_at=2))
        )
        assert sub_old is not None and sub_new is not None
        winners = newest_per_record([late_pending, sub_new, paid, other, sub_old])
        assert winners == [paid, sub_new, other]


class TestSubscriptions:
    def test_a_subscription_is_ordered_by_updated_at_with_its_items_stamped(self) -> None:
        uid = new_user_id()
        event = subscription_event(
            uid,
            subscription_id="sub_1",
            items=[("subi_1", "active"), ("subi_2", "ended")],
            status="past_due",
            updated_at=500,
        )
        event["timestamp"] = 999
        command = to_command(published(event))
        assert isinstance(command, UpsertSubscription)
        assert (command.subscription_id, command.version) == ("sub_1", 500)
        fields = command.fields
        assert (fields["userId"], fields["status"], fields["updatedAt"]) == (uid, "past_due", 500)
        assert [(i["id"], i["status"], i["version"]) for i in fields["items"]] == [
            ("subi_1", "active", 500),
            ("subi_2", "ended", 500),
        ]
        assert fields["items"][0]["plan"]["name"] == "Pro"
        assert fields["items"][0]["periodStart"] == 1_773_153_000_000

    def test_every_subscription_event_type_is_a_snapshot(self) -> None:
        for name in ("subscription.created", "subscription.active", "subscription.pastDue"):
            command = to_command(published(example(name)))
            assert isinstance(command, UpsertSubscription)
            assert command.fields["status"] == example(name)["data"]["status"]

    def test_a_subscription_of_an_organization_is_attributed_to_it(self) -> None:
        org = new_id("org")
        event = subscription_event(
            None, subscription_id="sub_o", items=[], updated_at=1, org_id=org
        )
        command = to_command(published(event))
        assert isinstance(command, UpsertSubscription)
        assert (command.fields["userId"], command.fields["organizationId"]) == (None, org)

    def test_an_item_event_is_ordered_by_the_envelope_timestamp(self) -> None:
        uid = new_user_id()
        event = item_event(uid, item_id="subi_9", status="past_due", timestamp=777)
        command = to_command(published(event))
        assert isinstance(command, UpsertSubscriptionItem)
        assert (command.item_id, command.version) == ("subi_9", 777)
        assert (command.fields["status"], command.fields["userId"]) == ("past_due", uid)
        assert command.fields["plan"]["slug"] == "pro"

    def test_every_example_item_event_parses(self) -> None:
        for name in (
            "subscriptionItem.abandoned",
            "subscriptionItem.canceled",
            "subscriptionItem.created",
            "subscriptionItem.ended",
            "subscriptionItem.freeTrialEnding",
            "subscriptionItem.incomplete",
            "subscriptionItem.pastDue",
            "subscriptionItem.upcoming",
            "subscriptionItem.updated",
        ):
            event = example(name)
            command = to_command(published(event))
            assert isinstance(command, UpsertSubscriptionItem)
            assert command.version == event["timestamp"]
            assert command.fields["status"] == event["data"]["status"]

    def test_an_item_without_a_payer_is_still_kept(self) -> None:
        event = item_event(new_user_id(), item_id="subi_np", status="active", timestamp=5)
        del event["data"]["payer"]
        command = to_command(published(event))
        assert isinstance(command, UpsertSubscriptionItem)
        assert command.fields["userId"] is None


LISTED = (
    {"id": "subi_a", "status": "active", "version": 100},
    {"id": "subi_b", "status": "active", "version": 100},
    {"id": "subi_c", "status": "active", "version": 100},
)


class TestItemMerge:
    def test_the_newest_state_of_each_item_wins(self) -> None:
        standalone = {
            "subi_a": {"status": "past_due", "version": 150},  # newer: wins
            "subi_b": {"status": "incomplete", "version": 50},  # older: loses
        }
        merged = merge_items(LISTED, standalone)
        assert [(i["id"], i["status"], i["version"]) for i in merged] == [
            ("subi_a", "past_due", 150),
            ("subi_b", "active", 100),
            ("subi_c", "active", 100),
        ]

    def test_on_a_tie_the_items_own_event_wins(self) -> None:
        merged = merge_items(LISTED[:1], {"subi_a": {"status": "canceled", "version": 100}})
        assert merged == [{"id": "subi_a", "status": "canceled", "version": 100}]

    def test_items_the_subscription_does_not_list_are_not_added(self) -> None:
        merged = merge_items([], {"subi_z": {"status": "active", "version": 1}})
        assert merged == []


def test_events_of_other_kinds_are_none_of_ours() -> None:
    assert to_command(published(user_event("user.created", new_user_id(), updated_at=1))) is None
    assert to_command(published(example("session.created"))) is None


def test_the_api_view_of_a_stored_attempt_is_camel_case_without_internals() -> None:
    uid = new_user_id()
    command = attempt_command(attempt_event(uid, status="failed", updated_at=7_000))
    doc = {**command.fields, "_id": command.attempt_id, "createdAt": 6_000, "version": 7_000}
    body = PaymentAttemptView.from_doc(doc).model_dump(by_alias=True)
    assert body["id"] == command.attempt_id
    assert (body["userId"], body["status"], body["chargeType"]) == (uid, "failed", "recurring")
    assert (body["createdAt"], body["updatedAt"], body["failedAt"]) == (6_000, 7_000, 7_000)
    assert body["failedReason"] == {"code": "card_declined", "declineCode": "insufficient_funds"}
    assert body["totals"]["taxTotal"]["amount"] == 0
    assert body["subscriptionItems"][0]["plan"]["interval"] == 1
    assert body["paymentSource"] == {
        "paymentMethod": "card",
        "cardType": "visa",
        "last4": "4242",
        "walletType": None,
    }
    assert not {"raw", "svixId", "payer", "version", "_id"} & body.keys()
