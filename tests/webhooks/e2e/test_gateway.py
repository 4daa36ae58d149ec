"""Every status code of the gateway, over real HTTP."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from webhooks.deliveries import INSTANCE

from conftest import Backend, broker_of_its_own, service_env
from siteview_common.events import HEADER_EVENT_ID
from siteview_devstack.broker import free_port
from siteview_devstack.processes import ProcessSpec, Supervisor
from siteview_devstack.signing import sign
from support import (
    OLD_WEBHOOK_SECRET,
    TEST_WEBHOOK_SECRET,
    Gateway,
    KeyPair,
    eventually,
    example,
    new_svix_id,
)

pytestmark = pytest.mark.e2e


def post(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{url}/webhooks/clerk", content=body, headers=headers, timeout=30)


BODY = json.dumps(example("user.created")).encode()


@pytest.mark.parametrize("secret", [TEST_WEBHOOK_SECRET, OLD_WEBHOOK_SECRET])
def test_202_for_a_delivery_signed_by_any_configured_secret(gateway: str, secret: str) -> None:
    response = post(gateway, BODY, sign(BODY, secret))
    assert response.status_code == 202


@pytest.mark.parametrize("missing", ["svix-id", "svix-timestamp", "svix-signature"])
def test_400_for_missing_svix_headers(gateway: str, missing: str) -> None:
    headers = sign(BODY, TEST_WEBHOOK_SECRET)
    del headers[missing]
    response = post(gateway, BODY, headers)
    assert response.status_code == 400
    assert missing in response.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"type": "user.created"}',
        b'{"type": "x", "data": {}, "object": "user"}',
    ],
)
def test_400_for_a_genuine_signature_over_something_that_is_not_a_clerk_event(
    gateway: str, body: bytes
) -> None:
    response = post(gateway, body, sign(body, TEST_WEBHOOK_SECRET))
    assert response.status_code == 400
    assert response.json() == {"detail": "the body is not a Clerk event"}


def test_401_for_a_bad_signature(gateway: str) -> None:
    headers = sign(BODY, "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=")
    response = post(gateway, BODY, headers)
    assert response.status_code == 401
    assert response.json() == {"detail": "invalid signature"}


def test_401_for_a_tampered_body(gateway: str) -> None:
    headers = sign(BODY, TEST_WEBHOOK_SECRET)
    assert post(gateway, BODY.replace(b"Ada", b"Eve"), headers).status_code == 401


@pytest.mark.parametrize("skew", [timedelta(minutes=-6), timedelta(minutes=6)])
def test_401_for_a_timestamp_outside_the_tolerance(gateway: str, skew: timedelta) -> None:
    headers = sign(BODY, TEST_WEBHOOK_SECRET, at=datetime.now(UTC) + skew)
    assert post(gateway, BODY, headers).status_code == 401


def test_401_for_an_event_of_another_clerk_instance(gateway: str) -> None:
    event = example("user.created")
    event["instance_id"] = "ins_someone_else"
    body = json.dumps(event).encode()
    response = post(gateway, body, sign(body, TEST_WEBHOOK_SECRET))
    assert response.status_code == 401


def test_413_for_a_body_over_one_mebibyte(gateway: str) -> None:
    event = example("user.created")
    event["data"]["unsafe_metadata"] = {"blob": "x" * (1024 * 1024)}
    body = json.dumps(event).encode()
    assert post(gateway, body, sign(body, TEST_WEBHOOK_SECRET)).status_code == 413
    # the same without a Content-Length: the limit holds while streaming
    chunks = iter([body[i : i + 65536] for i in range(0, len(body), 65536)])
    response = httpx.post(
        f"{gateway}/webhooks/clerk",
        content=chunks,
        headers=sign(body, TEST_WEBHOOK_SECRET),
        timeout=30,
    )
    assert response.status_code == 413


def test_unknown_event_types_are_accepted_never_dropped(gateway: str) -> None:
    body = json.dumps(
        {
            "type": "waitlistEntry.created",
            "object": "event",
            "data": {"id": "w"},
            "instance_id": INSTANCE,
            "timestamp": 1,
        }
    ).encode()
    assert post(gateway, body, sign(body, TEST_WEBHOOK_SECRET)).status_code == 202


def test_health_readiness_metrics_and_openapi(gateway: str) -> None:
    assert httpx.get(f"{gateway}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway}/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"broker": True}
    assert "siteview_http_requests_total" in httpx.get(f"{gateway}/metrics").text
    paths = httpx.get(f"{gateway}/openapi.json").json()["paths"]
    assert set(paths["/webhooks/clerk"]["post"]["responses"]) >= {"202", "400", "401", "413", "503"}


def test_503_when_the_broker_does_not_ack_and_nothing_is_lost(
    backend: Backend, signing_key: KeyPair, run_id: str
) -> None:
    """A gateway on a broker of its own; the broker dies; deliveries get 503 so Clerk retries."""
    with broker_of_its_own(backend) as (broker, broker_env):
        env = service_env(backend, signing_key, run_id)
        env.update(broker_env, PUBLISH_TIMEOUT_SECONDS="2")
        supervisor = Supervisor(env, echo=False)
        spec = ProcessSpec("gateway-503", "siteview_webhooks", (), free_port())
        supervisor.start(spec)
        url = f"http://127.0.0.1:{spec.port}"
        try:
            supervisor.wait_ready(timeout=60)
            gateway = Gateway(url)
            # A fresh broker may take longer than the publish timeout to take its first write
            # (creating the topic's partitions): the same delivery retried, as Clerk would.
            first = new_svix_id()
            eventually(
                lambda: gateway.deliver(example("user.created"), svix_id=first).status_code == 202,
                timeout=30,
            )
            broker.stop()
            response = gateway.deliver(example("user.created"), svix_id=new_svix_id())
            assert response.status_code == 503
            assert response.json() == {"detail": "event not accepted, retry later"}
            assert httpx.get(f"{url}/readyz", timeout=10).status_code == 503
        finally:
            supervisor.stop_all()


async def published_value(kafka: str, topic: str, svix_id: str) -> dict[str, Any]:
    """The value the gateway published for `svix_id` (read from the start by a group of its own)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka,
        group_id=f"gateway-test-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            while True:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        if dict(record.headers).get(HEADER_EVENT_ID) == svix_id.encode():
                            value: dict[str, Any] = json.loads(record.value)
                            return value
    finally:
        await consumer.stop()


