from __future__ import annotations

from siteview_common.runtime import ServiceSettings
from siteview_common.settings import PaginationSettings


class PaymentsSettings(ServiceSettings, PaginationSettings):
    port: int = 8002
    mongodb_database: str = "payments"
