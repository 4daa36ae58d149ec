"""Accept one verified Clerk delivery: parse, check the instance, route, publish."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from pydantic import ValidationError

from siteview_common.events import (
    HEADER_EVENT_ID,
    HEADER_EVENT_TYPE,
    ClerkEvent,
    PublishedEvent,
    Route,
    route,
    strip_private_metadata,
)
from siteview_webhooks.verification import SignatureVerifier


class NotAClerkEventError(ValueError):
    pass


class ForeignInstanceError(ValueError):
    pass


class PublishTimeoutError(RuntimeError):
    pass


class Publisher(Protocol):
    async def publish(self, route: Route, value: bytes, headers: Mapping[str, str]) -> None:
        """Return once the broker acknowledged the write; raise `PublishTimeoutError` if not."""


@dataclass(frozen=True, slots=True)
class Accepted:
    svix_id: str
    event_type: str
    topic: str


def parse_event(body: bytes) -> ClerkEvent:
    try:
        event = ClerkEvent.model_validate_json(body)
    except ValidationError as exc:
        raise NotAClerkEventError("the body is not a Clerk event") from exc
    if event.object != "event":
        raise NotAClerkEventError("the body is not a Clerk event")
    return event


def may_hold_private_metadata(body: bytes) -> bool:
    """Whether the raw JSON can name a `private_metadata` key: spelled out, or hidden behind a
    `\\u` escape (a JSON key may escape any of its characters)."""
    return b"private_metadata" in body or b"\\u" in body


def without_private_metadata(event: ClerkEvent, body: bytes) -> ClerkEvent:
    """`event` without any `private_metadata`, at any depth (in `data` or in an extra field),
    built from the already validated values: the body is parsed once. A body that cannot
    name the key (billing events, sessions, ...: only user objects carry it) is not walked."""
    if not may_hold_private_metadata(body):
        return event
    return ClerkEvent.model_construct(**strip_private_metadata(dict(event)))


async def accept_delivery(
    body: bytes,
    headers: Mapping[str, str],
    *,
    verifier: SignatureVerifier,
    publisher: Publisher,
    instance_id: str | None,
) -> Accepted:
    svix_id = verifier.verify(body, headers)
    event = parse_event(body)
    if instance_id and event.instance_id != instance_id:
        raise ForeignInstanceError("event of another Clerk instance")
    target = route(event, svix_id)
    record = PublishedEvent(
        svix_id=svix_id,
        received_at=int(time.time() * 1000),
        event=without_private_metadata(event, body),
    )
    await publisher.publish(
        target,
        record.to_json(),
        {HEADER_EVENT_ID: svix_id, HEADER_EVENT_TYPE: event.type},
    )
    return Accepted(svix_id=svix_id, event_type=event.type, topic=target.topic)
