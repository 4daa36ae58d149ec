"""An API over a sick database: it answers 503 with Retry-After within MONGODB_TIMEOUT_SECONDS
(plus a margin) instead of a 500 or a hang, /readyz says so just as fast, every 503 is counted
in /metrics, and it recovers on its own once the database answers again.

The sickness is real: the API reaches the backend's MongoDB through a TCP proxy that is switched
to refuse connections (a database that is down) or to swallow them (one that accepts and never
answers)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tcpproxy import TcpProxy, through_proxy

from conftest import Backend, service_env
from siteview_devstack.broker import free_port
from siteview_devstack.processes import ProcessSpec, Supervisor
from support import KeyPair, eventually, new_user_id

pytestmark = pytest.mark.e2e

TIMEOUT_SECONDS = 1.0
#: Generous: the bound is the setting; this only tells "answered" from "hung".
CLIENT_TIMEOUT = 4 * TIMEOUT_SECONDS


@dataclass
class SickApi:
    url: str
    proxy: TcpProxy
    token: str

    def me(self) -> httpx.Response:
        return httpx.get(
            f"{self.url}/users/me",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=CLIENT_TIMEOUT,
        )

    def ready(self) -> httpx.Response:
        return httpx.get(f"{self.url}/readyz", timeout=CLIENT_TIMEOUT)

    def served_503s(self) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=CLIENT_TIMEOUT).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "siteview_http_requests"
            for sample in family.samples
            if sample.name == "siteview_http_requests_total"
            and sample.labels == {"handler": "/users/me", "method": "GET", "status": "503"}
        )

    def healthy(self) -> bool:
        """The database answers again: a real answer (the user is unknown) and ready."""
        try:
            me, ready = self.me(), self.ready()
        except httpx.TimeoutException:
            return False
        return me.status_code == 404 and ready.status_code == 200


@pytest.fixture
def sick_api(backend: Backend, signing_key: KeyPair, run_id: str) -> Iterator[SickApi]:
    proxy_port = free_port()
    url, host, port = through_proxy(backend.mongo, proxy_port)
    env = service_env(backend, signing_key, run_id)
    env.update(MONGODB_URL=url, MONGODB_TIMEOUT_SECONDS=str(TIMEOUT_SECONDS))
    supervisor = Supervisor(env, echo=False)
    spec = ProcessSpec("users-api-sick-db", "siteview_users", ("api",), free_port())
    with TcpProxy(host, port, port=proxy_port) as proxy:
        supervisor.start(spec, {"MONGODB_DATABASE": f"outage_{uuid.uuid4().hex[:8]}"})
        try:
            supervisor.wait_ready(timeout=60)
            api = SickApi(f"http://127.0.0.1:{spec.port}", proxy, signing_key.token(new_user_id()))
            assert api.healthy()
            yield api
        finally:
            supervisor.stop_all()


def assert_unavailable(api: SickApi) -> None:
    response = api.me()  # raises ReadTimeout if the API waits for the database unbounded
    assert response.status_code == 503, response.text
    assert response.json() == {"detail": "database unavailable"}
    assert int(response.headers["Retry-After"]) > 0
    ready = api.ready()
    assert ready.status_code == 503, ready.text
    assert ready.json() == {"status": "unavailable", "checks": {"database": False}}


@pytest.mark.parametrize("sickness", ["black_hole", "refuse"])
def test_a_sick_database_answers_503_in_bounded_time_and_the_api_recovers(
    sick_api: SickApi, sickness: str
) -> None:
    counted = sick_api.served_503s()
    getattr(sick_api.proxy, sickness)()
    for _ in range(3):  # pooled connections first, then new ones, then server selection
        assert_unavailable(sick_api)
    assert sick_api.served_503s() == counted + 3

    sick_api.proxy.forward()
    eventually(sick_api.healthy, timeout=30, interval=0.2)
