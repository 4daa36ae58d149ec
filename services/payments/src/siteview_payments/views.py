"""What the API returns: camelCase JSON, times in ms since the epoch, amounts in cents."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class View(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class MoneyView(View):
    amount: int | None = None
    amount_formatted: str | None = None
    currency: str | None = None
    currency_symbol: str | None = None


class TotalsView(View):
    grand_total: MoneyView | None = None
    subtotal: MoneyView | None = None
    tax_total: MoneyView | None = None


class FailedReasonView(View):
    code: str | None = None
    decline_code: str | None = None


class PaymentSourceView(View):
    payment_method: str | None = None
    card_type: str | None = None
    last4: str | None = None
    wallet_type: str | None = None


class PlanView(View):
    id: str
    name: str | None = None
    slug: str | None = None
    amount: int | None = None
    currency: str | None = None
    period: str | None = None
    interval: int | None = None


class ItemView(View):
    id: str
    status: str
    plan: PlanView | None = None
    plan_period: str | None = None
    amount: MoneyView | None = None
    period_start: int | None = None
    period_end: int | None = None
    is_free_trial: bool | None = None
    next_payment_date: int | None = None
    canceled_at: int | None = None
    past_due_at: int | None = None
    ended_at: int | None = None


class PaymentAttemptView(View):
    id: str
    payment_id: str
    user_id: str | None
    organization_id: str | None = None
    status: str
    charge_type: str | None = None
    totals: TotalsView | None = None
    subscription_items: list[ItemView] = Field(default_factory=list)
    payment_source: PaymentSourceView | None = None
    statement_id: str | None = None
    invoice_id: str | None = None
    billing_date: int | None = None
    paid_at: int | None = None
    failed_at: int | None = None
    failed_reason: FailedReasonView | None = None
    created_at: int
    updated_at: int

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> PaymentAttemptView:
        return cls.model_validate({**doc, "id": doc["_id"]})


class SubscriptionView(View):
    id: str
    user_id: str | None
    organization_id: str | None = None
    status: str
    items: list[ItemView]
    latest_payment_id: str | None = None
    active_at: int | None = None
    past_due_at: int | None = None
    canceled_at: int | None = None
    ended_at: int | None = None
    created_at: int
    updated_at: int

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> SubscriptionView:
        return cls.model_validate({**doc, "id": doc["_id"]})
