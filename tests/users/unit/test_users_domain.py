"""The users service's pure rules: names, e-mail, and what each event asks."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from siteview_common.consumer import PoisonMessageError
from siteview_common.events import ClerkEvent, PublishedEvent
from siteview_users.domain import (
    ClerkUser,
    DeleteUser,
    UpsertUser,
    display_name,
    primary_email,
    to_command,
)
from support import example

RECEIVED = 1_900_000_000_000


def user(**fields: Any) -> ClerkUser:
    data = example("user.created")["data"]
    data.update(fields)
    return ClerkUser.model_validate(data)


def published(event: dict[str, Any]) -> PublishedEvent:
    return PublishedEvent(
        svix_id="msg_x", received_at=RECEIVED, event=ClerkEvent.model_validate(event)
    )


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"first_name": "Ada", "last_name": "Lovelace"}, "Ada Lovelace"),
        ({"first_name": " Ada ", "last_name": None}, "Ada"),
        ({"first_name": None, "last_name": "Lovelace"}, "Lovelace"),
        ({"first_name": None, "last_name": None, "username": "ada"}, "ada"),
        ({"first_name": "", "last_name": "  ", "username": None}, "ada.lovelace"),
        ({"first_name": None, "last_name": None, "username": None, "email_addresses": []}, ""),
    ],
)
def test_display_name_never_says_null(fields: dict[str, Any], name: str) -> None:
    assert display_name(user(**fields)) == name


def test_primary_email_is_the_one_named_primary_not_the_first() -> None:
    addresses = [
        {"id": "idn_other", "email_address": "old@example.com"},
        {"id": "idn_primary", "email_address": "primary@example.com"},
    ]
    subject = user(email_addresses=addresses, primary_email_address_id="idn_primary")
    assert primary_email(subject) == "primary@example.com"
    assert primary_email(user(email_addresses=addresses, primary_email_address_id=None)) is None
    assert primary_email(user(email_addresses=[], primary_email_address_id="idn_x")) is None


def test_created_and_updated_are_versioned_by_updated_at() -> None:
    event = example("user.updated")
    command = to_command(published(event))
    assert isinstance(command, UpsertUser)
    assert command.external_id == event["data"]["id"]
    assert command.version == event["data"]["updated_at"]
    assert command.fields["name"] == display_name(ClerkUser.model_validate(event["data"]))
    assert command.fields["createdAt"] == event["data"]["created_at"]


def test_an_update_without_updated_at_falls_back_to_the_envelope_timestamp() -> None:
    event = example("user.updated")
    del event["data"]["updated_at"]
    command = to_command(published(event))
    assert isinstance(command, UpsertUser)
    assert command.version == event["timestamp"]


def test_deleted_is_versioned_by_the_envelope_timestamp() -> None:
    event = example("user.deleted")
    assert to_command(published(event)) == DeleteUser(event["data"]["id"], event["timestamp"])
    del event["timestamp"]
    assert to_command(published(event)) == DeleteUser(event["data"]["id"], RECEIVED)


@pytest.mark.parametrize("kind", ["session.created", "email.created", "organization.created"])
def test_other_user_topic_events_are_not_ours(kind: str) -> None:
    event = example("session.created")
    event["type"] = kind
    assert to_command(published(event)) is None


@pytest.mark.parametrize(
    "mutate",
    [
        lambda e: e["data"].pop("id"),
        lambda e: e["data"].update(id="not-a-clerk-id"),
        lambda e: e["data"].update(email_addresses="nope"),
        lambda e: e["data"].update(updated_at="yesterday"),
    ],
    ids=["no-id", "bad-id", "bad-emails", "bad-updated-at"],
)
def test_malformed_users_are_poison(mutate: Any) -> None:
    event = example("user.updated")
    mutate(event)
    with pytest.raises(ValidationError):
        to_command(published(event))


def test_a_deletion_that_is_not_one_is_poison() -> None:
    event = example("user.deleted")
    event["data"]["deleted"] = False
    with pytest.raises(PoisonMessageError):
        to_command(published(event))
