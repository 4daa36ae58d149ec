from __future__ import annotations

from siteview_common.runtime import ServiceSettings


class UsersSettings(ServiceSettings):
    port: int = 8001
    mongodb_database: str = "users"
