"""FastAPI dependencies every authenticated API shares. JWT failures become 401 only here.

Every dependency here is a coroutine function: FastAPI runs a plain function in a worker thread
(a hop to the thread pool and back per request), and none of these ever blocks."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Annotated, ParamSpec, TypeVar

from fastapi import Cookie, Depends, Header, HTTPException, Request

from siteview_common.auth import (
    SESSION_COOKIE,
    ClerkClaims,
    ClerkTokenVerifier,
    InvalidTokenError,
    bearer_token,
    session_token,
)
from siteview_common.changes import BackgroundNotices
from siteview_common.pagination import (
    DEFAULT_NUM_ITEMS,
    CursorCodec,
    NumItems,
    PageParams,
    page_params,
)

P = ParamSpec("P")
T = TypeVar("T")

UNAUTHORIZED = HTTPException(
    status_code=401,
    detail="missing or invalid session token",
    headers={"WWW-Authenticate": "Bearer"},
)


def on_the_loop(call: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    """`call`, a function that never blocks, as a dependency FastAPI runs on the event loop
    (same parameters, so the same query, header and path parameters are read)."""

    @functools.wraps(call)
    async def direct(*args: P.args, **kwargs: P.kwargs) -> T:
        return call(*args, **kwargs)

    return direct


async def _verified(request: Request, token: Callable[[], str]) -> ClerkClaims:
    """The claims of the session token `token()` reads, or 401."""
    verifier: ClerkTokenVerifier = request.app.state.verifier
    try:
        return await verifier.verify(token())
    except InvalidTokenError:
        raise UNAUTHORIZED from None


async def current_user(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> ClerkClaims:
    """The caller, from `Authorization: Bearer <session token>` only."""
    return await _verified(request, lambda: bearer_token(authorization))


async def live_user(
    request: Request,
    authorization: Annotated[
        str | None, Header(description="`Bearer <Clerk session token>`; wins over the cookie")
    ] = None,
    session: Annotated[
        str | None,
        Cookie(alias=SESSION_COOKIE, description="Clerk's session cookie: the same token"),
    ] = None,
) -> ClerkClaims:
    """The caller of a GET live route: the Bearer header, else Clerk's `__session` cookie
    (what a browser's EventSource can send). Only those routes take the cookie: they change
    nothing, so a cross-site request riding on it has nothing to forge. A token in the URL is
    never read."""
    return await _verified(request, lambda: session_token(authorization, session))


async def cursor_codec(request: Request) -> CursorCodec:
    codec: CursorCodec = request.app.state.cursor_codec
    return codec


async def first_page(
    num_items: NumItems = DEFAULT_NUM_ITEMS,
) -> PageParams:
    """A live list is its first page: `numItems` as on the REST route (422 outside 1..100),
    no cursor."""
    return PageParams(num_items=num_items, cursor=None)


async def change_notices(request: Request) -> BackgroundNotices:
    notices: BackgroundNotices = request.app.state.changes
    return notices


CurrentUser = Annotated[ClerkClaims, Depends(current_user)]
LiveUser = Annotated[ClerkClaims, Depends(live_user)]
Pagination = Annotated[PageParams, Depends(on_the_loop(page_params))]
Cursors = Annotated[CursorCodec, Depends(cursor_codec)]
FirstPage = Annotated[PageParams, Depends(first_page)]
#: Change notices of an API's own writes, published after the write, off the request's path.
ChangeNotices = Annotated[BackgroundNotices, Depends(change_notices)]
