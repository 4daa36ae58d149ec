"""Every environment variable the code reads, derived from the pydantic settings classes.

Shared by the checks that a deployment (Kubernetes manifests, compose's `.env.example`) sets
every setting of each service: a new field in a settings class makes them name what is missing.
"""

from __future__ import annotations

from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from siteview_payments.settings import PaymentsSettings
from siteview_users.settings import UsersSettings
from siteview_videos.settings import VideosSettings
from siteview_webhooks.settings import GatewaySettings

#: Each service (the name its deployment files use) and the settings class its processes read.
SERVICES_SETTINGS: dict[str, type[BaseSettings]] = {
    "webhooks": GatewaySettings,
    "users": UsersSettings,
    "payments": PaymentsSettings,
    "videos": VideosSettings,
}


def env_names(settings_class: type[BaseSettings], *, fallbacks: bool = False) -> set[str]:
    """The variables `settings_class` reads, one per field: its alias where it has one (the
    first of several choices: the others are accepted fallbacks, named too with `fallbacks`),
    else the field's name in upper case (pydantic-settings matches names case-insensitively,
    with no prefix here)."""
    assert not settings_class.model_config.get("env_prefix"), "a prefix is not handled"
    names = set()
    for name, field in settings_class.model_fields.items():
        alias = field.validation_alias or field.alias
        if isinstance(alias, AliasChoices):
            choices = alias.choices if fallbacks else alias.choices[:1]
            names.update(str(choice).upper() for choice in choices)
        else:
            names.add(alias.upper() if isinstance(alias, str) else name.upper())
    return names


def every_setting() -> set[str]:
    """Every variable any process reads, fallbacks included: what "nothing configured" unsets."""
    return set().union(*(env_names(c, fallbacks=True) for c in SERVICES_SETTINGS.values()))
