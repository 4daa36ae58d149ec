"""Use cases of the users service, with their dependencies passed in."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from siteview_users.domain import UserCommand, to_command
from siteview_users.repository import UserRepository

log = logging.getLogger(__name__)

parse = to_command


async def apply_user_events(commands: Sequence[UserCommand], repo: UserRepository) -> int:
    """Returns how many of `commands` were stale (ignored): the worker counts them."""
    stale = await repo.apply(commands)
    if stale:
        log.info("ignored stale user events", extra={"count": stale})
    return stale


async def get_user(external_id: str, repo: UserRepository) -> dict[str, Any] | None:
    return await repo.get(external_id)
