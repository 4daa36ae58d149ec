"""FastAPI dependencies every authenticated API shares. JWT failures become 401 only here."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from siteview_common.auth import ClerkClaims, ClerkTokenVerifier, InvalidTokenError, bearer_token
from siteview_common.pagination import CursorCodec, PageParams, page_params

UNAUTHORIZED = HTTPException(
    status_code=401,
    detail="missing or invalid session token",
    headers={"WWW-Authenticate": "Bearer"},
)


async def current_user(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> ClerkClaims:
    verifier: ClerkTokenVerifier = request.app.state.verifier
    try:
        return await verifier.verify(bearer_token(authorization))
    except InvalidTokenError:
        raise UNAUTHORIZED from None


def cursor_codec(request: Request) -> CursorCodec:
    codec: CursorCodec = request.app.state.cursor_codec
    return codec


CurrentUser = Annotated[ClerkClaims, Depends(current_user)]
Pagination = Annotated[PageParams, Depends(page_params)]
Cursors = Annotated[CursorCodec, Depends(cursor_codec)]
