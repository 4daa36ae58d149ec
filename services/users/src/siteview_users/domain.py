"""The users service's rules, as pure functions: what a Clerk user event means for our record.

Ordering: every record carries `version`, Clerk's own clock for the state it holds
(`data.updated_at` for created/updated, the envelope `timestamp` for deleted, which has no
`updated_at`). A write applies only over an older version, so a stale or duplicate event never
wins; a deleted user keeps a tombstone and no later-arriving update brings it back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from siteview_common.changes import Change
from siteview_common.events import USER_DELETED, PublishedEvent, user_deletion

UPSERT_TYPES = frozenset({"user.created", "user.updated"})


class EmailAddress(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    email_address: str


class ClerkUser(BaseModel):
    """The part of Clerk's user object we keep (`private_metadata` never reaches us)."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(pattern=r"^user_\w+$")
    first_name: str | None = None
    last_name: str | None = None
    username: str | None = None
    image_url: str | None = None
    primary_email_address_id: str | None = None
    email_addresses: list[EmailAddress] = Field(default_factory=list)
    created_at: int | None = None
    updated_at: int | None = None


@dataclass(frozen=True, slots=True)
class UpsertUser:
    external_id: str
    version: int
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeleteUser:
    external_id: str
    version: int


UserCommand = UpsertUser | DeleteUser


def primary_email(user: ClerkUser) -> str | None:
    """The address whose id is `primary_email_address_id` (not simply the first one)."""
    for address in user.email_addresses:
        if address.id == user.primary_email_address_id:
            return address.email_address
    return None


def display_name(user: ClerkUser) -> str:
    """First + last name, else the username, else the primary e-mail's local part, else ""."""
    full = " ".join(
        part.strip() for part in (user.first_name, user.last_name) if part and part.strip()
    )
    if full:
        return full
    if user.username and user.username.strip():
        return user.username.strip()
    email = primary_email(user)
    return email.split("@", 1)[0] if email else ""


def to_command(published: PublishedEvent) -> UserCommand | None:
    """The command a published event asks of this service, or None if it is none of ours."""
    event = published.event
    fallback = event.timestamp or published.received_at
    if event.type in UPSERT_TYPES:
        user = ClerkUser.model_validate(event.data)
        return UpsertUser(
            external_id=user.id,
            version=user.updated_at or fallback,
            fields={
                "name": display_name(user),
                "email": primary_email(user),
                "imageUrl": user.image_url,
                "createdAt": user.created_at or fallback,
                "updatedAt": user.updated_at or fallback,
            },
        )
    if event.type == USER_DELETED:
        deletion = user_deletion(published)
        return DeleteUser(external_id=deletion.user_id, version=deletion.deleted_at)
    return None


def touched(commands: Sequence[UserCommand]) -> list[Change]:
    """The profiles a batch writes (or finds stale: a notice may be stale, never missing)."""
    return [Change(c.external_id, "users", c.external_id) for c in commands]
