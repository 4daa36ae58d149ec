from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request

from siteview_common.deps import CurrentUser, Cursors, Pagination
from siteview_common.pagination import Page
from siteview_payments import handlers
from siteview_payments.repository import PaymentsRepository
from siteview_payments.views import PaymentAttemptView, SubscriptionView

payments_router = APIRouter(prefix="/payments", tags=["payments"])
subscriptions_router = APIRouter(prefix="/subscriptions", tags=["subscriptions"])

UNAUTHORIZED: dict[int | str, dict[str, str]] = {
    401: {"description": "missing or invalid session token"},
}
PAGE_RESPONSES: dict[int | str, dict[str, str]] = {
    **UNAUTHORIZED,
    400: {"description": "the cursor was modified or belongs to another list"},
    422: {"description": "numItems is not within 1..100"},
}
ONE_RESPONSES: dict[int | str, dict[str, str]] = {
    **UNAUTHORIZED,
    404: {"description": "no such payment, not synced yet, or not the caller's"},
}


async def repository(request: Request) -> PaymentsRepository:
    repo: PaymentsRepository = request.app.state.payments
    return repo


Payments = Annotated[PaymentsRepository, Depends(repository)]


@payments_router.get(
    "/me",
    response_model=Page[PaymentAttemptView],
    response_model_by_alias=True,
    responses=PAGE_RESPONSES,
)
async def my_payments(
    user: CurrentUser, params: Pagination, codec: Cursors, repo: Payments
) -> Page[PaymentAttemptView]:
    """The caller's payment attempts, newest first, a page at a time (`numItems`, `cursor`)."""
    return await handlers.my_payments(user.user_id, params, codec, repo)


@payments_router.get(
    "/{paymentId}",
    response_model=PaymentAttemptView,
    response_model_by_alias=True,
    responses=ONE_RESPONSES,
)
async def payment(paymentId: str, user: CurrentUser, repo: Payments) -> PaymentAttemptView:
    """The caller's latest attempt at payment `paymentId`; anyone else's answers 404."""
    view = await handlers.get_payment(user.user_id, paymentId, repo)
    if view is None:
        raise HTTPException(404, "payment not found")
    return view


@subscriptions_router.get(
    "/me",
    response_model=list[SubscriptionView],
    response_model_by_alias=True,
    responses=UNAUTHORIZED,
)
async def my_subscriptions(user: CurrentUser, repo: Payments) -> list[SubscriptionView]:
    """The caller's subscriptions, newest first, with their items (plan, status, period)."""
    return await handlers.my_subscriptions(user.user_id, repo)
