from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request

from siteview_common.deps import CurrentUser
from siteview_users import handlers
from siteview_users.repository import UserRepository
from siteview_users.views import UserView

router = APIRouter(prefix="/users", tags=["users"])

NOT_FOUND = HTTPException(404, "user not found")
RESPONSES: dict[int | str, dict[str, str]] = {
    401: {"description": "missing or invalid session token"},
    404: {"description": "not synced yet, deleted, or not the caller"},
}


async def repository(request: Request) -> UserRepository:
    repo: UserRepository = request.app.state.users
    return repo


Users = Annotated[UserRepository, Depends(repository)]


async def _view(external_id: str, repo: UserRepository) -> UserView:
    doc = await handlers.get_user(external_id, repo)
    if doc is None:
        raise NOT_FOUND
    return UserView.from_doc(doc)


@router.get("/me", response_model=UserView, response_model_by_alias=True, responses=RESPONSES)
async def me(user: CurrentUser, repo: Users) -> UserView:
    """The caller's profile, as synced from Clerk (404 until the first event arrived)."""
    return await _view(user.user_id, repo)


@router.get(
    "/{externalId}", response_model=UserView, response_model_by_alias=True, responses=RESPONSES
)
async def by_id(externalId: str, user: CurrentUser, repo: Users) -> UserView:
    """A user by Clerk id: only the caller's own; anyone else's answers 404."""
    if externalId != user.user_id:
        raise NOT_FOUND
    return await _view(externalId, repo)
