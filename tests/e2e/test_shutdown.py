"""Stopping processes under load, as an orchestrator does.

A users worker is stopped mid-stream while deliveries keep flowing through the gateway: first
with SIGTERM (a rollout or a scale-in), which must stop fetching, apply and commit the batch in
flight, leave the group and exit cleanly within the grace period; then with SIGKILL (an OOM
kill, a lost node), after which the group redelivers what it had fetched but not committed.
Either way it is restarted, and every acknowledged (202) delivery is applied exactly once in
effect: each Svix id once in the ledger, every user on its newest version.

The worker joins the stack's `users-service` group and writes the stack's users database (the
group and database a scaled-out worker shares), as in test_rebalance.py: the stack's worker
keeps the other partitions and takes the stopped worker's over.

An API stopped with SIGTERM while a slow request is in flight (the database behind it
black-holed, so the request answers 503 only after MONGODB_TIMEOUT_SECONDS) still sends that
response rather than resetting the connection.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import httpx
import pytest
from e2e.test_database_outage import through_proxy
from tcpproxy import TcpProxy

from conftest import Backend, Stack, service_env
from siteview_common.events import Topics
from siteview_common.runtime import WORKER_GRACEFUL_SECONDS
from siteview_devstack.broker import free_port
from siteview_devstack.processes import ProcessSpec, Supervisor
from support import (
    ExtraWorker,
    KeyPair,
    SteadyLoad,
    UserVersions,
    assert_all_applied,
    deliver_all,
    eventually,
    metric_value,
    new_user_id,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

#: uvicorn's graceful shutdown of HTTP connections (serve.py), then the broker's.
GRACE_SECONDS = 10 + WORKER_GRACEFUL_SECONDS
#: uvicorn shuts down cleanly, then re-raises the signal: -SIGTERM is a clean exit too.
CLEAN_EXITS = (0, -signal.SIGTERM)


def applied(worker_url: str) -> float:
    return metric_value(
        worker_url,
        "siteview_events_total",
        group="users-service",
        topic=Topics.USERS,
        outcome="applied",
    )


def applied_any(worker_url: str) -> bool:
    return applied(worker_url) > 0


def test_workers_stopped_mid_stream_by_sigterm_and_by_sigkill_lose_nothing_and_apply_nothing_twice(
    stack: Stack, backend: Backend, signing_key: KeyPair, run_id: str
) -> None:
    database = stack.databases["users"]
    flow = UserVersions(users=30)
    load = SteadyLoad(stack.gateway, flow)
    env = service_env(backend, signing_key, run_id)
    with (
        ExtraWorker(env, "users", database) as termed,
        ExtraWorker(env, "users", database) as killed,
    ):
        with ThreadPoolExecutor(max_workers=2) as pool:  # both join the group, in parallel
            list(pool.map(lambda worker: worker.start(), (termed, killed)))
        try:
            load.start()
            for url in (termed.url, killed.url):  # each holds partitions and applies events
                eventually(partial(applied_any, url), timeout=120)

            # SIGTERM mid-stream: a clean exit, without the SIGKILL that would follow the
            # grace period, after saying it finished its batch and left the group.
            exit_code = termed.stop(timeout=GRACE_SECONDS)
            output = termed.output(80)
            assert exit_code in CLEAN_EXITS, output
            assert "worker stopping: finishing the batch in flight" in output, output
            assert "worker stopped: consumer group left" in output, output
            assert "Application shutdown complete." in output, output
            rounds = load.rounds
            eventually(lambda: load.rounds > rounds, timeout=120)  # deliveries flow meanwhile

            # SIGKILL mid-stream: no shutdown at all; what it fetched is not committed, and
            # its partitions are orphaned until the group drops it. Deliveries are still
            # acknowledged meanwhile.
            assert killed.kill() == -signal.SIGKILL
            rounds = load.rounds
            eventually(lambda: load.rounds > rounds, timeout=120)
        finally:
            load.stop()

        # Restarted, it rejoins; the group redelivers from the last committed offsets.
        killed.start()
        deliver_all(stack.gateway, flow.next_round())
        assert_all_applied(backend.mongo, database, flow)
        assert applied(killed.url) > 0


MONGODB_TIMEOUT_SECONDS = 3.0


def test_an_api_stopped_by_sigterm_answers_the_request_in_flight(
    backend: Backend, signing_key: KeyPair, run_id: str
) -> None:
    proxy_port = free_port()
    url, host, port = through_proxy(backend.mongo, proxy_port)
    env = service_env(backend, signing_key, run_id)
    env.update(MONGODB_URL=url, MONGODB_TIMEOUT_SECONDS=str(MONGODB_TIMEOUT_SECONDS))
    supervisor = Supervisor(env, echo=False)
    spec = ProcessSpec("users-api-draining", "siteview_users", ("api",), free_port())
    base = f"http://127.0.0.1:{spec.port}"
    headers = {"Authorization": f"Bearer {signing_key.token(new_user_id())}"}
    with TcpProxy(host, port, port=proxy_port) as proxy:
        api = supervisor.start(spec, {"MONGODB_DATABASE": f"drain_{uuid.uuid4().hex[:8]}"})
        try:
            supervisor.wait_ready(timeout=60)
            with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
                # The connection is open and the database answers: an unknown user is a 404.
                assert client.get("/users/me").status_code == 404

                # The database stops answering: this request now waits MONGODB_TIMEOUT_SECONDS.
                proxy.black_hole()
                answers: list[httpx.Response | BaseException] = []

                def slow_request() -> None:
                    try:
                        answers.append(client.get("/users/me"))
                    except BaseException as exc:
                        answers.append(exc)

                request = threading.Thread(target=slow_request)
                request.start()
                # A head start well inside the database timeout, so the request is being served
                # when the signal arrives (not a timing assertion: nothing is measured).
                time.sleep(MONGODB_TIMEOUT_SECONDS / 3)
                assert not answers, answers
                supervisor.stop(spec.name, timeout=30)
                request.join(timeout=30)

            [answer] = answers
            assert isinstance(answer, httpx.Response), repr(answer)
            assert answer.status_code == 503, answer.text
            assert answer.json() == {"detail": "database unavailable"}
            output = "\n".join(api.lines[-40:])
            assert api.popen.returncode in CLEAN_EXITS, output
            assert "Application shutdown complete." in output, output
        finally:
            supervisor.stop_all()
