"""The HTTP server every process runs (uvicorn, uvloop, httptools): what its parser refuses is a
JSON `{"detail"}` too, and a request's line and header fields are bounded to 64 KiB."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import httpx
import pytest

from conftest import Stack

pytestmark = pytest.mark.e2e


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def exchange(url: str, *chunks: bytes) -> bytes:
    """Send raw bytes on one connection (each chunk once the previous one is written), then
    read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port_of(url)), timeout=30) as sock:
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before all of it was read: its answer is still there to read
        received = b""
        while data := sock.recv(65536):
            received += data
        return received


def answers(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The responses in `raw`, each as status, headers and body (by its Content-Length)."""
    found = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines)
        length = int(headers["content-length"])
        found.append((int(status_line.split(" ")[1]), headers, rest[:length]))
        raw = rest[length:]
    return found


MALFORMED = {
    "not HTTP": b"GARBAGE\r\n\r\n",
    "a header line without a colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nNo colon\r\n\r\n",
    "a control byte in a header value": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n",
    "a byte that is not ASCII in the path": b"GET /health\xffz HTTP/1.1\r\nHost: x\r\n\r\n",
    "a Content-Length that is not a number": (
        b"POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\n"
    ),
    "two different Content-Lengths": (
        b"POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
        b"Content-Length: 2\r\n\r\nab"
    ),
}


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_request_the_parser_refuses_answers_a_json_400_and_closes(
    gateway: str, request_bytes: bytes
) -> None:
    [(status, headers, body)] = answers(exchange(gateway, request_bytes))
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert json.loads(body) == {"detail": "invalid HTTP request"}


@pytest.mark.parametrize("size", [100 * 1024, 1024 * 1024], ids=["100 KiB", "1 MiB"])
def test_a_header_over_64_kib_answers_a_json_431(gateway: str, size: int) -> None:
    response = httpx.get(f"{gateway}/healthz", headers={"x-big": "a" * size}, timeout=30)
    assert response.status_code == 431
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": "request headers too large"}


def test_many_small_headers_over_64_kib_answer_a_json_431(gateway: str) -> None:
    headers = [(f"x-h{i}", "v" * 30) for i in range(2000)]  # about 80 KiB
    response = httpx.get(f"{gateway}/healthz", headers=headers, timeout=30)
    assert (response.status_code, response.json()) == (431, {"detail": "request headers too large"})


def test_a_header_arriving_slowly_past_64_kib_is_refused_while_it_arrives(gateway: str) -> None:
    """The header never ends: the answer comes once 64 KiB of it arrived, not at its end."""
    with socket.create_connection(("127.0.0.1", port_of(gateway)), timeout=30) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        for _ in range(20):  # up to 160 KiB, never the end of the header line
            try:
                sock.sendall(b"a" * 8192)
            except (BrokenPipeError, ConnectionResetError):
                break
        received = b""
        while data := sock.recv(65536):
            received += data
    [(status, _, body)] = answers(received)
    assert (status, json.loads(body)) == (431, {"detail": "request headers too large"})


def test_headers_just_under_the_bound_are_served(gateway: str) -> None:
    response = httpx.get(f"{gateway}/healthz", headers={"x-big": "a" * 60 * 1024}, timeout=30)
    assert response.status_code == 200


def test_large_bodies_of_pipelined_requests_do_not_count_as_headers(gateway: str) -> None:
    """Three requests on one connection, the first two with 300 KiB bodies, sent back to back
    (the third in two parts): each is answered by the application, none is refused as 431."""
    body = b"{" + b" " * (300 * 1024) + b"}"
    post = (
        b"POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    last = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    responses = answers(exchange(gateway, post + post + last[:20], last[20:]))
    assert [status for status, _, _ in responses] == [400, 400, 200]
    assert json.loads(responses[0][2])["detail"].startswith("missing header(s)")


def test_every_process_answers_what_its_parser_refuses_as_json(stack: Stack) -> None:
    """The gateway, the APIs and the workers' health servers all run the same server."""
    for name, url in stack.urls.items():
        [(status, headers, body)] = answers(exchange(url, MALFORMED["not HTTP"]))
        assert (status, headers["content-type"]) == (400, "application/json"), name
        assert json.loads(body) == {"detail": "invalid HTTP request"}, name
        big = httpx.get(f"{url}/healthz", headers={"x-big": "a" * 1024 * 1024}, timeout=30)
        assert (big.status_code, big.json()) == (431, {"detail": "request headers too large"})
