"""The splat routes' HTTP surface without a database: a browser may send Idempotency-Key."""

from __future__ import annotations

import httpx

from siteview_videos.bootstrap import create_api
from siteview_videos.settings import VideosSettings

ORIGIN = "https://app.siteview.test"


async def test_a_browser_may_send_an_idempotency_key_from_an_allowed_origin() -> None:
    app = create_api(VideosSettings(app_env="development", cors_origins=(ORIGIN,)))
    # No lifespan: a preflight reaches no route and no database.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://videos") as client:
        preflight = await client.options(
            "/videos/v1/splats",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
            },
        )
    assert preflight.status_code == 200, preflight.text
    allowed = {
        h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")
    }
    assert {"authorization", "content-type", "idempotency-key"} <= allowed
