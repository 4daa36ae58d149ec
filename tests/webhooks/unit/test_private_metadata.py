"""What the gateway publishes never holds `private_metadata`, however the body spells the key."""

from __future__ import annotations

import json

import pytest

from siteview_webhooks.handlers import parse_event, without_private_metadata
from support import example


def published_data(body: bytes) -> dict[str, object]:
    event = without_private_metadata(parse_event(body), body)
    data: dict[str, object] = event.model_dump(mode="json")["data"]
    return data


@pytest.mark.parametrize(
    "spelling",
    [
        pytest.param("private_metadata", id="plain"),
        pytest.param("private\\u005fmetadata", id="escaped-underscore"),
        pytest.param("\\u0070rivate_metadata", id="escaped-first-letter"),
    ],
)
def test_private_metadata_is_dropped_however_the_key_is_spelled(spelling: str) -> None:
    event = example("user.created")
    event["data"].pop("private_metadata", None)
    text = json.dumps(event)
    body = text.replace('"data": {', f'"data": {{"{spelling}": {{"secret": "s3cr3t"}}, ', 1)
    data = published_data(body.encode())
    assert "private_metadata" not in data
    assert "s3cr3t" not in json.dumps(data)
    assert data["id"] == event["data"]["id"]


def test_a_body_without_the_key_is_published_as_it_came() -> None:
    event = example("paymentAttempt.updated")
    body = json.dumps(event).encode()
    assert published_data(body) == event["data"]
