"""`siteview import --from-convex`: a Convex export lands users, payment attempts and videos in
the services' databases in the shapes their APIs serve, never over newer state from Clerk, and
a second import changes nothing."""

from __future__ import annotations

import json
import uuid
import zipfile
from pathlib import Path
from typing import Any

import httpx

from conftest import Backend, Stack
from siteview_devstack.processes import base_env
from support import KeyPair, eventually, run_module, user_event

CREATED = 1_760_000_000_000


def convex_export(path: Path, tables: dict[str, list[dict[str, Any]]]) -> Path:
    """A ZIP shaped as `npx convex export` writes it: `<table>/documents.jsonl` per table,
    plus the `_tables` metadata table."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("README.md", "exported from Convex\n")
        meta = "".join(json.dumps({"name": name, "id": i}) + "\n" for i, name in enumerate(tables))
        archive.writestr("_tables/documents.jsonl", meta)
        for name, docs in tables.items():
            archive.writestr(f"{name}/documents.jsonl", "".join(json.dumps(d) + "\n" for d in docs))
    return path


def money(cents: int) -> dict[str, Any]:
    return {
        "amount": cents,
        "amount_formatted": f"{cents / 100:.2f}",
        "currency": "USD",
        "currency_symbol": "$",
    }


def fixture_tables(grace: str, linus: str, run: str) -> dict[str, list[dict[str, Any]]]:
    """The Convex schema's shapes: users {name, externalId}, paymentAttempts (Clerk's attempt
    payload plus the Convex `userId`), videos {userId, title, url, createdAt, views, deletedAt}."""
    return {
        "users": [
            {
                "_id": f"k17grace{run}",
                "_creationTime": CREATED + 0.5,
                "name": "Grace Hopper",
                "externalId": grace,
            },
            {
                "_id": f"k17linus{run}",
                "_creationTime": CREATED + 1.25,
                "name": "Old Convex Name",
                "externalId": linus,
            },
            {
                "_id": f"k17nameless{run}",
                "_creationTime": CREATED + 1.5,
                "name": "null null",
                "externalId": f"user_nameless{run}",
            },
        ],
        "paymentAttempts": [
            {
                "_id": f"kd7pay{run}",
                "_creationTime": CREATED + 2.0,
                "payment_id": f"pay_{run}",
                "userId": f"k17grace{run}",
                "payer": {
                    "user_id": grace,
                    "email": "grace@example.com",
                    "first_name": "Grace",
                    "last_name": "Hopper",
                },
                "status": "paid",
                "charge_type": "checkout",
                "created_at": CREATED + 100,
                "updated_at": CREATED + 200,
                "billing_date": CREATED + 100,
                "paid_at": CREATED + 200,
                "invoice_id": "inv_1",
                "statement_id": "stmt_1",
                "payment_source": {"card_type": "visa", "last4": "4242"},
                "subscription_items": [],
                "totals": {
                    "grand_total": money(1000),
                    "subtotal": money(1000),
                    "tax_total": money(0),
                },
            }
        ],
        "videos": [
            {
                "_id": f"jh7live{run}",
                "_creationTime": CREATED + 3.0,
                "userId": f"k17grace{run}",
                "title": "Compilers",
                "url": "https://example.com/compilers",
                "createdAt": CREATED + 3000,
                "views": 3,
            },
            {
                "_id": f"jh7gone{run}",
                "_creationTime": CREATED + 4.0,
                "userId": f"k17grace{run}",
                "title": "Removed",
                "url": "https://example.com/removed",
                "createdAt": CREATED + 4000,
                "deletedAt": CREATED + 5000,
            },
        ],
    }


def import_convex(backend: Backend, stack: Stack, archive: Path) -> str:
    env = base_env()
    env.update(
        APP_ENV=backend.app_env,
        MONGODB_URL=backend.mongo,
        USERS_MONGODB_DATABASE=stack.databases["users"],
        PAYMENTS_MONGODB_DATABASE=stack.databases["payments"],
        VIDEOS_MONGODB_DATABASE=stack.databases["videos"],
    )
    done = run_module(["siteview_ops.cli", "import", "--from-convex", str(archive)], env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def get(stack: Stack, signing_key: KeyPair, api: str, path: str, user: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {signing_key.token(user)}"}
    return httpx.get(f"{stack.urls[api]}{path}", headers=headers, timeout=15)


def test_convex_export_lands_in_each_service_and_twice_changes_nothing(
    backend: Backend, stack: Stack, signing_key: KeyPair, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:10]
    grace, linus = f"user_grace{run}", f"user_linus{run}"
    # Clerk's events already brought Linus's profile further than Convex ever had it.
    newer = user_event(
        "user.updated", linus, updated_at=CREATED + 10_000, first_name="Linus", last_name="Torvalds"
    )
    assert stack.gateway.deliver(newer).status_code == 202
    eventually(lambda: get(stack, signing_key, "users-api", "/users/me", linus).status_code == 200)

    archive = convex_export(tmp_path / "convex.zip", fixture_tables(grace, linus, run))
    first = import_convex(backend, stack, archive)
    assert "users: inserted 2, unchanged 1, updated 0" in first
    assert "payment_attempts: inserted 1, unchanged 0, updated 0" in first
    assert "videos: inserted 2, unchanged 0, updated 0" in first

    def read_all() -> dict[str, Any]:
        return {
            "grace": get(stack, signing_key, "users-api", "/users/me", grace).json(),
            "linus": get(stack, signing_key, "users-api", "/users/me", linus).json(),
            "nameless": get(
                stack, signing_key, "users-api", "/users/me", f"user_nameless{run}"
            ).json(),
            "payment": get(
                stack, signing_key, "payments-api", f"/payments/pay_{run}", grace
            ).json(),
            "payments": get(stack, signing_key, "payments-api", "/payments/me", grace).json(),
            "videos": get(stack, signing_key, "videos-api", "/videos", grace).json(),
            "live": get(stack, signing_key, "videos-api", f"/videos/jh7live{run}", grace).json(),
            "gone": get(stack, signing_key, "videos-api", f"/videos/jh7gone{run}", grace),
        }

    seen = read_all()
    assert seen["grace"] == {
        "externalId": grace,
        "name": "Grace Hopper",
        "email": None,
        "imageUrl": None,
        "createdAt": CREATED,
        "updatedAt": CREATED,
    }
    assert seen["nameless"]["name"] == ""  # not Convex's "null null"
    assert seen["linus"]["name"] == "Linus Torvalds"  # Clerk's newer state kept
    payment = seen["payment"]
    assert payment["id"] == f"pay_{run}" and payment["paymentId"] == f"pay_{run}"
    assert payment["userId"] == grace and payment["status"] == "paid"
    assert payment["totals"]["grandTotal"]["amount"] == 1000
    assert payment["paymentSource"]["last4"] == "4242"
    assert payment["createdAt"] == CREATED + 100 and payment["updatedAt"] == CREATED + 200
    assert [p["id"] for p in seen["payments"]["page"]] == [f"pay_{run}"]
    assert seen["live"] == {
        "id": f"jh7live{run}",
        "userId": grace,
        "title": "Compilers",
        "url": "https://example.com/compilers",
        "views": 3,
        "createdAt": CREATED + 3000,
        "updatedAt": CREATED + 3000,
    }
    assert [v["id"] for v in seen["videos"]["page"]] == [f"jh7live{run}"]
    assert seen["gone"].status_code == 404

    second = import_convex(backend, stack, archive)
    assert "users: inserted 0, unchanged 3, updated 0" in second
    assert "payment_attempts: inserted 0, unchanged 1, updated 0" in second
    assert "videos: inserted 0, unchanged 2, updated 0" in second
    again = read_all()
    assert again.pop("gone").status_code == 404
    seen.pop("gone")
    assert again == seen
