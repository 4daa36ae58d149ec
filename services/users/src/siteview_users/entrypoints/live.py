"""The caller's profile as a live stream: GET /users/me/live (see `siteview_common.live`)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from siteview_common.deps import LiveUser
from siteview_common.live import LiveResponse, encode, live_response, live_responses
from siteview_users import handlers
from siteview_users.entrypoints.http import Users
from siteview_users.views import UserView

router = APIRouter(prefix="/users", tags=["users"])


@router.get(
    "/me/live",
    response_class=LiveResponse,
    responses=live_responses(
        "GET /users/me's body, or null until synced and once deleted", stream="user"
    ),
)
async def me_live(request: Request, user: LiveUser, repo: Users) -> LiveResponse:
    """The caller's profile (`event: user`), now and whenever Clerk changed it."""

    async def read() -> bytes:
        doc = await handlers.get_user(user.user_id, repo)
        return encode(None if doc is None else UserView.from_doc(doc))

    return await live_response(
        request, user_id=user.user_id, collection="users", stream="user", read=read
    )
