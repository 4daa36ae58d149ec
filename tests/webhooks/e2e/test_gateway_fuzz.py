"""Arbitrary headers and bodies against a real gateway process over HTTP: never a 5xx, always a
JSON `{"detail"}` (a 202 is empty), and the keep-alive connection survives every answer."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from webhooks.deliveries import INSTANCE, sign_bytes

from support import TEST_WEBHOOK_SECRET, new_svix_id
from support import example as clerk_example

pytestmark = pytest.mark.e2e

SVIX_HEADERS = ("svix-id", "svix-timestamp", "svix-signature")
BODY = json.dumps(clerk_example("user.created")).encode()
OTHER_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="


class KeepAliveClient:
    """One httpx client for every request; remembers which local port each answer came on."""

    def __init__(self, base_url: str) -> None:
        self.ports: list[int] = []
        self.client = httpx.Client(
            base_url=base_url, timeout=30, event_hooks={"response": [self._remember_port]}
        )

    def _remember_port(self, response: httpx.Response) -> None:
        stream = response.extensions["network_stream"]
        self.ports.append(stream.get_extra_info("client_addr")[1])

    def post(self, body: bytes, headers: dict[str, str | bytes]) -> httpx.Response:
        return self.client.post("/webhooks/clerk", content=body, headers=headers)


@pytest.fixture(scope="module")
def client(gateway: str) -> Iterator[KeepAliveClient]:
    keep_alive = KeepAliveClient(gateway)
    try:
        yield keep_alive
    finally:
        keep_alive.client.close()


def check_answer(client: KeepAliveClient, response: httpx.Response) -> None:
    """The contract every answer keeps, whatever was sent."""
    assert response.status_code in {202, 400, 401, 413}, response.text
    if response.status_code == 202:
        assert response.content == b""
    else:
        assert response.headers["content-type"] == "application/json"
        assert isinstance(response.json()["detail"], str)
    # The connection stays open unless the HTTP parser itself refused the request, which it
    # says; the next request on this client proves it (it came on the same local port).
    closing = response.headers.get("connection") == "close"
    ports_before = len(client.ports)
    follow_up = client.client.get("/healthz")
    assert follow_up.status_code == 200
    assert len(client.ports) == ports_before + 1
    if closing:
        assert response.status_code == 400
        assert response.json() == {"detail": "invalid HTTP request"}
    else:
        assert client.ports[-1] == client.ports[-2], "the connection was closed after the answer"


# What httpx can put on the wire as a header value: text must be ASCII; bytes may be anything
# but NUL, CR, LF, VT and FF, and must not start or end with blanks.
ascii_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=40
).map(lambda value: value.strip(" ") or "x")
raw_bytes = st.binary(max_size=40).map(
    lambda value: re.sub(rb"[\x00\n\r\x0b\x0c]", b"", value).strip(b" \t") or b"\xff"
)
base64_text = st.binary(max_size=40).map(lambda value: base64.b64encode(value).decode())
signature_list = st.lists(
    st.builds(
        "{},{}".format,
        st.sampled_from(["v1", "v2", "v1a", "v", ""]),
        base64_text | base64_text.map(lambda value: value.rstrip("=")) | ascii_text,
    ),
    max_size=3,
).map(" ".join)
header_value = st.one_of(
    ascii_text,
    raw_bytes,
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    signature_list,
)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def clerk_like_events(draw: st.DrawFn) -> bytes:
    """An event of the right shape with arbitrary values, or with fields of the wrong type."""
    event: dict[str, Any] = {
        "type": draw(st.sampled_from(["user.created", "user.deleted", "x", ""]) | st.text()),
        "object": draw(st.sampled_from(["event", "event", "user"]) | json_value),
        "data": draw(st.dictionaries(st.sampled_from(["id", "private_metadata"]), json_value)),
        "instance_id": draw(st.sampled_from([INSTANCE, "ins_other"]) | json_value),
        "timestamp": draw(st.integers(-1, 2**70) | json_value),
    }
    return json.dumps(event, allow_nan=True).encode()


@st.composite
def clerk_events(draw: st.DrawFn) -> bytes:
    """Clerk's example events of this instance, with arbitrary extra data (and metadata)."""
    name = draw(st.sampled_from(["user.created", "user.deleted", "paymentAttempt.created"]))
    event = clerk_example(name)
    event["instance_id"] = INSTANCE
    extra = st.dictionaries(st.sampled_from(["x", "private_metadata"]), json_value)
    event["data"].update(draw(extra))
    return json.dumps(event).encode()


