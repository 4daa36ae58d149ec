"""`siteview-webhooks`: run the gateway (port 8000 by default)."""

from __future__ import annotations

from siteview_common.serve import serve
from siteview_common.settings import load_settings
from siteview_webhooks.bootstrap import create_gateway
from siteview_webhooks.settings import GatewaySettings


def main() -> None:
    settings = load_settings(GatewaySettings, "kafka_servers", "webhook_secrets")
    serve(create_gateway(settings), settings, "webhooks")


if __name__ == "__main__":
    main()
