"""A gateway of the webhooks tests' own, shared by their end-to-end files."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from webhooks.deliveries import INSTANCE

from conftest import Backend, service_env
from siteview_devstack.broker import free_port
from siteview_devstack.processes import ProcessSpec, Supervisor
from support import OLD_WEBHOOK_SECRET, TEST_WEBHOOK_SECRET, KeyPair


@pytest.fixture(scope="session")
def gateway(backend: Backend, signing_key: KeyPair, run_id: str) -> Iterator[str]:
    """A gateway configured with an instance id and a rotated pair of secrets; its base URL."""
    supervisor = Supervisor(service_env(backend, signing_key, run_id), echo=False)
    spec = ProcessSpec("gateway-under-test", "siteview_webhooks", (), free_port())
    supervisor.start(
        spec,
        {
            "CLERK_INSTANCE_ID": INSTANCE,
            "CLERK_WEBHOOK_SIGNING_SECRET": f"{OLD_WEBHOOK_SECRET},{TEST_WEBHOOK_SECRET}",
        },
    )
    try:
        supervisor.wait_ready(timeout=60)
        yield f"http://127.0.0.1:{spec.port}"
    finally:
        supervisor.stop_all()
