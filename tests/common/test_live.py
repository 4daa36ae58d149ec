"""Live queries, in one process. Who may open a stream: the Bearer header, else Clerk's
`__session` cookie, on the live routes only; never a token in the URL. CORS with credentials
for the named origins, so a browser's `EventSource(url, {withCredentials: true})` sends that
cookie."""

from __future__ import annotations

import collections
import hashlib
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, ExitStack, asynccontextmanager

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from prometheus_client import REGISTRY
from pydantic import ValidationError
from pymongo.errors import AutoReconnect
from sse_reader import open_stream

from siteview_common.auth import ClerkTokenVerifier, InvalidTokenError, TokenPolicy, session_token
from siteview_common.deps import CurrentUser, LiveUser
from siteview_common.live import LiveHub, LiveResponse, digest, live_response
from siteview_common.settings import CommonSettings, LiveSettings
from siteview_common.webapp import create_app
from support import TEST_AZP, TEST_ISSUER, KeyPair, eventually, served

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


# --- Streams: a value, pushed when it changed, within the limits ----------------------------

VALUES: dict[str, bytes] = {}
#: How often each user's value was read: proof that a stream handled a notice.
READS: collections.Counter[str] = collections.Counter()
#: A value whose read fails as a database outage does.
UNAVAILABLE = b"<unavailable>"
LIMITS = LiveSettings(
    live_max_streams_per_user=2,
    live_max_streams=3,
    live_heartbeat_seconds=0.3,
    live_send_timeout_seconds=0.5,
)

streams = APIRouter()


@streams.get("/things/{user_id}/live")
async def things_live(request: Request, user_id: str) -> LiveResponse:
    async def read() -> bytes:
        READS[user_id] += 1
        value = VALUES.get(user_id, b"null")
        if value == UNAVAILABLE:
            raise AutoReconnect("connection refused")
        return value

    return await live_response(
        request, user_id=user_id, collection="users", stream="thing", read=read
    )


@streams.post("/notices", status_code=204)
async def notices_arrive(request: Request) -> None:
    """What the notices consumer does with each record it fetches."""
    hub: LiveHub = request.app.state.live
    for line in (await request.body()).splitlines():
        hub.receive(line)


@pytest.fixture(scope="module")
def hub() -> LiveHub:
    return LiveHub(LIMITS)


@pytest.fixture(scope="module")
def live_url(hub: LiveHub) -> Iterator[str]:
    app = create_app(
        title="live-streams-under-test",
        settings=CommonSettings(),
        lifespan=lifespan_with(live=hub),
        checks={},
        routers=[streams],
    )
    with served(app) as base:
        yield base


def new_user() -> str:
    return f"user_{uuid.uuid4().hex}"


def notice(user_id: str, collection: str = "users") -> bytes:
    body = {"userId": user_id, "service": "users", "collection": collection, "ids": [], "at": 1}
    return json.dumps(body).encode()


def announce(url: str, *records: bytes) -> None:
    response = httpx.post(f"{url}/notices", content=b"\n".join(records), timeout=10)
    assert response.status_code == 204


def change(url: str, user_id: str, value: object) -> bytes:
    """Store a new value for `user_id` and announce it, as a worker's write would."""
    VALUES[user_id] = json.dumps(value).encode()
    announce(url, notice(user_id))
    return VALUES[user_id]


def test_a_stream_starts_with_the_current_value_then_sends_each_change(live_url: str) -> None:
    user = new_user()
    with open_stream(f"{live_url}/things/{user}/live") as stream:
        first = stream.next_block()
        assert first.retry == 2000 and first.data is None
        current = stream.next_value()
        assert (current.event, current.value, current.id) == ("thing", None, digest(b"null"))
        data = change(live_url, user, {"v": 1})
        pushed = stream.next_value()
        assert (pushed.event, pushed.value, pushed.id) == ("thing", {"v": 1}, digest(data))
        change(live_url, user, {"v": 2})
        assert stream.next_value().value == {"v": 2}


def test_the_id_is_a_digest_of_the_data() -> None:
    assert digest(b'{"v":1}') == hashlib.blake2b(b'{"v":1}').hexdigest()[:16]
    assert digest(b"null") != digest(b'{"v":1}')


def test_a_notice_that_changes_nothing_sends_nothing(live_url: str) -> None:
    user = new_user()
    change(live_url, user, {"v": 1})
    with open_stream(f"{live_url}/things/{user}/live") as stream:
        assert stream.next_value().value == {"v": 1}
        reads = READS[user]
        announce(live_url, notice(user), notice(user))  # stale or repeated: the same value
        eventually(lambda: READS[user] > reads, timeout=10)  # read again, and then ...
        change(live_url, user, {"v": 2})
        assert stream.next_value().value == {"v": 2}  # ... the next thing sent is the change


