"""The fault-injection scenarios record what they injected, observed and counted: `record`
hands a test its `Scenario`, which is saved to `.data/faults/<backend>.json` when the test
ends, with its outcome, for `make test-faults` to render RELIABILITY.md from."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Generator, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from faults.kit import System
from faults.reliability import Record, Scenario, save
from tcpproxy import TcpProxy, through_proxy

from conftest import Backend, service_env
from siteview_devstack.broker import TansuBroker, free_port
from siteview_devstack.processes import ProcessSpec, Supervisor
from support import (
    ExtraWorker,
    KeyPair,
)

#: How long the gateway waits for the broker's ack before answering 503.
PUBLISH_TIMEOUT_SECONDS = 2
#: The longest back-off between redeliveries of a batch that failed (10 s by default).
WORKER_RETRY_MAX_SECONDS = 2

#: How the test's call phase ended (passed, failed), for its scenarios' records.
OUTCOME = pytest.StashKey[str]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[OUTCOME] = report.outcome
    return report


@pytest.fixture
def record(request: pytest.FixtureRequest, backend: Backend) -> Iterator[Record]:
    """`record(key, title)`: the scenario this test fills in; saved as the test ends."""
    started = time.monotonic()
    scenarios: list[Scenario] = []

    def begin(key: str, title: str) -> Scenario:
        scenario = Scenario(key, title)
        scenarios.append(scenario)
        return scenario

    yield begin
    for scenario in scenarios:
        scenario.seconds = round(time.monotonic() - started, 1)
        scenario.outcome = request.node.stash.get(OUTCOME, "failed")
        save(backend.name, scenario)


# --- a system of the scenarios' own: a broker behind a fault proxy, a gateway, a worker ------


@pytest.fixture(scope="session")
def system(backend: Backend, signing_key: KeyPair, run_id: str) -> Iterator[System]:
    broker_port, proxy_port, mongo_port = free_port(), free_port(), free_port()
    with ExitStack() as stack:
        broker_proxy = TcpProxy("127.0.0.1", broker_port, port=proxy_port).start()
        stack.callback(broker_proxy.stop)
        broker: Any
        if backend.name == "engines":
            from siteview_devstack.engines import KafkaServer

            data = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="faults-kafka-")))
            broker = KafkaServer(data_dir=data, port=broker_port, advertised_port=proxy_port)
        else:
            broker = TansuBroker(port=broker_port, advertised_port=proxy_port)
        stack.callback(broker.stop)
        broker.start()
        mongo_url, mongo_host, mongo_upstream_port = through_proxy(backend.mongo, mongo_port)
        mongo_proxy = TcpProxy(mongo_host, mongo_upstream_port, port=mongo_port).start()
        stack.callback(mongo_proxy.stop)

        env = service_env(backend, signing_key, run_id)
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
            PUBLISH_TIMEOUT_SECONDS=str(PUBLISH_TIMEOUT_SECONDS),
            WORKER_RETRY_MAX_SECONDS=str(WORKER_RETRY_MAX_SECONDS),
        )
        supervisor = Supervisor(env, echo=False)
        stack.callback(supervisor.stop_all)
        spec = ProcessSpec("gateway-faults", "siteview_webhooks", (), free_port())
        supervisor.start(spec)
        database = f"faults_{run_id}"
        worker_env = {**env, "MONGODB_URL": mongo_url}
        worker = stack.enter_context(ExtraWorker(worker_env, "users", database))
        worker.start()
        supervisor.wait_ready(timeout=90)
        built = System(
            backend,
            broker,
            broker_proxy,
            mongo_proxy,
            f"http://127.0.0.1:{spec.port}",
            worker,
            worker_env,
            database,
        )
        built.warm_up()
        yield built
