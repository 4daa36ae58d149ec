"""The caller's payment attempts and subscriptions as live streams: GET /payments/me/live and
GET /subscriptions/me/live (see `siteview_common.live`)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from siteview_common.deps import Cursors, FirstPage, LiveUser
from siteview_common.live import LiveResponse, encode, live_response, live_responses
from siteview_payments import handlers
from siteview_payments.entrypoints.http import Payments

payments_router = APIRouter(prefix="/payments", tags=["payments"])
subscriptions_router = APIRouter(prefix="/subscriptions", tags=["subscriptions"])


@payments_router.get(
    "/me/live",
    response_class=LiveResponse,
    responses=live_responses(
        "GET /payments/me?numItems=N's body (the first page)", stream="payments", paged=True
    ),
)
async def my_payments_live(
    request: Request, user: LiveUser, page: FirstPage, codec: Cursors, repo: Payments
) -> LiveResponse:
    """The first page of the caller's payment attempts (`event: payments`), now and whenever
    one of them changed: a checkout's attempt turning `paid` shows here."""

    async def read() -> bytes:
        return encode(await handlers.my_payments(user.user_id, page, codec, repo))

    return await live_response(
        request, user_id=user.user_id, collection="payment_attempts", stream="payments", read=read
    )


@subscriptions_router.get(
    "/me/live",
    response_class=LiveResponse,
    responses=live_responses("GET /subscriptions/me's body", stream="subscriptions"),
)
async def my_subscriptions_live(request: Request, user: LiveUser, repo: Payments) -> LiveResponse:
    """The caller's subscriptions with their items (`event: subscriptions`), now and whenever
    one of them changed."""

    async def read() -> bytes:
        return encode(await handlers.my_subscriptions(user.user_id, repo))

    return await live_response(
        request, user_id=user.user_id, collection="subscriptions", stream="subscriptions", read=read
    )
