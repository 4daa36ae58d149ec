"""Run one process's ASGI app under uvicorn with the shared logging."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from siteview_common.logs import configure_logging
from siteview_common.settings import CommonSettings


def serve(app: FastAPI, settings: CommonSettings, service: str) -> None:
    configure_logging(settings.log_level, service)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        server_header=False,
    )
