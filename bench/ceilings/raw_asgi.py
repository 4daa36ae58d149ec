"""Ceiling 1: the least an HTTP service can do for a webhook. A bare ASGI callable that reads
the body and answers 202 with a small JSON body, under the same uvicorn (uvloop + httptools)
the services run on. `python bench/ceilings/raw_asgi.py PORT`."""

from __future__ import annotations

import sys
from typing import Any

import uvicorn

BODY = b'{"status":"accepted"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 202, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
