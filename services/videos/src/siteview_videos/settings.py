from __future__ import annotations

from siteview_common.runtime import ServiceSettings
from siteview_common.settings import PaginationSettings


class VideosSettings(ServiceSettings, PaginationSettings):
    port: int = 8003
    mongodb_database: str = "videos"
