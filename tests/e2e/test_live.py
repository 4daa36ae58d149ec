"""Live queries over real processes: a signed webhook → gateway → Kafka → worker → MongoDB,
the worker's change notice → every API's notices consumer → a push on the user's open stream,
the value equal to what the REST route answers. And the videos API's own writes, reconnecting
with Last-Event-ID, the per-user limit, an API restarted under a client, cookie auth."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from payments.billing import attempt_event, new_id, subscription_event
from sse_reader import SseStream, open_stream

from conftest import Backend, Stack, service_env
from siteview_common.live import digest
from siteview_devstack.broker import free_port
from siteview_devstack.processes import ProcessSpec, Supervisor
from support import (
    KeyPair,
    eventually,
    metric_value,
    new_svix_id,
    new_user_id,
    user_event,
    wait_in_ledger,
)

pytestmark = pytest.mark.e2e

APIS = ("users-api", "payments-api", "videos-api")
CREATED = 1_773_160_000_000


def consuming(url: str) -> None:
    """Wait until the API at `url` reads the notices topic from its end (what a push needs)."""
    eventually(lambda: metric_value(url, "siteview_live_consumer_ready") == 1, timeout=60)


@pytest.fixture(scope="module")
def live(stack: Stack) -> Stack:
    for api in APIS:
        consuming(stack.urls[api])
    return stack


def rest(url: str, path: str, token: str, **params: Any) -> Any:
    response = httpx.get(
        f"{url}{path}", headers={"Authorization": f"Bearer {token}"}, params=params, timeout=10
    )
    return response.json() if response.status_code == 200 else None


def caller(signing_key: KeyPair) -> tuple[str, str]:
    """A new user's id and a session token for it."""
    uid = new_user_id()
    return uid, signing_key.token(uid)


def deliver(stack: Stack, event: dict[str, Any], svix_id: str | None = None) -> None:
    assert stack.gateway.deliver(event, svix_id=svix_id).status_code == 202


def profile(uid: str, updated_at: int, first_name: str) -> dict[str, Any]:
    kind = "user.updated" if updated_at > CREATED else "user.created"
    return user_event(kind, uid, updated_at=updated_at, first_name=first_name)


def test_a_profile_stream_starts_with_null_then_pushes_the_synced_profile(
    live: Stack, signing_key: KeyPair
) -> None:
    uid, token = caller(signing_key)
    url = live.urls["users-api"]
    with open_stream(f"{url}/users/me/live", token=token) as stream:
        first = stream.next_block()
        assert first.retry == 2000
        current = stream.next_value()
        assert (current.event, current.data, current.id) == ("user", "null", digest(b"null"))
        deliver(live, profile(uid, CREATED, "Ada"))
        pushed = stream.next_value()
        assert pushed.event == "user"
        assert pushed.value["name"] == "Ada Lovelace"
        assert pushed.value == rest(url, "/users/me", token)
        assert pushed.id == digest(pushed.data.encode())  # type: ignore[union-attr]


def test_a_stale_event_pushes_nothing(live: Stack, backend: Backend, signing_key: KeyPair) -> None:
    uid = new_user_id()
    url = live.urls["users-api"]
    with open_stream(f"{url}/users/me/live", token=signing_key.token(uid)) as stream:
        assert stream.next_value().value is None
        deliver(live, profile(uid, CREATED, "Ada"))
        assert stream.next_value().value["name"] == "Ada Lovelace"
        # Older than what is stored: applied as stale, its notice read and nothing sent ...
        stale = new_svix_id()
        deliver(live, profile(uid, CREATED - 1000, "Stale"), svix_id=stale)
        wait_in_ledger(backend.mongo, live.databases["users"], stale)
        # ... so the next value sent is the newer marker's.
        deliver(live, profile(uid, CREATED + 1000, "Marker"))
        assert stream.next_value().value["name"] == "Marker Lovelace"


def test_another_users_change_never_reaches_this_stream(live: Stack, signing_key: KeyPair) -> None:
    mine, theirs = new_user_id(), new_user_id()
    url = f"{live.urls['users-api']}/users/me/live"
    with (
        open_stream(url, token=signing_key.token(mine)) as my_stream,
        open_stream(url, token=signing_key.token(theirs)) as their_stream,
    ):
        assert my_stream.next_value().value is None
        assert their_stream.next_value().value is None
        deliver(live, profile(theirs, CREATED, "Theirs"))
        # This process has handled their notice: it pushed it to their stream ...
        assert their_stream.next_value().value["externalId"] == theirs
        deliver(live, profile(mine, CREATED, "Mine"))
        # ... and the next thing on mine is my own change.
        assert my_stream.next_value().value["externalId"] == mine


