"""The HTTP shell, served by a real uvicorn: every response is counted by route and status
(500s from unhandled exceptions and 503s included), a database that is unavailable answers 503
with Retry-After, readiness checks are bounded, and a cursor that is not ours answers 400."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from prometheus_client.parser import text_string_to_metric_families
from pymongo.errors import (
    AutoReconnect,
    ExecutionTimeout,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from siteview_common.deps import Cursors, Pagination
from siteview_common.pagination import CursorCodec, Position
from siteview_common.settings import CommonSettings
from siteview_common.webapp import ReadinessCheck, create_app
from support import served

router = APIRouter()


@router.get("/boom")
async def boom() -> None:
    raise RuntimeError("secret internals: mongodb://admin:hunter2@db")


@router.get("/db/{kind}")
async def database_error(kind: str) -> None:
    errors: dict[str, Exception] = {
        "selection": ServerSelectionTimeoutError("no server"),
        "network-timeout": NetworkTimeout("timed out"),
        "reconnect": AutoReconnect("connection reset"),
        "execution-timeout": ExecutionTimeout("operation exceeded time limit", 50),
        "bad-query": OperationFailure("unknown operator: $bogus", 2),
    }
    raise errors[kind]


@router.get("/items")
async def items(params: Pagination, codec: Cursors) -> dict[str, Any]:
    position = codec.decode("items", params.cursor) if params.cursor else None
    return {"after": None if position is None else position.key}


CODEC = CursorCodec("test-secret")


def build_app(checks: Mapping[str, ReadinessCheck] | None = None, **options: Any) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.cursor_codec = CODEC
        yield

    return create_app(
        title="shell-under-test",
        settings=CommonSettings(),
        lifespan=lifespan,
        checks=checks or {},
        routers=[router],
        **options,
    )


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with served(build_app()) as base:
        yield base


def requests_counted(base: str, handler: str, status: str, method: str = "GET") -> float:
    text = httpx.get(f"{base}/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "siteview_http_requests_total"
        and sample.labels == {"handler": handler, "method": method, "status": status}
    )


def latency_observed(base: str, handler: str) -> float:
    text = httpx.get(f"{base}/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "siteview_http_request_duration_seconds_count"
        and sample.labels == {"handler": handler, "method": "GET"}
    )


def test_an_unhandled_exception_is_a_counted_500_that_leaks_nothing(url: str) -> None:
    before = requests_counted(url, "/boom", "500")
    observed = latency_observed(url, "/boom")
    response = httpx.get(f"{url}/boom")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error"}
    assert "hunter2" not in response.text
    assert requests_counted(url, "/boom", "500") == before + 1
    assert latency_observed(url, "/boom") == observed + 1


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One HTTP/1.1 response (Content-Length framed) from `sock`: its status and body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection (read so far: {data!r})"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    length = next(
        int(v) for k, _, v in (h.partition(":") for h in lines[1:]) if k.lower() == "content-length"
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection mid-body"
        body += chunk
    return int(lines[0].split()[1]), body


def test_a_500_keeps_the_clients_connection_open(url: str) -> None:
    """The client's next request goes over the same connection, as after any other answer."""
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for path, status in (("/boom", 500), ("/healthz", 200), ("/boom", 500), ("/healthz", 200)):
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
            assert read_response(sock)[0] == status, path


def test_responses_are_counted_by_route_template_and_exact_status(url: str) -> None:
    before = {
        ("/items", "200"): requests_counted(url, "/items", "200"),
        ("/items", "400"): requests_counted(url, "/items", "400"),
        ("/items", "422"): requests_counted(url, "/items", "422"),
        ("none", "404"): requests_counted(url, "none", "404"),
    }
    assert httpx.get(f"{url}/items").status_code == 200
    assert httpx.get(f"{url}/items", params={"cursor": "x"}).status_code == 400
    assert httpx.get(f"{url}/items", params={"numItems": 0}).status_code == 422
    assert httpx.get(f"{url}/no/such/{time.monotonic_ns()}").status_code == 404
    for (handler, status), count in before.items():
        assert requests_counted(url, handler, status) == count + 1, (handler, status)


@pytest.mark.parametrize("kind", ["selection", "network-timeout", "reconnect", "execution-timeout"])
def test_an_unavailable_database_answers_a_counted_503_with_retry_after(
    url: str, kind: str
) -> None:
    before = requests_counted(url, "/db/{kind}", "503")
    response = httpx.get(f"{url}/db/{kind}")
    assert response.status_code == 503
    assert response.json() == {"detail": "database unavailable"}
    assert int(response.headers["Retry-After"]) > 0
    assert requests_counted(url, "/db/{kind}", "503") == before + 1


def test_any_other_database_error_is_an_internal_error(url: str) -> None:
    before = requests_counted(url, "/db/{kind}", "500")
    response = httpx.get(f"{url}/db/bad-query")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error"}
    assert requests_counted(url, "/db/{kind}", "500") == before + 1


@pytest.mark.parametrize(
    "cursor",
    [
        "A" * 10_000,
        CODEC.encode("items", Position(1, "a")) + "A" * 600,
        CODEC.encode("another list", Position(1, "a")),
        "not a cursor",
    ],
)
def test_a_cursor_that_is_not_ours_answers_400_whatever_its_length(url: str, cursor: str) -> None:
    response = httpx.get(f"{url}/items", params={"cursor": cursor})
    assert response.status_code == 400
    assert response.json() == {"detail": "invalid cursor"}


def test_an_empty_cursor_is_the_first_page_and_ours_is_followed(url: str) -> None:
    assert httpx.get(f"{url}/items", params={"cursor": ""}).json() == {"after": None}
    cursor = CODEC.encode("items", Position(42, "a"))
    assert httpx.get(f"{url}/items", params={"cursor": cursor}).json() == {"after": 42}


def test_readiness_checks_are_bounded_and_a_failing_check_is_not_ready() -> None:
    async def hangs() -> bool:
        await asyncio.Event().wait()
        return True

    async def raises() -> bool:
        raise ConnectionError("refused")

    async def answers() -> bool:
        return True

    with served(build_app({"ok": answers}, check_timeout=0.2)) as base:
        ready = httpx.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 200
        assert ready.json() == {"status": "ok", "checks": {"ok": True}}
    checks = {"hung": hangs, "broken": raises, "ok": answers}
    with served(build_app(checks, check_timeout=0.2)) as base:
        ready = httpx.get(f"{base}/readyz", timeout=10)  # a hung check used to hang this
        assert ready.status_code == 503
        assert ready.json() == {
            "status": "unavailable",
            "checks": {"hung": False, "broken": False, "ok": True},
        }