def test_a_notice_for_another_user_or_collection_wakes_nothing(live_url: str) -> None:
    user, other = new_user(), new_user()
    with open_stream(f"{live_url}/things/{user}/live") as stream:
        assert stream.next_value().value is None
        VALUES[user] = b'{"v":"unannounced"}'
        announce(live_url, notice(other), notice(user, "videos"))
        change(live_url, user, {"v": "announced"})
        assert stream.next_value().value == {"v": "announced"}


def test_a_record_that_is_not_a_notice_is_skipped(live_url: str) -> None:
    user = new_user()
    with open_stream(f"{live_url}/things/{user}/live") as stream:
        assert stream.next_value().value is None
        announce(live_url, b"not json", b'{"userId": ""}', b"[]")
        change(live_url, user, {"v": 1})
        assert stream.next_value().value == {"v": 1}


def test_last_event_id_skips_the_value_the_client_has(live_url: str) -> None:
    user = new_user()
    data = change(live_url, user, {"v": 1})
    reconnect = {"Last-Event-ID": digest(data)}
    with open_stream(f"{live_url}/things/{user}/live", headers=reconnect) as stream:
        change(live_url, user, {"v": 2})
        assert stream.next_value().value == {"v": 2}
    older = {"Last-Event-ID": digest(data)}
    with open_stream(f"{live_url}/things/{user}/live", headers=older) as stream:
        assert stream.next_value().value == {"v": 2}  # not what the client has: sent at once


def test_heartbeats_are_comments_between_values(live_url: str) -> None:
    with open_stream(f"{live_url}/things/{new_user()}/live") as stream:
        stream.next_value()
        while not (block := stream.next_block()).comments:
            pass
        assert block.data is None and block.id is None


def wait_for_open_streams(hub: LiveHub, count: int) -> None:
    eventually(lambda: hub.open_streams == count, timeout=10)


def limit_drops() -> float:
    return REGISTRY.get_sample_value("siteview_live_drops_total", {"reason": "limit"}) or 0.0


def test_beyond_the_limits_a_stream_is_refused_with_429(live_url: str, hub: LiveHub) -> None:
    wait_for_open_streams(hub, 0)
    user, other = new_user(), new_user()
    url = f"{live_url}/things/{user}/live"
    drops = limit_drops()
    with ExitStack() as held:
        for _ in range(LIMITS.live_max_streams_per_user):
            held.enter_context(open_stream(url)).next_value()
        refused = httpx.get(url, timeout=10)
        assert refused.status_code == 429
        assert refused.json() == {"detail": "too many live streams for this user"}
        assert refused.headers["retry-after"] == "5"
        held.enter_context(open_stream(f"{live_url}/things/{other}/live")).next_value()
        full = httpx.get(f"{live_url}/things/{new_user()}/live", timeout=10)
        assert (full.status_code, full.json()) == (429, {"detail": "too many live streams"})
        assert limit_drops() == drops + 2
    wait_for_open_streams(hub, 0)  # each closed stream gave its place back
    with open_stream(url) as stream:
        assert stream.next_value().value is None


def test_a_database_outage_answers_503_before_and_ends_the_stream_after(
    live_url: str, hub: LiveHub
) -> None:
    wait_for_open_streams(hub, 0)
    user = new_user()
    VALUES[user] = UNAVAILABLE
    response = httpx.get(f"{live_url}/things/{user}/live", timeout=10)
    assert (response.status_code, response.json()) == (503, {"detail": "database unavailable"})
    assert hub.open_streams == 0
    change(live_url, user, {"v": 1})
    with open_stream(f"{live_url}/things/{user}/live") as stream:
        assert stream.next_value().value == {"v": 1}
        VALUES[user] = UNAVAILABLE
        announce(live_url, notice(user))
        with pytest.raises(EOFError):
            stream.next_value()  # ended; the client reconnects after `retry`
    wait_for_open_streams(hub, 0)


def slow_drops() -> float:
    return REGISTRY.get_sample_value("siteview_live_drops_total", {"reason": "slow"}) or 0.0


def test_a_client_that_does_not_read_is_dropped(live_url: str, hub: LiveHub) -> None:
    wait_for_open_streams(hub, 0)
    user = new_user()
    drops = slow_drops()
    host, port = live_url.removeprefix("http://").split(":")
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect((host, int(port)))
        client.sendall(f"GET /things/{user}/live HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        wait_for_open_streams(hub, 1)
        # Values of 1 MiB until the buffers between server and client are full and a send
        # blocks past LIVE_SEND_TIMEOUT_SECONDS; the client never reads.
        for version in range(200):
            change(live_url, user, {"v": version, "padding": "x" * 2**20})
            if slow_drops() > drops:
                break
            time.sleep(0.05)
        assert slow_drops() == drops + 1
        wait_for_open_streams(hub, 0)
