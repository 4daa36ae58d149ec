"""Live queries, in one process. Who may open a stream: the Bearer header, else Clerk's
`__session` cookie, on the live routes only; never a token in the URL. CORS with credentials
for the named origins, so a browser's `EventSource(url, {withCredentials: true})` sends that
cookie."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import ValidationError

from siteview_common.auth import ClerkTokenVerifier, InvalidTokenError, TokenPolicy, session_token
from siteview_common.deps import CurrentUser, LiveUser
from siteview_common.settings import CommonSettings
from siteview_common.webapp import create_app
from support import TEST_AZP, TEST_ISSUER, KeyPair, served

USER = "user_live_auth"
ORIGIN = "https://app.siteview.test"

router = APIRouter()


@router.get("/live")
async def live(user: LiveUser) -> dict[str, str]:
    return {"user": user.user_id}


@router.get("/rest")
async def rest(user: CurrentUser) -> dict[str, str]:
    return {"user": user.user_id}


@pytest.fixture(scope="module")
def key() -> KeyPair:
    return KeyPair("kid-live")


def lifespan_with(**state: object) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """A lifespan that puts `state` on `app.state`, as an API's composition root does."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for name, value in state.items():
            setattr(app.state, name, value)
        yield

    return lifespan


@pytest.fixture(scope="module")
def url(key: KeyPair) -> Iterator[str]:
    verifier = ClerkTokenVerifier(
        TokenPolicy(issuer=TEST_ISSUER, authorized_parties=(TEST_AZP,)),
        public_key=key.public_pem,
    )
    app = create_app(
        title="live-auth-under-test",
        settings=CommonSettings(cors_origins=(ORIGIN,)),
        lifespan=lifespan_with(verifier=verifier),
        checks={},
        routers=[router],
    )
    with served(app) as base:
        yield base


def get(url: str, path: str, **options: object) -> httpx.Response:
    return httpx.get(f"{url}{path}", timeout=10, **options)  # type: ignore[arg-type]


def test_the_header_wins_else_the_cookie_is_read() -> None:
    assert session_token("Bearer header-token", "cookie-token") == "header-token"
    assert session_token(None, "cookie-token") == "cookie-token"
    assert session_token("", " cookie-token ") == "cookie-token"
    with pytest.raises(InvalidTokenError):
        session_token("Basic dXNlcjpwdw==", "cookie-token")  # a header that is sent decides
    with pytest.raises(InvalidTokenError):
        session_token(None, None)
    with pytest.raises(InvalidTokenError):
        session_token(None, "  ")


def test_a_live_route_takes_the_bearer_header_or_the_session_cookie(url: str, key: KeyPair) -> None:
    token = key.token(USER)
    by_header = get(url, "/live", headers={"Authorization": f"Bearer {token}"})
    by_cookie = get(url, "/live", cookies={"__session": token})
    assert (by_header.status_code, by_header.json()) == (200, {"user": USER})
    assert (by_cookie.status_code, by_cookie.json()) == (200, {"user": USER})


def test_the_header_wins_over_the_cookie(url: str, key: KeyPair) -> None:
    other = key.token("user_someone_else")
    both = get(
        url, "/live", headers={"Authorization": f"Bearer {other}"}, cookies={"__session": "x"}
    )
    assert both.json() == {"user": "user_someone_else"}
    forged_header = get(
        url,
        "/live",
        headers={"Authorization": "Bearer not-a-token"},
        cookies={"__session": key.token(USER)},
    )
    assert forged_header.status_code == 401


def test_a_rest_route_never_takes_the_cookie(url: str, key: KeyPair) -> None:
    response = get(url, "/rest", cookies={"__session": key.token(USER)})
    assert response.status_code == 401
    assert response.json() == {"detail": "missing or invalid session token"}


def test_a_token_in_the_url_is_never_accepted(url: str, key: KeyPair) -> None:
    token = key.token(USER)
    for name in ("token", "__session", "access_token", "authorization"):
        response = get(url, "/live", params={name: token})
        assert response.status_code == 401, name


def test_an_invalid_cookie_is_a_401(url: str, key: KeyPair) -> None:
    expired = key.token(USER, ttl=-60)
    for cookie in ("garbage", expired, KeyPair("kid-live").token(USER)):
        response = get(url, "/live", cookies={"__session": cookie})
        assert response.status_code == 401
        assert response.json() == {"detail": "missing or invalid session token"}


def test_cors_allows_credentials_for_a_named_origin(url: str, key: KeyPair) -> None:
    response = get(url, "/live", headers={"Origin": ORIGIN}, cookies={"__session": key.token(USER)})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["access-control-allow-credentials"] == "true"

    preflight = httpx.options(
        f"{url}/live",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "last-event-id, authorization",
        },
        timeout=10,
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert preflight.headers["access-control-allow-credentials"] == "true"
    allowed = {
        h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")
    }
    assert {"last-event-id", "authorization"} <= allowed


def test_cors_allows_no_other_origin(url: str, key: KeyPair) -> None:
    response = get(
        url,
        "/live",
        headers={"Origin": "https://evil.example"},
        cookies={"__session": key.token(USER)},
    )
    # Without Access-Control-Allow-Origin the browser hands the page nothing.
    assert "access-control-allow-origin" not in response.headers


def test_a_wildcard_origin_is_refused() -> None:
    with pytest.raises(ValidationError, match="name each origin"):
        CommonSettings(cors_origins="https://app.example.com, *")  # type: ignore[arg-type]
