"""The FastAPI shell every process shares: errors as `{"detail": ...}` without internals
(503 when the database is unavailable), CORS, request metrics, and `/healthz`, `/readyz`,
`/metrics`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse as StarletteJSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator import metrics as instrumentator_metrics
from pymongo.errors import PyMongoError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from siteview_common.mongo import is_unavailable
from siteview_common.pagination import InvalidCursorError
from siteview_common.settings import CommonSettings

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool]]

#: How long one readiness check may take before it counts as failed.
DEFAULT_CHECK_TIMEOUT_SECONDS = 2.0
#: What a 503 for an unavailable database tells clients to wait before retrying.
RETRY_AFTER_SECONDS = 5

#: Every response, by route template and exact status (`siteview_http_requests_total`), with
#: latency histograms (`siteview_http_request_duration_seconds` by route,
#: `siteview_http_request_duration_highr_seconds` overall) and request/response sizes. Made
#: once per process, so every app built here records into the same series.
_HTTP_METRICS = instrumentator_metrics.default(
    metric_namespace="siteview",
    latency_lowr_buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class JSONResponse(StarletteJSONResponse):
    """Starlette's JSON response, encoded by orjson: the same compact UTF-8 JSON, faster. For
    the answers built here (errors, readiness); a route with a response model is serialized
    straight to JSON by pydantic-core, which FastAPI does only with its default response
    class, so that is left as it is."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


async def _bounded(name: str, check: ReadinessCheck, seconds: float) -> bool:
    """One readiness check: false when it fails, raises or does not answer within `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            return await check()
    except TimeoutError:
        log.warning("readiness check timed out", extra={"check": name, "seconds": seconds})
    except Exception:
        log.exception("readiness check failed", extra={"check": name})
    return False


def health_router(
    checks: Mapping[str, ReadinessCheck], check_timeout: float = DEFAULT_CHECK_TIMEOUT_SECONDS
) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @router.get("/readyz", responses={503: {"description": "a dependency is unreachable"}})
    async def readyz() -> JSONResponse:
        """Every dependency this process needs is reachable (each check within a bound)."""
        outcomes = await asyncio.gather(
            *(_bounded(name, check, check_timeout) for name, check in checks.items())
        )
        results = dict(zip(checks, outcomes, strict=True))
        ready = all(results.values())
        body = {"status": "ok" if ready else "unavailable", "checks": results}
        return JSONResponse(body, status_code=200 if ready else 503)

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(
        {"detail": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None)
    )


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return JSONResponse({"detail": errors}, status_code=422)


async def _invalid_cursor(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": "invalid cursor"}, status_code=400)


async def _unhandled_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", extra={"path": request.url.path}, exc_info=exc)
    return JSONResponse({"detail": "internal error"}, status_code=500)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    if not is_unavailable(exc):
        return await _unhandled_error(request, exc)
    log.warning(
        "database unavailable",
        extra={"path": request.url.path, "error": type(exc).__name__},
    )
    return JSONResponse(
        {"detail": "database unavailable"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


class ContainErrors:
    """Answers an exception that no handler took with a JSON 500 and stops it there.

    Starlette's own error middleware also answers 500, but re-raises afterwards, and uvicorn
    then closes the client's connection; this pure ASGI middleware keeps the connection open
    for the next request. It sits inside the metrics middleware, which so counts the 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:  # part of the answer is out: all that is left is to drop it
                raise
            log.exception("unhandled error", extra={"path": scope.get("path")}, exc_info=exc)
            response = JSONResponse({"detail": "internal error"}, status_code=500)
            await response(scope, receive, send)


def create_app(
    *,
    title: str,
    settings: CommonSettings,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]],
    checks: Mapping[str, ReadinessCheck],
    routers: Sequence[APIRouter] = (),
    description: str = "",
    check_timeout: float = DEFAULT_CHECK_TIMEOUT_SECONDS,
) -> FastAPI:
    app = FastAPI(title=title, description=description, lifespan=lifespan, version="1.0.0")
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(InvalidCursorError, _invalid_cursor)
    app.add_exception_handler(PyMongoError, _database_error)
    app.add_exception_handler(Exception, _unhandled_error)
    if settings.cors_origins:
        # Credentials are allowed, for the named origins only (settings refuse `*`): a
        # browser's `EventSource(url, {withCredentials: true})` sends Clerk's `__session`
        # cookie, which only the live routes accept, and `Last-Event-ID` when it reconnects.
        # `Idempotency-Key` makes a repeated splat request safe (the videos API).
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_credentials=True,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID", "Idempotency-Key"],
        )
    app.add_middleware(ContainErrors)
    # Added last, so it is the outermost of our middleware (only Starlette's error middleware,
    # which turns an unhandled exception into the 500, is outside it: the instrumentator then
    # records that request as a 500). A pure ASGI middleware: no per-request task or copy.
    assert _HTTP_METRICS is not None
    Instrumentator(
        should_group_status_codes=False,
        should_group_untemplated=True,  # unknown paths share the handler label "none"
        excluded_handlers=["^/metrics$"],
    ).add(_HTTP_METRICS).instrument(app)

    app.include_router(health_router(checks, check_timeout))
    for router in routers:
        app.include_router(router)
    return app
