"""Process-level guarantees: production never runs on the development MongoDB stand-in, and
every process of the running system answers its health, readiness and metrics endpoints."""

from __future__ import annotations

import httpx
import pytest

from conftest import Backend, Stack
from siteview_devstack.broker import free_port
from siteview_devstack.processes import ProcessSpec, Supervisor, base_env
from support import TEST_ISSUER, KeyPair, run_module

pytestmark = pytest.mark.e2e


def test_a_production_api_refuses_the_stand_in_and_runs_on_mongodb(
    backend: Backend, signing_key: KeyPair
) -> None:
    env = base_env()
    env.update(
        APP_ENV="production",
        MONGODB_URL=backend.mongo,
        KAFKA_BOOTSTRAP_SERVERS=backend.kafka,  # its live queries' notices
        CLERK_JWT_KEY=signing_key.public_pem,
        CLERK_ISSUER=TEST_ISSUER,
        PORT=str(free_port()),
        HOST="127.0.0.1",
    )
    if backend.is_standin:
        result = run_module(["siteview_users", "api"], env)
        assert result.returncode == 2
        assert result.stderr == (
            "siteview: MONGODB_URL points at the development MongoDB stand-in; "
            "it is refused unless APP_ENV=development\n"
        )
    else:
        supervisor = Supervisor(env, echo=False)
        supervisor.start(ProcessSpec("users-api", "siteview_users", ("api",), int(env["PORT"])))
        try:
            supervisor.wait_ready(timeout=60)
        finally:
            supervisor.stop_all()


def test_every_process_is_healthy_ready_and_measured(stack: Stack) -> None:
    assert set(stack.urls) >= {"webhooks", "users-api", "users-worker"}
    for name, url in stack.urls.items():
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}, name
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 200, name
        assert all(ready.json()["checks"].values()), name
        metrics = httpx.get(f"{url}/metrics")
        assert metrics.headers["content-type"].startswith("text/plain"), name
        assert "siteview_http_requests_total" in metrics.text, name
        if name.endswith("-worker"):
            assert set(ready.json()["checks"]) == {"database", "broker"}, name


def test_errors_are_json_and_leak_nothing(stack: Stack) -> None:
    response = httpx.get(f"{stack.urls['users-api']}/no/such/route")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}
    response = httpx.post(f"{stack.urls['users-api']}/users/me")
    assert response.status_code == 405
    assert set(response.json()) == {"detail"}


def test_an_unreachable_database_stops_the_process_with_one_line(signing_key: KeyPair) -> None:
    env = base_env()
    env.update(
        APP_ENV="production",
        MONGODB_URL=f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=500",
        CLERK_JWT_KEY=signing_key.public_pem,
        CLERK_ISSUER=TEST_ISSUER,
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",  # required, never reached: MongoDB is first
        PORT=str(free_port()),
    )
    result = run_module(["siteview_users", "api"], env)
    assert result.returncode == 2
    assert result.stderr == (
        "siteview: cannot reach MongoDB at MONGODB_URL: ServerSelectionTimeoutError\n"
    )
