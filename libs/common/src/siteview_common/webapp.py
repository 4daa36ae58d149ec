"""The FastAPI shell every process shares: errors as `{"detail": ...}` without internals,
CORS, request metrics, and `/healthz`, `/readyz`, `/metrics`."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from siteview_common.pagination import InvalidCursorError
from siteview_common.settings import CommonSettings

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool]]

HTTP_REQUESTS = Counter(
    "siteview_http_requests_total", "HTTP requests served", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "siteview_http_request_duration_seconds", "HTTP request latency", ["method", "route"]
)


def health_router(checks: Mapping[str, ReadinessCheck]) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @router.get("/readyz", responses={503: {"description": "a dependency is unreachable"}})
    async def readyz() -> JSONResponse:
        """Every dependency this process needs is reachable."""
        results = {name: await check() for name, check in checks.items()}
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


def create_app(
    *,
    title: str,
    settings: CommonSettings,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]],
    checks: Mapping[str, ReadinessCheck],
    routers: Sequence[APIRouter] = (),
    description: str = "",
) -> FastAPI:
    app = FastAPI(title=title, description=description, lifespan=lifespan, version="1.0.0")
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(InvalidCursorError, _invalid_cursor)
    app.add_exception_handler(Exception, _unhandled_error)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )

    @app.middleware("http")
    async def measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        HTTP_LATENCY.labels(request.method, path).observe(time.perf_counter() - started)
        HTTP_REQUESTS.labels(request.method, path, str(response.status_code)).inc()
        return response

    app.include_router(health_router(checks))
    for router in routers:
        app.include_router(router)
    return app