def test_reconnecting_with_last_event_id(live: Stack, signing_key: KeyPair) -> None:
    uid, token = caller(signing_key)
    url = f"{live.urls['users-api']}/users/me/live"
    deliver(live, profile(uid, CREATED, "First"))
    eventually(lambda: rest(live.urls["users-api"], "/users/me", token))
    with open_stream(url, token=token) as stream:
        have = stream.next_value()
        assert have.value["name"] == "First Lovelace"
    # The client has this value: nothing is re-sent until it changes.
    with open_stream(url, token=token, headers={"Last-Event-ID": have.id or ""}) as stream:
        deliver(live, profile(uid, CREATED + 1, "Second"))
        second = stream.next_value()
        assert second.value["name"] == "Second Lovelace"
    # An older id: the current value at once.
    with open_stream(url, token=token, headers={"Last-Event-ID": have.id or ""}) as stream:
        assert stream.next_value().id == second.id


def test_beyond_the_per_user_limit_a_stream_answers_429(live: Stack, signing_key: KeyPair) -> None:
    _, token = caller(signing_key)
    users, payments = live.urls["users-api"], live.urls["payments-api"]
    refused_before = metric_value(users, "siteview_live_drops_total", reason="limit")
    with ExitStack() as held:
        for _ in range(5):  # LIVE_MAX_STREAMS_PER_USER's default
            held.enter_context(open_stream(f"{users}/users/me/live", token=token)).next_value()
        assert metric_value(users, "siteview_live_streams", stream="user") >= 5
        refused = httpx.get(
            f"{users}/users/me/live", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert refused.status_code == 429
        assert refused.json() == {"detail": "too many live streams for this user"}
        assert refused.headers["retry-after"] == "5"
        assert metric_value(users, "siteview_live_drops_total", reason="limit") == (
            refused_before + 1
        )
        # The limit is per process: another API still serves this user.
        with open_stream(f"{payments}/subscriptions/me/live", token=token) as other:
            assert other.next_value().value == []


def test_the_session_cookie_is_accepted_and_a_token_in_the_url_is_not(
    live: Stack, signing_key: KeyPair
) -> None:
    _, token = caller(signing_key)
    url = f"{live.urls['users-api']}/users/me/live"
    with open_stream(url, cookies={"__session": token}) as stream:
        assert stream.next_value().value is None
    for name in ("token", "__session", "authorization"):
        response = httpx.get(url, params={name: token}, timeout=10)
        assert response.status_code == 401, name
        assert response.json() == {"detail": "missing or invalid session token"}
    # Only the live routes take the cookie.
    response = httpx.get(
        f"{live.urls['users-api']}/users/me", cookies={"__session": token}, timeout=10
    )
    assert response.status_code == 401


def test_a_paid_attempt_shows_up_on_the_payments_stream(live: Stack, signing_key: KeyPair) -> None:
    uid, token = caller(signing_key)
    url = live.urls["payments-api"]
    attempt_id, payment_id = new_id("pa"), new_id("pay")
    with open_stream(f"{url}/payments/me/live", token=token, params={"numItems": 5}) as stream:
        empty = stream.next_value()
        assert empty.event == "payments"
        assert empty.value == rest(url, "/payments/me", token, numItems=5)
        assert empty.value["page"] == []
        checkout = {"attempt_id": attempt_id, "payment_id": payment_id}
        deliver(live, attempt_event(uid, status="pending", updated_at=CREATED, **checkout))
        assert stream.next_value().value["page"][0]["status"] == "pending"
        deliver(live, attempt_event(uid, status="paid", updated_at=CREATED + 5000, **checkout))
        paid = stream.next_value()
        assert [(a["id"], a["status"]) for a in paid.value["page"]] == [(attempt_id, "paid")]
        assert paid.value == rest(url, "/payments/me", token, numItems=5)


def test_a_subscription_shows_up_on_the_subscriptions_stream(
    live: Stack, signing_key: KeyPair
) -> None:
    uid, token = caller(signing_key)
    url = live.urls["payments-api"]
    with open_stream(f"{url}/subscriptions/me/live", token=token) as stream:
        assert stream.next_value().value == []
        subscription_id, item_id = new_id("sub"), new_id("subi")
        event = subscription_event(
            uid, subscription_id=subscription_id, items=[(item_id, "active")], updated_at=CREATED
        )
        deliver(live, event)
        pushed = stream.next_value()
        assert pushed.event == "subscriptions"
        assert [s["id"] for s in pushed.value] == [subscription_id]
        assert pushed.value == rest(url, "/subscriptions/me", token)


def test_the_videos_stream_follows_the_apis_writes_and_the_deletion_cascade(
    live: Stack, signing_key: KeyPair
) -> None:
    uid, token = caller(signing_key)
    url = live.urls["videos-api"]
    auth = {"Authorization": f"Bearer {token}"}
    with open_stream(f"{url}/videos/live", token=token, params={"numItems": 3}) as stream:
        assert stream.next_value().value["page"] == []
        created = httpx.post(
            f"{url}/videos",
            headers=auth,
            json={"title": "Live", "url": "https://example.com/live"},
            timeout=10,
        )
        assert created.status_code == 201
        video_id = created.json()["id"]
        pushed = stream.next_value()
        assert pushed.event == "videos"
        assert [v["id"] for v in pushed.value["page"]] == [video_id]
        httpx.post(f"{url}/videos/{video_id}/views", headers=auth, timeout=10)
        viewed = stream.next_value()
        assert viewed.value["page"][0]["views"] == 1
        assert viewed.value == rest(url, "/videos", token, numItems=3)
        deliver(live, user_event("user.deleted", uid, updated_at=CREATED + 10**9))
        assert stream.next_value().value["page"] == []


@pytest.fixture
def own_users_api(
    backend: Backend, signing_key: KeyPair, run_id: str, stack: Stack
) -> Iterator[tuple[Supervisor, ProcessSpec]]:
    """A users API of this test's own (on the stack's database), to stop and start again."""
    supervisor = Supervisor(service_env(backend, signing_key, run_id), echo=False)
    spec = ProcessSpec("users-api-live", "siteview_users", ("api",), free_port())
    try:
        yield supervisor, spec
    finally:
        supervisor.stop_all()


def start(supervisor: Supervisor, spec: ProcessSpec, stack: Stack) -> str:
    supervisor.start(spec, {"MONGODB_DATABASE": stack.databases["users"]})
    supervisor.wait_ready([spec.name], timeout=60)
    url = f"http://127.0.0.1:{spec.port}"
    consuming(url)
    return url


def drain(stream: SseStream) -> None:
    """Read until the server ends the stream."""
    with pytest.raises((EOFError, httpx.HTTPError)):
        while True:
            stream.next_block()


def test_after_an_api_restart_the_client_reconnects_to_the_current_value(
    live: Stack, signing_key: KeyPair, own_users_api: tuple[Supervisor, ProcessSpec]
) -> None:
    supervisor, spec = own_users_api
    uid, token = caller(signing_key)
    url = start(supervisor, spec, live)
    with open_stream(f"{url}/users/me/live", token=token) as stream:
        assert stream.next_value().value is None
        deliver(live, profile(uid, CREATED, "Before"))
        before = stream.next_value()
        assert before.value["name"] == "Before Lovelace"
        supervisor.stop(spec.name)  # SIGTERM: the stream is closed, the process exits
        drain(stream)
    deliver(live, profile(uid, CREATED + 1, "Meanwhile"))
    eventually(
        lambda: (
            (rest(live.urls["users-api"], "/users/me", token) or {}).get("name")
            == "Meanwhile Lovelace"
        )
    )
    url = start(supervisor, spec, live)
    reconnect = {"Last-Event-ID": before.id or ""}
    with open_stream(f"{url}/users/me/live", token=token, headers=reconnect) as stream:
        assert stream.next_value().value["name"] == "Meanwhile Lovelace"


def test_every_api_documents_its_live_routes(live: Stack) -> None:
    routes = {
        "users-api": ["/users/me/live"],
        "payments-api": ["/payments/me/live", "/subscriptions/me/live"],
        "videos-api": ["/videos/live", "/videos/{video_id}/splats/live"],
    }
    for api, paths in routes.items():
        spec = httpx.get(f"{live.urls[api]}/openapi.json", timeout=10).json()
        for path in paths:
            responses = spec["paths"][path]["get"]["responses"]
            assert "text/event-stream" in responses["200"]["content"], (api, path)
            assert {"401", "429"} <= set(responses), (api, path)
