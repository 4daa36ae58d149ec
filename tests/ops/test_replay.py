"""`siteview replay users`, run as a process: the users read model rebuilt from the topic into
a fresh database equals the one the live worker keeps."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import pytest
from pymongo import MongoClient
from typer.testing import CliRunner

from conftest import Backend, Stack, service_env
from siteview_ops import cli
from support import KeyPair, new_svix_id, new_user_id, user_event, wait_in_ledger

pytestmark = pytest.mark.e2e


def users_by_id(mongo_url: str, database: str, user_ids: list[str]) -> dict[str, Any]:
    """The users documents of `user_ids` minus bookkeeping (`_id`, which each insert makes)."""
    client: MongoClient[Any] = MongoClient(mongo_url)
    try:
        docs = client[database]["users"].find({"externalId": {"$in": user_ids}}, {"_id": 0})
        return {d["externalId"]: d for d in docs}
    finally:
        client.close()


def test_a_replay_rebuilds_the_live_read_model(
    stack: Stack, backend: Backend, signing_key: KeyPair, run_id: str
) -> None:
    created, updated, deleted = new_user_id(), new_user_id(), new_user_id()
    deliveries = [
        user_event("user.created", created, updated_at=10, first_name="Grace"),
        user_event("user.created", updated, updated_at=10, first_name="Old"),
        user_event("user.updated", updated, updated_at=30, first_name="New"),
        user_event("user.updated", updated, updated_at=20, first_name="Stale"),
        user_event("user.created", deleted, updated_at=10),
        user_event("user.deleted", deleted, updated_at=40),
    ]
    svix_ids = [new_svix_id() for _ in deliveries]
    for event, svix_id in zip(deliveries, svix_ids, strict=True):
        assert stack.gateway.deliver(event, svix_id=svix_id).status_code == 202
    for svix_id in svix_ids:
        wait_in_ledger(backend.mongo, stack.databases["users"], svix_id)
    ids = [created, updated, deleted]
    live = users_by_id(backend.mongo, stack.databases["users"], ids)
    assert live[updated]["name"] == "New Lovelace" and live[deleted]["deleted"] is True

    fresh = f"users_replay_{uuid.uuid4().hex[:8]}"
    env = {
        **service_env(backend, signing_key, run_id),
        "MONGODB_DATABASE": stack.databases["users"],
    }
    try:
        result = subprocess.run(
            [sys.executable, "-m", "siteview_ops.cli", "replay", "users", "--database", fresh],
            env={**env, "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert f"into database {fresh}" in result.stdout
        assert f"Set MONGODB_DATABASE={fresh} for users-api and users-worker" in result.stdout
        patch = json.dumps({"data": {"MONGODB_DATABASE": fresh}})
        assert f"patch configmap users-config --type merge -p '{patch}'" in result.stdout
        assert "WARNING" not in result.stderr  # the test broker keeps the whole history
        assert users_by_id(backend.mongo, fresh, ids) == live

        # a replay never writes over a database that exists
        again = CliRunner().invoke(cli.app, ["replay", "users", "--database", fresh], env=env)
        assert again.exit_code == 1
        assert again.stderr.strip() == (
            f"siteview: database {fresh} exists already: replay only into a fresh one"
        )
    finally:
        client: MongoClient[Any] = MongoClient(backend.mongo)
        client.drop_database(fresh)
        client.close()
