from __future__ import annotations

from pydantic import Field

from siteview_common.settings import KafkaSettings, WebhookSecretSettings


class GatewaySettings(KafkaSettings, WebhookSecretSettings):
    port: int = 8000
    #: When set, events of any other Clerk instance are refused with 401.
    clerk_instance_id: str | None = None
    webhook_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    #: How long a webhook waits for the broker's ack before answering 503 (Clerk waits ~15 s).
    publish_timeout_seconds: float = Field(default=5.0, gt=0, le=14)