bodies = st.one_of(
    clerk_events(),
    clerk_like_events(),
    st.binary(max_size=200),
    st.text(max_size=100).map(str.encode),
    json_value.map(lambda value: json.dumps(value).encode()),
    clerk_like_events(),
)


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[bytes, dict[str, str | bytes]]:
    """A body, signed genuinely, by another secret or not at all, with each Svix header kept,
    dropped or replaced."""
    body = draw(bodies)
    headers: dict[str, str | bytes] = {}
    secret = draw(st.sampled_from([TEST_WEBHOOK_SECRET, TEST_WEBHOOK_SECRET, OTHER_SECRET, None]))
    if secret:
        headers.update(sign_bytes(body, secret, msg_id=new_svix_id()))
    for name in SVIX_HEADERS:
        action = draw(st.sampled_from(["keep", "keep", "keep", "drop", "replace", "replace"]))
        if action == "drop":
            headers.pop(name, None)
        elif action == "replace":
            headers[name] = draw(header_value)
    return body, headers


def genuine(body: bytes, **replace: str | bytes) -> tuple[bytes, dict[str, str | bytes]]:
    headers: dict[str, str | bytes] = {**sign_bytes(body, TEST_WEBHOOK_SECRET, msg_id="msg_1")}
    headers.update({name.replace("_", "-"): value for name, value in replace.items()})
    return body, headers


NOT_UTF8 = b'{"type": "user.created", "data": {"name": "\xff"}}'


@settings(max_examples=200, deadline=None)
@given(delivery=deliveries())
# Each of these answered 500 (and dropped the connection) before the headers were checked.
@example(delivery=genuine(BODY, svix_signature="v1abc"))
@example(delivery=genuine(BODY, svix_signature="v1,a,b"))
@example(delivery=genuine(BODY, svix_signature="v1,abc"))
@example(delivery=genuine(BODY, svix_signature=b"v1,\xff\xff\xff\xff"))
@example(delivery=genuine(BODY, svix_signature="v1,AAAA  v1,AAAA"))
@example(delivery=genuine(NOT_UTF8))
@example(delivery=(NOT_UTF8, {}))
# These were refused as a bad signature, or accepted, though Svix never sends them.
@example(delivery=genuine(BODY, svix_timestamp="9" * 400))
@example(delivery=genuine(BODY, svix_timestamp=b"\xff"))
@example(delivery=genuine(BODY, svix_id=b"msg_\xe9"))
def test_any_delivery_gets_a_json_4xx_or_202_on_a_connection_that_stays_open(
    client: KeepAliveClient, delivery: tuple[bytes, dict[str, str | bytes]]
) -> None:
    body, headers = delivery
    response = client.post(body, headers)
    event(f"{response.status_code} {response.text[:30]} {response.headers.get('connection', '')}")
    check_answer(client, response)


@pytest.mark.parametrize(
    ("replace", "detail"),
    [
        ({"svix_signature": "v1abc"}, "malformed svix-signature"),
        ({"svix_signature": "v1,abc"}, "malformed svix-signature"),
        ({"svix_signature": b"v1,\xff\xff\xff\xff"}, "malformed svix-signature"),
        ({"svix_timestamp": "9" * 400}, "malformed svix-timestamp"),
        ({"svix_timestamp": "1e3"}, "malformed svix-timestamp"),
        ({"svix_id": b"msg_\xe9"}, "malformed svix-id"),
    ],
)
def test_a_malformed_svix_header_answers_400_naming_it(
    client: KeepAliveClient, replace: dict[str, str | bytes], detail: str
) -> None:
    body, headers = genuine(BODY, **replace)
    response = client.post(body, headers)
    assert response.status_code == 400
    assert detail in response.json()["detail"]
    check_answer(client, response)


def test_a_genuinely_signed_body_that_is_not_utf8_answers_400(client: KeepAliveClient) -> None:
    body, headers = genuine(NOT_UTF8)
    response = client.post(body, headers)
    assert (response.status_code, response.json()) == (400, {"detail": "the body is not UTF-8"})
    check_answer(client, response)


def test_a_malformed_header_is_refused_before_the_signature_is_checked(
    client: KeepAliveClient,
) -> None:
    """A signature by an unknown secret over a well-formed delivery is 401; the same with a
    malformed timestamp is 400: the shape is decided first."""
    stale = datetime.now(UTC) - timedelta(hours=1)
    headers: dict[str, str | bytes] = {**sign_bytes(BODY, OTHER_SECRET, msg_id="m", at=stale)}
    assert client.post(BODY, headers).status_code == 401
    response = client.post(BODY, {**headers, "svix-timestamp": "yesterday"})
    assert response.status_code == 400
