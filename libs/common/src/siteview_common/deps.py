"""FastAPI dependencies every authenticated API shares. JWT failures become 401 only here.

Every dependency here is a coroutine function: FastAPI runs a plain function in a worker thread
(a hop to the thread pool and back per request), and none of these ever blocks."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Annotated, ParamSpec, TypeVar

from fastapi import Depends, Header, HTTPException, Request

from siteview_common.auth import ClerkClaims, ClerkTokenVerifier, InvalidTokenError, bearer_token
from siteview_common.pagination import CursorCodec, PageParams, page_params

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


async def current_user(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> ClerkClaims:
    verifier: ClerkTokenVerifier = request.app.state.verifier
    try:
        return await verifier.verify(bearer_token(authorization))
    except InvalidTokenError:
        raise UNAUTHORIZED from None


async def cursor_codec(request: Request) -> CursorCodec:
    codec: CursorCodec = request.app.state.cursor_codec
    return codec


CurrentUser = Annotated[ClerkClaims, Depends(current_user)]
Pagination = Annotated[PageParams, Depends(on_the_loop(page_params))]
Cursors = Annotated[CursorCodec, Depends(cursor_codec)]
