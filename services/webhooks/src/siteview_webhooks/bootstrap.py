"""The gateway's composition root."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from siteview_common.kafka import ensure_topics, make_broker
from siteview_common.webapp import create_app
from siteview_webhooks.entrypoints.http import router
from siteview_webhooks.publisher import KafkaPublisher
from siteview_webhooks.settings import GatewaySettings
from siteview_webhooks.verification import SignatureVerifier


def create_gateway(settings: GatewaySettings) -> FastAPI:
    verifier = SignatureVerifier(settings.webhook_secrets)
    timeout_ms = int(settings.publish_timeout_seconds * 1000)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        broker = make_broker(
            settings, client_id="webhooks-gateway", request_timeout_ms=max(timeout_ms, 1000)
        )
        await ensure_topics(settings)
        await broker.start()
        app.state.broker = broker
        app.state.publisher = KafkaPublisher(broker, settings.publish_timeout_seconds)
        try:
            yield
        finally:
            await broker.stop()

    async def broker_ready() -> bool:
        broker = getattr(app.state, "broker", None)
        return broker is not None and bool(await broker.ping(timeout=2.0))

    app = create_app(
        title="SiteView webhooks gateway",
        description="Verifies Clerk's Svix-signed webhooks and publishes them to Kafka.",
        settings=settings,
        lifespan=lifespan,
        checks={"broker": broker_ready},
        routers=[router],
    )
    app.state.settings = settings
    app.state.verifier = verifier
    return app
