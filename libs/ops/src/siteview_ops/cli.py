"""`siteview`: one entry point for operators; every command has `--help`.

Command families register themselves here: each module defines a `typer.Typer()` (or plain
commands) and is added below. A failing command exits non-zero with one line on stderr
(`siteview: …`), as the services do at start-up.
"""

from __future__ import annotations

import typer

from siteview_ops import dev, dlq, openapi, reconcile, replay, schemas, transfer

app = typer.Typer(
    name="siteview",
    help=(
        "Operate SiteView: dead letters, replays, exports and imports, reconciliation, "
        "the API clients, the splat topics' schemas; dev: stand-ins for outside systems."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(dlq.app, name="dlq")
app.add_typer(replay.app)
app.command("export")(transfer.export)
app.command("import")(transfer.import_)
app.add_typer(reconcile.app, name="reconcile")
app.add_typer(openapi.app, name="openapi")
app.add_typer(schemas.app, name="schemas")
app.add_typer(dev.app, name="dev")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