async def test_private_metadata_is_never_published_and_the_rest_is_kept(
    gateway: str, backend: Backend
) -> None:
    secret_everywhere = {"private_metadata": {"ssn": "x"}}
    event = {
        "type": "waitlistEntry.created",
        "object": "event",
        "data": {
            "id": "w",
            "private_metadata": {"ssn": "x"},
            "public_metadata": {"plan": "pro", "nested": [secret_everywhere, {"keep": None}]},
        },
        "instance_id": INSTANCE,
        "timestamp": 1,
        "event_attributes": {"http_request": {"client_ip": "1.2.3.4"}, **secret_everywhere},
        **secret_everywhere,
    }
    svix_id = new_svix_id()
    body = json.dumps(event).encode()
    headers = sign(body, TEST_WEBHOOK_SECRET, msg_id=svix_id)
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(f"{gateway}/webhooks/clerk", content=body, headers=headers)
    assert response.status_code == 202
    value = await published_value(backend.kafka, "clerk.other.v1", svix_id)
    assert value["svixId"] == svix_id
    assert value["event"] == {
        "type": "waitlistEntry.created",
        "object": "event",
        "data": {"id": "w", "public_metadata": {"plan": "pro", "nested": [{}, {"keep": None}]}},
        "instance_id": INSTANCE,
        "timestamp": 1,
        "event_attributes": {"http_request": {"client_ip": "1.2.3.4"}},
    }
