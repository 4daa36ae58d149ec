"""The videos API and worker as running processes, over the session's broker and database."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase
from videos.e2e.callers import Caller

from conftest import Backend
from siteview_common.events import Topics
from siteview_videos import schema
from support import (
    KeyPair,
    eventually_async,
    key_on_partition_of,
    new_svix_id,
    partition_count,
    user_event,
    wait_in_ledger,
)

pytestmark = pytest.mark.e2e

VIDEO_FIELDS = {"id", "userId", "title", "url", "views", "createdAt", "updatedAt"}


async def test_create_read_edit_and_delete(owner: Caller) -> None:
    response = await owner.request(
        "POST", "/videos", json={"title": "  Launch day  ", "url": "https://example.com/launch"}
    )
    assert response.status_code == 201, response.text
    video = response.json()
    assert set(video) == VIDEO_FIELDS
    assert video["userId"] == owner.user_id
    assert video["title"] == "Launch day"
    assert video["url"] == "https://example.com/launch"
    assert video["views"] == 0
    assert isinstance(video["id"], str) and video["id"]
    assert video["createdAt"] == video["updatedAt"]
    assert abs(video["createdAt"] - time.time() * 1000) < 60_000
    assert response.headers["location"] == f"/videos/{video['id']}"
    path = f"/videos/{video['id']}"

    assert (await owner.request("GET", path)).json() == video
    assert [v["id"] for v in (await owner.page())["page"]] == [video["id"]]

    edited = await owner.request("PATCH", path, json={"title": "Launch day (cut)"})
    assert edited.status_code == 200, edited.text
    assert edited.json()["title"] == "Launch day (cut)"
    assert edited.json()["url"] == video["url"]
    assert edited.json()["updatedAt"] >= video["createdAt"]
    moved = await owner.request("PATCH", path, json={"url": "http://example.org/x"})
    assert moved.json()["url"] == "http://example.org/x"
    assert moved.json()["title"] == "Launch day (cut)"
    both = await owner.request("PATCH", path, json={"title": "B", "url": "https://b.example"})
    assert (both.json()["title"], both.json()["url"]) == ("B", "https://b.example")

    views = await owner.request("POST", f"{path}/views")
    assert (views.status_code, views.json()) == (200, {"views": 1})
    assert (await owner.request("GET", path)).json()["views"] == 1

    deleted = await owner.request("DELETE", path)
    assert (deleted.status_code, deleted.content) == (204, b"")
    for method, suffix, body in [
        ("DELETE", "", None),
        ("GET", "", None),
        ("PATCH", "", {"title": "again"}),
        ("POST", "/views", None),
    ]:
        gone = await owner.request(method, path + suffix, json=body)
        assert (gone.status_code, gone.json()) == (404, {"detail": "video not found"}), method
    assert (await owner.page())["page"] == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"title": "   ", "url": "https://example.com"},
        {"title": "x" * 201, "url": "https://example.com"},
        {"title": "t", "url": "example.com/video"},
        {"title": "t", "url": "ftp://example.com/video"},
        {"title": "t", "url": "https://example.com/" + "a" * 2029},
        {"title": "t"},
    ],
)
async def test_invalid_videos_are_refused(owner: Caller, body: dict[str, Any]) -> None:
    response = await owner.request("POST", "/videos", json=body)
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], list)
    assert (await owner.page())["page"] == []


async def test_limits_are_inclusive_and_invalid_edits_are_refused(owner: Caller) -> None:
    longest = "https://example.com/" + "a" * 2028
    video = await owner.create(title="x" * 200, url=longest)
    assert (len(video["title"]), video["url"]) == (200, longest)
    path = f"/videos/{video['id']}"
    for body in [{}, {"title": ""}, {"url": "nope"}, {"title": None}, {"views": 7}]:
        response = await owner.request("PATCH", path, json=body)
        assert response.status_code == 422, body
    assert (await owner.request("GET", path)).json() == video


async def test_page_size_is_bounded(owner: Caller) -> None:
    for num_items in (0, 101, -1):
        response = await owner.request("GET", "/videos", params={"numItems": num_items})
        assert response.status_code == 422, num_items
    for _ in range(21):
        await owner.create()
    first = await owner.page()
    assert len(first["page"]) == 20
    assert first["isDone"] is False
    assert len((await owner.page(numItems=100))["page"]) == 21
    assert len((await owner.page(numItems=1))["page"]) == 1


# (method, path suffix, body, the owner's status)
ENDPOINTS = [
    ("GET", "", None, 200),
    ("PATCH", "", {"title": "changed"}, 200),
    ("DELETE", "", None, 204),
    ("POST", "/views", None, 200),
]


@pytest.mark.parametrize("caller", ["owner", "other", "nobody", "forged"])
@pytest.mark.parametrize(("method", "suffix", "body", "owner_status"), ENDPOINTS)
async def test_only_the_owner_reaches_a_video(
    request: pytest.FixtureRequest,
    owner: Caller,
    caller: str,
    method: str,
    suffix: str,
    body: dict[str, Any] | None,
    owner_status: int,
) -> None:
    video = await owner.create(title="Mine")
    if caller == "forged":
        who = Caller(owner.client, KeyPair(kid="test-key-1"), owner.user_id)  # wrong key
    else:
        who = request.getfixturevalue(caller) if caller != "owner" else owner
    response = await who.request(method, f"/videos/{video['id']}{suffix}", json=body)

    expected = {"owner": owner_status, "other": 404, "nobody": 401, "forged": 401}[caller]
    assert response.status_code == expected, response.text
    if caller == "other":
        assert response.json() == {"detail": "video not found"}
    if caller in ("nobody", "forged"):
        assert response.json() == {"detail": "missing or invalid session token"}
        assert response.headers["www-authenticate"] == "Bearer"
    if caller != "owner":  # nothing changed
        assert (await owner.request("GET", f"/videos/{video['id']}")).json() == video


async def test_listing_and_creating_need_a_token_and_see_only_the_callers_videos(
    owner: Caller, other: Caller, nobody: Caller
) -> None:
    mine = await owner.create()
    theirs = await other.create()
    assert [v["id"] for v in (await owner.page())["page"]] == [mine["id"]]
    assert [v["id"] for v in (await other.page())["page"]] == [theirs["id"]]
    assert theirs["userId"] == other.user_id
    assert (await nobody.request("GET", "/videos")).status_code == 401
    created = await nobody.request("POST", "/videos", json={"title": "t", "url": "http://e.co"})
    assert created.status_code == 401
    garbage = Caller(owner.client, KeyPair(kid="k"), None)
    garbage.headers = {"Authorization": "Bearer not-a-jwt"}
    assert (await garbage.request("GET", "/videos")).status_code == 401


async def test_concurrent_views_are_all_counted(owner: Caller, backend: Backend) -> None:
    video = await owner.create()
    path = f"/videos/{video['id']}/views"
    responses = await asyncio.gather(*(owner.request("POST", path) for _ in range(50)))
    assert [r.status_code for r in responses] == [200] * 50
    counts = sorted(r.json()["views"] for r in responses)
    stored = (await owner.request("GET", f"/videos/{video['id']}")).json()["views"]
    if backend.isolates_concurrent_updates:
        assert counts == list(range(1, 51))
        assert stored == 50
    else:  # FerretDB: every view answered and counted at most once, some may be lost
        assert all(1 <= c <= 50 for c in counts) and 1 <= stored <= 50, (counts, stored)


async def test_a_page_walk_is_stable_under_inserts_and_deletes(owner: Caller) -> None:
    created = [await owner.create(title=f"v{i}") for i in range(17)]
    newest_first = sorted(created, key=lambda v: (v["createdAt"], v["id"]), reverse=True)
    expected = [v["id"] for v in newest_first]

    walked: list[dict[str, Any]] = []
    inserted: set[str] = set()
    deleted_unseen: set[str] = set()
    cursor: str | None = None
    for number in range(20):
        params: dict[str, Any] = {"numItems": 4}
        if cursor is not None:
            params["cursor"] = cursor
        page = await owner.page(**params)
        assert isinstance(page["continueCursor"], str)
        walked += page["page"]
        if page["isDone"]:
            break
        cursor = page["continueCursor"]
        # Between pages: a new video, a deletion ahead of the cursor, one behind it.
        inserted.add((await owner.create(title=f"new{number}"))["id"])
        ahead = expected[-1 - number]
        assert (await owner.request("DELETE", f"/videos/{ahead}")).status_code == 204
        deleted_unseen.add(ahead)
        behind = expected[number]
        assert (await owner.request("DELETE", f"/videos/{behind}")).status_code == 204
    else:
        pytest.fail("the walk did not end")

    ids = [v["id"] for v in walked]
    assert len(ids) == len(set(ids)), "duplicates"
    keys = [(v["createdAt"], v["id"]) for v in walked]
    assert keys == sorted(keys, reverse=True), "not newest first"
    # Every video that existed at the start and was not deleted ahead of the cursor is seen,
    # in order; anything else seen can only be a video inserted during the walk.
    assert [i for i in ids if i not in inserted] == [i for i in expected if i not in deleted_unseen]
    assert not deleted_unseen & set(ids)


def flip(text: str) -> str:
    """`text` with its first character changed (the last one may only hold base64 padding)."""
    return ("A" if text[0] != "A" else "B") + text[1:]


async def test_altered_and_foreign_cursors_are_refused(owner: Caller, other: Caller) -> None:
    for _ in range(3):
        await owner.create()
        await other.create()
    cursor = (await owner.page(numItems=1))["continueCursor"]
    assert len((await owner.page(numItems=1, cursor=cursor))["page"]) == 1
    body, mac = cursor.split(".")
    altered = [
        f"{flip(body)}.{mac}",
        f"{body}.{flip(mac)}",
        "not-a-cursor",
        f"{body}.{mac}.x",
    ]
    for bad in altered:
        response = await owner.request("GET", "/videos", params={"cursor": bad})
        assert (response.status_code, response.json()) == (400, {"detail": "invalid cursor"})
    foreign = await other.request("GET", "/videos", params={"cursor": cursor})
    assert (foreign.status_code, foreign.json()) == (400, {"detail": "invalid cursor"})


async def settle(
    stack: Any, backend: Backend, client: httpx.AsyncClient, key: KeyPair, uid: str
) -> None:
    """Deliver a marker after everything sent for `uid`, and wait until the worker applied it.

    The videos worker applies only `user.deleted`, so the marker is the deletion of another
    user, one with a video, whose id lands on `uid`'s partition: the partition is consumed in
    order, so once the marker is in the ledger (and its user's video gone) every event
    delivered before it for `uid` has been applied."""
    partitions = await partition_count(backend.kafka, Topics.USERS)
    marker = Caller(client, key, key_on_partition_of(uid, partitions))
    video = await marker.create(title="marker")
    svix_id = new_svix_id()
    deleted_at = int(time.time() * 1000)
    event = user_event("user.deleted", marker.user_id or "", updated_at=deleted_at)
    delivered = await asyncio.to_thread(stack.gateway.deliver, event, svix_id=svix_id)
    assert delivered.status_code == 202, delivered.text
    await asyncio.to_thread(wait_in_ledger, backend.mongo, stack.databases["videos"], svix_id)
    assert (await marker.request("GET", f"/videos/{video['id']}")).status_code == 404


async def test_a_clerk_user_deletion_removes_their_videos_and_closes_the_account(
    stack: Any,
    backend: Backend,
    client: httpx.AsyncClient,
    signing_key: KeyPair,
    owner: Caller,
    other: Caller,
    videos_db: AsyncDatabase[Any],
) -> None:
    mine = [await owner.create(title=f"m{i}") for i in range(3)]
    theirs = await other.create()
    deleted_at = int(time.time() * 1000)
    event = user_event("user.deleted", owner.user_id or "", updated_at=deleted_at)
    delivered = await asyncio.to_thread(stack.gateway.deliver, event)
    assert delivered.status_code == 202, delivered.text

    async def list_is_empty() -> bool:
        return (await owner.page())["page"] == []

    await eventually_async(list_is_empty)
    for video in mine:
        assert (await owner.request("GET", f"/videos/{video['id']}")).status_code == 404
    assert (await other.request("GET", f"/videos/{theirs['id']}")).json() == theirs
    refused = await owner.request("POST", "/videos", json={"title": "t", "url": "https://e.co"})
    assert (refused.status_code, refused.json()) == (403, {"detail": "account deleted"})

    # A video written after the deletion was applied (as by a request in flight at that
    # moment) is left alone by a replay of the deletion.
    written_at = int(time.time() * 1000) + 1
    late_id = "late" + (owner.user_id or "")
    await videos_db[schema.VIDEOS].insert_one(
        {
            "_id": late_id,
            "userId": owner.user_id,
            "title": "late",
            "url": "https://e.co",
            "views": 0,
            "createdAt": written_at,
            "updatedAt": written_at,
            "deletedAt": None,
        }
    )
    replayed = await asyncio.to_thread(stack.gateway.deliver, event, svix_id=new_svix_id())
    assert replayed.status_code == 202, replayed.text
    await settle(stack, backend, client, signing_key, owner.user_id or "")
    late_read = await owner.request("GET", f"/videos/{late_id}")
    assert (late_read.status_code, late_read.json().get("id")) == (200, late_id)
    late = await videos_db[schema.VIDEOS].find_one({"_id": late_id})
    assert late is not None and late["deletedAt"] is None
    for video in mine:
        stored = await videos_db[schema.VIDEOS].find_one({"_id": video["id"]})
        assert stored is not None and stored["deletedAt"] == deleted_at
