"""Use cases of the payments service, with their dependencies passed in."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from siteview_common.pagination import CursorCodec, Page, PageParams
from siteview_payments.domain import BillingCommand, to_command
from siteview_payments.repository import PaymentsRepository
from siteview_payments.views import PaymentAttemptView, SubscriptionView

log = logging.getLogger(__name__)

parse = to_command


async def apply_billing_events(commands: Sequence[BillingCommand], repo: PaymentsRepository) -> int:
    """Returns how many of `commands` were stale (ignored): the worker counts them."""
    stale = await repo.apply(commands)
    if stale:
        log.info("ignored stale billing events", extra={"count": stale})
    return stale


async def my_payments(
    user_id: str, params: PageParams, codec: CursorCodec, repo: PaymentsRepository
) -> Page[PaymentAttemptView]:
    return await repo.attempts_page(
        user_id, params=params, codec=codec, shape=PaymentAttemptView.from_doc
    )


async def get_payment(
    user_id: str, payment_id: str, repo: PaymentsRepository
) -> PaymentAttemptView | None:
    doc = await repo.latest_attempt(user_id, payment_id)
    return PaymentAttemptView.from_doc(doc) if doc else None


async def my_subscriptions(user_id: str, repo: PaymentsRepository) -> list[SubscriptionView]:
    return [SubscriptionView.from_doc(doc) for doc in await repo.subscriptions_of(user_id)]
