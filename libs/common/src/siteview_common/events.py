"""The event contract between the gateway and the workers.

Clerk's envelope is `{data, object: "event", type, timestamp, instance_id, event_attributes}`;
the gateway publishes it, verified and without `private_metadata`, wrapped in a `PublishedEvent`
that adds the Svix message id (the dedupe key: the same across Clerk's retries and replays) and
the time the gateway received it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Topics:
    USERS = "clerk.users.v1"
    BILLING = "clerk.billing.v1"
    OTHER = "clerk.other.v1"

    #: The Clerk topics: each has a dead-letter topic.
    ALL = (USERS, BILLING, OTHER)

    #: Change notices (`siteview_common.changes`), keyed by Clerk user id: which of a user's
    #: documents a write touched, for the APIs' live streams. Kept an hour: a notice is
    #: only ever read as it arrives.
    CHANGES = "siteview.changes.v1"
    CHANGES_RETENTION_MS = 3_600_000

    #: 3D splats (the videos service and the GPU pipeline): job requests and cancellations
    #: for the pipeline, keyed by Clerk user id; the pipeline's status reports, keyed by
    #: splat id, with a dead-letter topic like the Clerk topics'.
    SPLAT_JOBS = "siteview.splat-jobs.v1"
    SPLAT_STATUS = "siteview.splat-status.v1"

    @staticmethod
    def dlq(topic: str) -> str:
        return f"{topic}.dlq"


#: Event-type prefixes (the part before the first dot) and the topic that carries them.
_USER_PREFIXES = ("user", "session", "email")
_BILLING_PREFIXES = ("paymentAttempt", "subscription", "subscriptionItem")

HEADER_EVENT_ID = "event-id"
HEADER_EVENT_TYPE = "event-type"
HEADER_DLQ_REASON = "dlq-reason"
HEADER_DLQ_SOURCE = "dlq-source-topic"


class PoisonMessageError(ValueError):
    """This message can never be applied: dead-letter it and move on."""


class ClerkEvent(BaseModel):
    """Clerk's webhook envelope. `data` stays a dict here: each consumer parses its own shape."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(min_length=1)
    object: str = "event"
    data: dict[str, Any]
    timestamp: int | None = Field(default=None, ge=0)
    instance_id: str | None = None


class PublishedEvent(BaseModel):
    """The Kafka value: the verified Clerk event plus delivery facts."""

    svix_id: str = Field(alias="svixId", min_length=1)
    received_at: int = Field(alias="receivedAt")
    event: ClerkEvent

    model_config = ConfigDict(populate_by_name=True)

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()


@dataclass(frozen=True, slots=True)
class Route:
    topic: str
    key: str


def _str_at(data: dict[str, Any], *path: str) -> str | None:
    node: Any = data
    for part in path:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node if isinstance(node, str) and node else None


def route(event: ClerkEvent, svix_id: str) -> Route:
    """Which topic carries `event`, keyed by the Clerk user it is about.

    Keying by the user keeps one user's events on one partition, so one worker sees them in
    the order the gateway published them (ordering by Clerk's timestamps is still the workers'
    job: Clerk does not deliver in order). No verified event is ever dropped for its type.
    """
    prefix = event.type.split(".", 1)[0]
    data = event.data
    if prefix in _USER_PREFIXES or prefix.startswith("organization"):
        if prefix == "user":
            key = _str_at(data, "id")
        else:
            key = _str_at(data, "user_id") or _str_at(data, "public_user_data", "user_id")
        return Route(Topics.USERS, key or svix_id)
    if prefix in _BILLING_PREFIXES:
        key = (
            _str_at(data, "payer", "user_id")
            or _str_at(data, "payer", "organization_id")
            or svix_id
        )
        return Route(Topics.BILLING, key)
    return Route(Topics.OTHER, svix_id)


def strip_private_metadata(value: Any) -> Any:
    """A copy of `value` with every `private_metadata` key removed, at any depth."""
    if isinstance(value, dict):
        return {k: strip_private_metadata(v) for k, v in value.items() if k != "private_metadata"}
    if isinstance(value, list):
        return [strip_private_metadata(v) for v in value]
    return value


USER_DELETED = "user.deleted"


class _DeletedUserData(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(pattern=r"^user_\w+$")
    deleted: bool = True


@dataclass(frozen=True, slots=True)
class UserDeletion:
    user_id: str
    deleted_at: int


def user_deletion(published: PublishedEvent) -> UserDeletion:
    """Clerk's `user.deleted`: `data` is only `{deleted, id, object}`, with no `updated_at`, so
    the deletion happened at the envelope `timestamp` (else when the gateway received it)."""
    data = _DeletedUserData.model_validate(published.event.data)
    if not data.deleted:
        raise PoisonMessageError("user.deleted with deleted=false")
    return UserDeletion(data.id, published.event.timestamp or published.received_at)
