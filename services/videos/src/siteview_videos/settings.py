from __future__ import annotations

from pydantic import Field

from siteview_common.runtime import ServiceSettings
from siteview_common.settings import PaginationSettings


class VideosSettings(ServiceSettings, PaginationSettings):
    port: int = 8003
    mongodb_database: str = "videos"

    #: Splats one user may have queued or processing at once; one more request answers 429.
    splats_max_open_per_user: int = Field(default=3, ge=1)
    #: A queued or processing splat that has not changed for this long fails (`timeout`).
    splats_timeout_seconds: float = Field(default=3600.0, gt=0)
    #: How often the worker looks for splats that timed out.
    splats_sweep_seconds: float = Field(default=30.0, gt=0)
    #: How often the worker publishes the job requests and cancellations not yet published,
    #: and how old one must be first (the API publishes its own at once).
    splats_outbox_seconds: float = Field(default=5.0, gt=0)
    #: How long a splat request waits for Kafka's ack of its job; past it, 503.
    splats_publish_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
