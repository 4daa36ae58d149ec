"""`siteview schemas export|check`: the JSON Schemas of the messages exchanged with the GPU
pipeline, committed under `docs/schemas/`. The pydantic models in `siteview_videos.views` are
the source of truth; the files are what the pipeline's authors read and validate against."""

from __future__ import annotations

from pathlib import Path

import typer

from siteview_ops.console import fail, out
from siteview_ops.openapi import differs
from siteview_videos.views import message_schemas

SCHEMAS = Path(__file__).resolve().parents[4] / "docs" / "schemas"
REGENERATE = "`.venv/bin/siteview schemas export` regenerates them"

app = typer.Typer(help="The splat topics' JSON Schemas under docs/schemas/.", no_args_is_help=True)


def _files(folder: Path) -> dict[Path, str]:
    """Each schema file `export` writes into `folder`, with its text."""
    return {folder / name: text for name, text in message_schemas().items()}


def stale_schemas(folder: Path = SCHEMAS) -> list[Path]:
    """The committed files that differ from what `export` writes (or are missing)."""
    return [path for path, text in _files(folder).items() if differs(text, path)]


def export(folder: Path = SCHEMAS) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = _files(folder)
    for path, text in files.items():
        path.write_text(text)
    return list(files)


@app.command("export")
def export_command() -> None:
    """Write each schema to docs/schemas/."""
    for path in export():
        out.print(f"wrote {path}", highlight=False)


@app.command()
def check() -> None:
    """Fail naming every committed schema that differs from its model."""
    stale = stale_schemas()
    if stale:
        names = ", ".join(str(p) for p in stale)
        fail(f"stale JSON Schemas: {names}; {REGENERATE}")
    out.print("the JSON Schemas are up to date", highlight=False)
