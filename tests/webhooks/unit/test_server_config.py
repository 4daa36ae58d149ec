"""The uvicorn configuration every process is served with (the gateway's included)."""

from __future__ import annotations

import uvloop
from fastapi import FastAPI

from siteview_common.httpserver import JsonErrorsHttpToolsProtocol
from siteview_common.serve import server_config
from siteview_common.settings import CommonSettings


def test_every_process_runs_on_uvloop_with_the_json_refusing_httptools_protocol() -> None:
    config = server_config(FastAPI(), CommonSettings(port=0))
    config.load()
    assert config.http_protocol_class is JsonErrorsHttpToolsProtocol
    loop_factory = config.get_loop_factory()
    assert loop_factory is not None
    loop = loop_factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
