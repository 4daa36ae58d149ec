"""Ceiling 5: a service's own API with authentication turned off, and nothing else changed.

The service's app, built by its own composition root, with FastAPI's `dependency_overrides`
answering the current-user dependency with fixed claims instead of verifying a token. Only the
benchmark builds it. `python bench/ceilings/noauth_api.py SERVICE USER_ID` with the service's
usual settings (PORT among them)."""

from __future__ import annotations

import importlib
import sys

from siteview_common.auth import ClerkClaims
from siteview_common.cli import api_required
from siteview_common.deps import current_user
from siteview_common.serve import serve
from siteview_common.settings import load_settings

SETTINGS = {"users": "UsersSettings", "payments": "PaymentsSettings", "videos": "VideosSettings"}


def main(service: str, user_id: str) -> None:
    bootstrap = importlib.import_module(f"siteview_{service}.bootstrap")
    settings_class = getattr(
        importlib.import_module(f"siteview_{service}.settings"), SETTINGS[service]
    )
    settings = load_settings(settings_class, *api_required(settings_class))
    app = bootstrap.create_api(settings)
    claims = ClerkClaims(user_id=user_id, session_id=None, claims={"sub": user_id})
    app.dependency_overrides[current_user] = lambda: claims
    serve(app, settings, f"{service}-api-noauth")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
