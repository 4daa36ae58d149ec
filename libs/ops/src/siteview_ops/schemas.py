"""`siteview schemas export|check`: the JSON Schemas of the messages exchanged with the GPU
pipeline, committed under `docs/schemas/`. The pydantic models in `siteview_videos.views` are
the source of truth; the files are what the pipeline's authors read and validate against."""

from __future__ import annotations

from pathlib import Path

import typer

from siteview_ops.console import fail, out
from siteview_videos.views import message_schemas

SCHEMAS = Path(__file__).resolve().parents[4] / "docs" / "schemas"
REGENERATE = "`.venv/bin/siteview schemas export` regenerates them"

app = typer.Typer(help="The splat topics' JSON Schemas under docs/schemas/.", no_args_is_help=True)


def stale_schemas(folder: Path = SCHEMAS) -> list[Path]:
    """The committed files that differ from what `export` writes (or are missing)."""
    stale = []
    for name, text in message_schemas().items():
        path = folder / name
        if not path.is_file() or path.read_text() != text:
            stale.append(path)
    return stale


def export(folder: Path = SCHEMAS) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in message_schemas().items():
        path = folder / name
        path.write_text(text)
        written.append(path)
    return written


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
