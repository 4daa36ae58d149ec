"""Run one process's ASGI app under uvicorn with the shared logging: uvloop's event loop and the
httptools parser, whose own refusals answer JSON like every other error (see `httpserver`)."""

from __future__ import annotations

import contextlib
import sys

import uvicorn
from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE

from siteview_common.httpserver import JsonErrorsHttpToolsProtocol
from siteview_common.logs import configure_logging
from siteview_common.settings import CommonSettings


def server_config(app: FastAPI, settings: CommonSettings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=JsonErrorsHttpToolsProtocol,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        server_header=False,
    )


def serve(app: FastAPI, settings: CommonSettings, service: str) -> None:
    configure_logging(settings.log_level, service)
    server = uvicorn.Server(server_config(app, settings))
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:  # as `uvicorn.run`: a process that never served exits non-zero
        sys.exit(STARTUP_FAILURE)
