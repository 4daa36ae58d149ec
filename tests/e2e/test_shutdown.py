"""Stopping an API as an orchestrator does: SIGTERM while a slow request is in flight (the
database behind it black-holed, so the request answers 503 only after
MONGODB_TIMEOUT_SECONDS) still sends that response rather than resetting the connection.

Workers stopped mid-stream by SIGTERM and by SIGKILL are proven in test_rebalance.py: a worker
joins under load, is killed and restarted, then leaves cleanly, and every acknowledged
delivery applies exactly once in effect.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid

import httpx
import pytest
from tcpproxy import TcpProxy, through_proxy

from conftest import Backend, service_env
from siteview_devstack.broker import free_port
from siteview_devstack.processes import ProcessSpec, Supervisor
from support import (
    KeyPair,
    new_user_id,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

#: uvicorn shuts down cleanly, then re-raises the signal: -SIGTERM is a clean exit too.
CLEAN_EXITS = (0, -signal.SIGTERM)


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
