"""`siteview openapi export|check`: each HTTP API's OpenAPI document, and the TypeScript types
generated from it, committed under `clients/` for the frontend.

`export` builds every app in process and writes its `app.openapi()` as sorted, indented JSON
to `clients/openapi/<service>.json`, then runs the pinned openapi-typescript on each into
`clients/ts/<service>.ts`. `check` names every committed file that differs from what `export`
would write, then type-checks `clients/ts` (its example included) with the pinned TypeScript.

An app answers `openapi()` without its database or broker: only its lifespan opens them. Its
settings are the development defaults, never read from the environment, so a document is the
same on every machine. The Node tools come from `clients/ts/package-lock.json`: `npm ci`
installs them into `clients/ts/node_modules` when they are missing or were installed from
another lockfile.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar, cast

import typer
from fastapi import FastAPI

from siteview_common.settings import CommonSettings
from siteview_ops.console import OpsError, fail
from siteview_payments.bootstrap import create_api as payments_api
from siteview_payments.settings import PaymentsSettings
from siteview_users.bootstrap import create_api as users_api
from siteview_users.settings import UsersSettings
from siteview_videos.bootstrap import create_api as videos_api
from siteview_videos.settings import VideosSettings
from siteview_webhooks.bootstrap import create_gateway
from siteview_webhooks.settings import GatewaySettings

S = TypeVar("S", bound=CommonSettings)

CLIENTS = Path(__file__).resolve().parents[4] / "clients"
REGENERATE = "`make clients` regenerates them"
NODE_HINT = (
    "the TypeScript clients need Node.js 20 or later with npm on PATH "
    "(install the nodejs and npm packages)"
)
#: Where `npm ci` notes which lockfile it installed from.
STAMP = ".siteview-lockfile"

app = typer.Typer(
    help="The APIs' OpenAPI documents and TypeScript types under clients/.",
    no_args_is_help=True,
)


def _app(create: Callable[[S], FastAPI], settings: type[S]) -> Callable[[], FastAPI]:
    """The app `create` builds from the development defaults: `model_construct` reads no
    environment, as the settings' own constructor would."""
    return lambda: create(cast(S, settings.model_construct(app_env="development")))


#: Every HTTP service's app, built from its defaults.
APPS: dict[str, Callable[[], FastAPI]] = {
    "users": _app(users_api, UsersSettings),
    "payments": _app(payments_api, PaymentsSettings),
    "videos": _app(videos_api, VideosSettings),
    "webhooks": _app(create_gateway, GatewaySettings),
}


def document(service: str) -> str:
    """The service's OpenAPI document, as committed."""
    return json.dumps(APPS[service]().openapi(), indent=2, sort_keys=True) + "\n"


def _run(command: list[str]) -> None:
    """Run the command; an OpsError with its output when it fails."""
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        name = Path(command[0]).name
        raise OpsError(f"{name} exited {done.returncode}: {' '.join(done.stdout.split())}")


def node_tools(ts: Path) -> Path:
    """`ts/node_modules/.bin`, installed from `ts/package-lock.json` first if need be."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        raise OpsError(f"{' and '.join(missing)} not found: {NODE_HINT}")
    lockfile = hashlib.sha256((ts / "package-lock.json").read_bytes()).hexdigest()
    stamp = ts / "node_modules" / STAMP
    if not stamp.is_file() or stamp.read_text() != lockfile:
        _run(["npm", "ci", "--prefix", str(ts), "--no-audit", "--no-fund"])
        stamp.write_text(lockfile)
    return ts / "node_modules" / ".bin"


def generate(clients: Path, into: Path) -> None:
    """openapi-typescript on every committed document, into `into/<service>.ts`: one process
    for all, from a Redocly configuration naming each document and its output (JSON, which
    is YAML too)."""
    tool = node_tools(clients / "ts") / "openapi-typescript"
    apis = {
        service: {
            "root": str(clients / "openapi" / f"{service}.json"),
            "x-openapi-ts": {"output": str(into / f"{service}.ts")},
        }
        for service in APPS
    }
    with tempfile.TemporaryDirectory(prefix="siteview-redocly-") as tmp:
        config = Path(tmp) / "redocly.yaml"
        config.write_text(json.dumps({"apis": apis}))
        _run([str(tool), "--redocly", str(config)])


def export(clients: Path = CLIENTS) -> None:
    """Write every document, then its types."""
    node_tools(clients / "ts")  # before anything is written: Node and npm are there
    (clients / "openapi").mkdir(exist_ok=True)
    for service in APPS:
        (clients / "openapi" / f"{service}.json").write_text(document(service))
    generate(clients, clients / "ts")


def differs(expected: str, committed: Path) -> bool:
    """Whether the committed file is missing or holds other than `expected`."""
    return not committed.is_file() or committed.read_text() != expected


def stale_documents(clients: Path = CLIENTS) -> list[Path]:
    """The committed documents that differ from the apps' own."""
    return [
        clients / "openapi" / f"{s}.json"
        for s in APPS
        if differs(document(s), clients / "openapi" / f"{s}.json")
    ]


def differing(generated: Path, committed: Path) -> list[Path]:
    """The types in `committed` that differ from those in `generated`."""
    return [
        committed / f"{s}.ts"
        for s in APPS
        if differs((generated / f"{s}.ts").read_text(), committed / f"{s}.ts")
    ]


def stale_types(clients: Path = CLIENTS) -> list[Path]:
    """The committed types that differ from what openapi-typescript makes of the committed
    documents."""
    with tempfile.TemporaryDirectory(prefix="siteview-clients-") as tmp:
        generate(clients, Path(tmp))
        return differing(Path(tmp), clients / "ts")


def typecheck(clients: Path = CLIENTS) -> None:
    """`tsc --noEmit` over `clients/ts`: the types compile, and the example uses them."""
    _run([str(node_tools(clients / "ts") / "tsc"), "--noEmit", "-p", str(clients / "ts")])


@app.command("export")
def export_command() -> None:
    """Write clients/openapi/<service>.json and clients/ts/<service>.ts from the apps."""
    try:
        export()
    except OpsError as exc:
        fail(str(exc))
    print(f"wrote {len(APPS)} OpenAPI documents and their types under {CLIENTS}")


@app.command()
def check() -> None:
    """Fail when a committed document or its types differ from the apps, or do not compile."""
    try:
        stale = stale_documents() + stale_types()
        if stale:
            fail(f"stale: {', '.join(str(p) for p in stale)}; {REGENERATE}")
        typecheck()
    except OpsError as exc:
        fail(str(exc))
    print(f"{CLIENTS} is up to date")
