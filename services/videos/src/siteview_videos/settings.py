from __future__ import annotations

from siteview_common.runtime import WorkerSettings
from siteview_common.settings import ClerkAuthSettings, PaginationSettings


class VideosSettings(WorkerSettings, ClerkAuthSettings, PaginationSettings):
    port: int = 8003
    mongodb_database: str = "videos"
