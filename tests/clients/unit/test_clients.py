"""clients/: the committed OpenAPI documents are the apps' own, the committed TypeScript types
are what the pinned openapi-typescript makes of them, and the types compile with the example
that uses them. The Node tools are installed once, by `npm ci`, into clients/ts/node_modules."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from siteview_ops.console import OpsError
from siteview_ops.openapi import (
    APPS,
    CLIENTS,
    REGENERATE,
    differing,
    document,
    generate,
    stale_documents,
    typecheck,
)

T = TypeVar("T")

#: The first run installs the Node tools from the lockfile.
NPM_CI_SECONDS = 600

#: What a machine might set differently: none of it may reach a document.
ENVIRONMENT = {
    "APP_ENV": "production",
    "HOST": "10.1.2.3",
    "PORT": "9443",
    "CORS_ORIGINS": "https://app.example.com",
    "CLERK_ISSUER": "https://clerk.example.com",
    "CLERK_JWKS_URL": "https://clerk.example.com/.well-known/jwks.json",
    "CURSOR_SECRET": "another-secret",
    "MONGODB_URL": "mongodb://db.example.com:27017",
    "KAFKA_BOOTSTRAP_SERVERS": "kafka.example.com:9092",
    "WEBHOOK_MAX_BODY_BYTES": "2048",
}

#: Hosts and ports, of that environment and of the development defaults.
HOSTS = ("example.com", "10.1.2.3", "9443", "127.0.0.1", "localhost", ":9092", ":27017")


def stale_message(kind: str, stale: list[Path]) -> str:
    return f"stale {kind}: {', '.join(str(p) for p in stale)}; {REGENERATE}"


def with_node(check: Callable[[], T]) -> T:
    """The check, or a failure naming what to install when Node or npm is missing."""
    try:
        return check()
    except OpsError as exc:
        failure = str(exc)
    pytest.fail(failure, pytrace=False)


def test_documents_are_the_apps_own() -> None:
    stale = stale_documents()
    assert not stale, stale_message("OpenAPI documents", stale)


def test_documents_do_not_depend_on_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    before = {service: document(service) for service in APPS}
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    assert {service: document(service) for service in APPS} == before
    for service, text in before.items():
        assert "servers" not in json.loads(text), service
        for host in HOSTS:
            assert host not in text, (service, host)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the pinned openapi-typescript makes of the committed documents."""
    into = tmp_path_factory.mktemp("generated")
    with_node(lambda: generate(CLIENTS, into))
    return into


@pytest.mark.timeout(NPM_CI_SECONDS)
def test_types_are_generated_from_the_documents(generated: Path) -> None:
    stale = differing(generated, CLIENTS / "ts")
    assert not stale, stale_message("TypeScript types", stale)


@pytest.mark.timeout(NPM_CI_SECONDS)
def test_types_compile_with_the_example() -> None:
    with_node(typecheck)


@pytest.mark.timeout(NPM_CI_SECONDS)
def test_a_one_character_change_is_stale(tmp_path: Path, generated: Path) -> None:
    """The comparisons themselves, on an up-to-date clients/ of their own with one character
    changed in a document and one in another service's types."""
    clients = tmp_path / "clients"
    (clients / "openapi").mkdir(parents=True)
    for service in APPS:
        (clients / "openapi" / f"{service}.json").write_text(document(service))
    shutil.copytree(generated, clients / "ts")
    assert stale_documents(clients) == []
    assert differing(generated, clients / "ts") == []

    users = clients / "openapi" / "users.json"
    users.write_text(users.read_text().replace('"title": "users-api"', '"title": "users-apj"'))
    videos = clients / "ts" / "videos.ts"
    videos.write_text(
        videos.read_text().replace("export interface paths", "export interface pathz")
    )

    assert stale_documents(clients) == [users]
    assert differing(generated, clients / "ts") == [videos]
