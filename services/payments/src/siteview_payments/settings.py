from __future__ import annotations

from siteview_common.runtime import WorkerSettings
from siteview_common.settings import ClerkAuthSettings, PaginationSettings


class PaymentsSettings(WorkerSettings, ClerkAuthSettings, PaginationSettings):
    port: int = 8002
    mongodb_database: str = "payments"
