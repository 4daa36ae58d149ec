"""The command line every consuming service shares: `siteview-<service> api|worker`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

from fastapi import FastAPI

from siteview_common.auth import warn_about_policy
from siteview_common.logs import configure_logging
from siteview_common.mongo import preflight
from siteview_common.runtime import ServiceSettings, WorkerSettings
from siteview_common.serve import serve
from siteview_common.settings import PaginationSettings, load_settings

S = TypeVar("S", bound=ServiceSettings)

#: Worker processes serve health and metrics on the API's port + 100 unless PORT is set.
WORKER_PORT_OFFSET = 100

API_REQUIRED = ("mongo_url", "jwt_public_key", "token_issuer")
WORKER_REQUIRED = ("mongo_url", "kafka_servers")


def api_required(settings_class: type[WorkerSettings]) -> tuple[str, ...]:
    """What an API must have at start: an API that pages (its settings carry a cursor secret)
    needs that secret too, and every API needs Kafka (its live queries' notices)."""
    paging = ("cursor_signing_secret",) if issubclass(settings_class, PaginationSettings) else ()
    # Last: the live queries' change notices come from Kafka.
    return (*API_REQUIRED, *paging, "kafka_servers")


def run_service(
    service: str,
    settings_class: type[S],
    *,
    api: Callable[[S], FastAPI],
    worker: Callable[[S], FastAPI],
) -> None:
    parser = argparse.ArgumentParser(prog=f"siteview-{service}")
    parser.add_argument("process", choices=["api", "worker"], help="which process type to run")
    process = parser.parse_args().process
    if process == "api":
        settings = load_settings(settings_class, *api_required(settings_class))
        configure_logging(settings.log_level, f"{service}-api")
        warn_about_policy(settings)
        preflight(settings)
        serve(api(settings), settings, f"{service}-api")
    else:
        settings = load_settings(settings_class, *WORKER_REQUIRED)
        preflight(settings)
        if "port" not in settings.model_fields_set:
            settings = settings.model_copy(update={"port": settings.port + WORKER_PORT_OFFSET})
        serve(worker(settings), settings, f"{service}-worker")
