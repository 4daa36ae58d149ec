from __future__ import annotations

from siteview_common.runtime import WorkerSettings
from siteview_common.settings import ClerkAuthSettings


class UsersSettings(WorkerSettings, ClerkAuthSettings):
    port: int = 8001
    mongodb_database: str = "users"
