"""Clerk Billing's objects as they arrive in webhook payloads.

Clerk Billing is in beta and its payloads drift, so every field except the identifiers we key on
and the statuses is optional, unknown fields are ignored, and no field is typed `Any`. Card
details in particular are absent for wallets, bank debits and free plans. Each model serializes
to camelCase (`model_dump(by_alias=True)`), which is how the documents store them.
"""

from __future__ import annotations

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

#: Clerk's documented charge types; others are kept as they come (the beta adds values).
CHARGE_TYPES = ("checkout", "recurring")


class ClerkModel(BaseModel):
    """Parsed from Clerk's snake_case fields, dumped by alias as camelCase."""

    model_config = ConfigDict(
        extra="ignore",
        alias_generator=AliasGenerator(serialization_alias=to_camel),
    )


class Money(ClerkModel):
    amount: int | None = None  # in the currency's minor unit (cents)
    amount_formatted: str | None = None
    currency: str | None = None
    currency_symbol: str | None = None


class Totals(ClerkModel):
    grand_total: Money | None = None
    subtotal: Money | None = None
    tax_total: Money | None = None


class FailedReason(ClerkModel):
    code: str | None = None
    decline_code: str | None = None


class Payer(ClerkModel):
    """Who pays: a user (`user_id`) or an organization (`organization_id`)."""

    id: str | None = None
    user_id: str | None = None
    organization_id: str | None = None
    organization_name: str | None = None
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    image_url: str | None = None
    created_at: int | None = None
    updated_at: int | None = None


class Payee(ClerkModel):
    id: str | None = None
    gateway_type: str | None = None
    gateway_external_id: str | None = None
    gateway_status: str | None = None


class PaymentSource(ClerkModel):
    id: str | None = None
    gateway: str | None = None
    gateway_external_id: str | None = None
    gateway_external_account_id: str | None = None
    payment_method: str | None = None
    payment_type: str | None = None
    status: str | None = None
    card_type: str | None = None
    last4: str | None = None
    expiry_month: int | None = None
    expiry_year: int | None = None
    wallet_type: str | None = None
    is_default: bool | None = None
    is_removable: bool | None = None


class Plan(ClerkModel):
    id: str = Field(min_length=1)
    name: str | None = None
    slug: str | None = None
    description: str | None = None
    product_id: str | None = None
    amount: int | None = None
    currency: str | None = None
    period: str | None = None
    interval: int | None = None
    is_default: bool | None = None
    is_recurring: bool | None = None
    has_base_fee: bool | None = None
    annual_monthly_amount: int | None = None
    annual_amount: int | None = None
    publicly_visible: bool | None = None
    free_trial_enabled: bool | None = None
    free_trial_days: int | None = None


class Credit(ClerkModel):
    amount: Money | None = None
    cycle_days_remaining: int | None = None
    cycle_days_total: int | None = None
    cycle_remaining_percent: float | None = None


class SubscriptionItem(ClerkModel):
    """One plan of a subscription. Also the whole payload of `subscriptionItem.*` events, which
    carry neither the subscription's id nor an `updated_at`."""

    id: str = Field(min_length=1)
    status: str = Field(min_length=1)
    plan: Plan | None = None
    plan_id: str | None = None
    plan_period: str | None = None
    amount: Money | None = None
    credit: Credit | None = None
    period_start: int | None = None
    period_end: int | None = None
    proration_date: str | None = None
    # Plain integers in today's payloads, money objects in some; either is kept.
    lifetime_paid: int | Money | None = None
    next_payment_amount: int | Money | None = None
    next_payment_date: int | None = None
    is_free_trial: bool | None = None
    created_at: int | None = None
    updated_at: int | None = None
    canceled_at: int | None = None
    past_due_at: int | None = None
    ended_at: int | None = None
    payer: Payer | None = None


class PaymentAttempt(ClerkModel):
    """`paymentAttempt.*`: one attempt to collect a payment. `payment_id` is not unique: a
    payment may be attempted more than once, and attempts are keyed by their own `id`."""

    id: str = Field(min_length=1)
    payment_id: str = Field(min_length=1)
    status: str = Field(min_length=1)  # pending | paid | failed
    statement_id: str | None = None
    invoice_id: str | None = None
    gateway_external_id: str | None = None
    charge_type: str | None = None  # see CHARGE_TYPES
    created_at: int | None = None
    updated_at: int | None = None
    billing_date: int | None = None
    paid_at: int | None = None
    failed_at: int | None = None
    failed_reason: FailedReason | None = None
    payer: Payer | None = None
    payee: Payee | None = None
    payment_source: PaymentSource | None = None
    subscription_items: list[SubscriptionItem] = Field(default_factory=list)
    totals: Totals | None = None


class Subscription(ClerkModel):
    """`subscription.*`: a payer's subscription with the state of its items at `updated_at`."""

    id: str = Field(min_length=1)
    status: str = Field(min_length=1)
    payer_id: str | None = None
    payer: Payer | None = None
    items: list[SubscriptionItem] = Field(default_factory=list)
    latest_payment_id: str | None = None
    payment_source_id: str | None = None
    created_at: int | None = None
    updated_at: int | None = None
    active_at: int | None = None
    past_due_at: int | None = None
    canceled_at: int | None = None
    ended_at: int | None = None
