"""Signed webhook → gateway → Kafka → users worker → MongoDB → GET /users/me, over real
processes, the real broker and the real driver."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from conftest import Backend, Stack
from siteview_common.events import HEADER_DLQ_REASON, Topics
from support import (
    KeyPair,
    dead_letter_headers,
    eventually,
    key_on_partition_of,
    new_svix_id,
    new_user_id,
    partition_count_sync,
    user_event,
    wait_in_ledger,
)

pytestmark = pytest.mark.e2e


def get_me(stack: Stack, token: str) -> httpx.Response:
    return httpx.get(
        f"{stack.urls['users-api']}/users/me",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def profile_named(stack: Stack, token: str, name: str) -> dict[str, object] | None:
    response = get_me(stack, token)
    body = response.json() if response.status_code == 200 else None
    return body if body and body["name"] == name else None


def settle(stack: Stack, backend: Backend, signing_key: KeyPair, uid: str) -> None:
    """Deliver a marker after everything sent for `uid`, and wait until the worker applied it.

    The marker is another user's `user.created` whose id lands on `uid`'s partition (not
    `uid`'s own event, whose newer version would hide what a stale one did): the partition is
    consumed in order, so once the marker is in the ledger every event delivered before it for
    `uid` has been applied or found stale, and a check that nothing changed means something."""
    marker = key_on_partition_of(uid, partition_count_sync(backend.kafka, Topics.USERS))
    svix_id = new_svix_id()
    event = user_event("user.created", marker, updated_at=1, first_name="Marker")
    assert stack.gateway.deliver(event, svix_id=svix_id).status_code == 202
    wait_in_ledger(backend.mongo, stack.databases["users"], svix_id)
    assert profile_named(stack, signing_key.token(marker), "Marker Lovelace")


def test_a_new_user_becomes_readable_by_its_own_token(stack: Stack, signing_key: KeyPair) -> None:
    uid = new_user_id()
    token = signing_key.token(uid)
    assert get_me(stack, token).status_code == 404  # not synced yet
    event = user_event("user.created", uid, updated_at=1_773_152_525_000)
    assert stack.gateway.deliver(event).status_code == 202
    body = eventually(lambda: profile_named(stack, token, "Ada Lovelace"))
    assert body == {
        "externalId": uid,
        "name": "Ada Lovelace",
        "email": "ada.lovelace@example.com",
        "imageUrl": event["data"]["image_url"],
        "createdAt": event["data"]["created_at"],
        "updatedAt": 1_773_152_525_000,
    }
    own = httpx.get(
        f"{stack.urls['users-api']}/users/{uid}", headers={"Authorization": f"Bearer {token}"}
    )
    assert own.status_code == 200 and own.json() == body


def test_the_seed_path_is_the_same_handler(stack: Stack, signing_key: KeyPair) -> None:
    uid = new_user_id()
    event = user_event("user.created", uid, updated_at=5, first_name="Seed", last_name=None)
    assert stack.gateway.deliver(event, path="/clerk-users-webhook").status_code == 202
    assert eventually(lambda: profile_named(stack, signing_key.token(uid), "Seed"))


def test_another_users_record_answers_404_and_no_token_401(
    stack: Stack, signing_key: KeyPair
) -> None:
    owner, other = new_user_id(), new_user_id()
    stack.gateway.deliver(user_event("user.created", owner, updated_at=1))
    eventually(lambda: profile_named(stack, signing_key.token(owner), "Ada Lovelace"))
    url = f"{stack.urls['users-api']}/users/{owner}"
    assert (
        httpx.get(url, headers={"Authorization": f"Bearer {signing_key.token(other)}"}).status_code
        == 404
    )
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer not.a.jwt"}).status_code == 401
    forged = KeyPair("test-key-1").token(owner)  # same kid, another key
    response = httpx.get(url, headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert response.json() == {"detail": "missing or invalid session token"}


def test_reordered_and_duplicate_deliveries_converge_on_the_newest(
    stack: Stack, backend: Backend, signing_key: KeyPair
) -> None:
    uid = new_user_id()
    token = signing_key.token(uid)
    created = user_event("user.created", uid, updated_at=100, first_name="Old")
    updated = user_event("user.updated", uid, updated_at=200, first_name="New")
    created_id, updated_id = new_svix_id(), new_svix_id()
    assert stack.gateway.deliver(updated, svix_id=updated_id).status_code == 202
    assert stack.gateway.deliver(created, svix_id=created_id).status_code == 202
    assert stack.gateway.deliver(updated, svix_id=updated_id).status_code == 202  # Clerk retry
    assert stack.gateway.deliver(created, svix_id=created_id).status_code == 202  # replay
    assert stack.gateway.deliver(created).status_code == 202  # the old state, another delivery
    settle(stack, backend, signing_key, uid)
    me = get_me(stack, token)
    assert me.status_code == 200
    assert (me.json()["name"], me.json()["updatedAt"]) == ("New Lovelace", 200)


def test_a_deleted_user_stays_deleted(stack: Stack, backend: Backend, signing_key: KeyPair) -> None:
    uid = new_user_id()
    token = signing_key.token(uid)
    stack.gateway.deliver(user_event("user.created", uid, updated_at=100))
    eventually(lambda: profile_named(stack, token, "Ada Lovelace"))
    assert stack.gateway.deliver(user_event("user.deleted", uid, updated_at=300)).status_code == 202
    eventually(lambda: get_me(stack, token).status_code == 404)
    # a late update (Clerk retries for days) must not resurrect the user, nor may one whose
    # clock is newer than the deletion's: deletion is final
    late = user_event("user.updated", uid, updated_at=200, first_name="Zombie")
    assert stack.gateway.deliver(late).status_code == 202
    newer = user_event("user.updated", uid, updated_at=400, first_name="Lazarus")
    assert stack.gateway.deliver(newer).status_code == 202
    settle(stack, backend, signing_key, uid)
    gone = get_me(stack, token)
    assert (gone.status_code, gone.json()) == (404, {"detail": "user not found"})


async def test_a_poison_message_reaches_the_dlq_and_the_partition_moves_on(
    stack: Stack, backend: Backend, signing_key: KeyPair
) -> None:
    uid = new_user_id()
    poison = user_event("user.updated", uid, updated_at=1)
    poison["data"]["email_addresses"] = "not a list"
    svix_id = new_svix_id()
    assert stack.gateway.deliver(poison, svix_id=svix_id).status_code == 202
    # the same key (user id) → the same partition: the next event must still apply
    stack.gateway.deliver(user_event("user.created", uid, updated_at=2, first_name="Fine"))
    headers = await dead_letter_headers(backend.kafka, Topics.dlq(Topics.USERS), svix_id)
    assert "ValidationError" in headers[HEADER_DLQ_REASON]
    assert headers["dlq-group"] == "users-service"
    token = signing_key.token(uid)
    await asyncio.to_thread(eventually, lambda: profile_named(stack, token, "Fine Lovelace"))
