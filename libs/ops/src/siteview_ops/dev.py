"""`siteview dev …`: development helpers that play the parts of systems outside this project.
They refuse to run unless APP_ENV=development.

`siteview dev splat-status SPLAT_ID --status processing|ready|failed` publishes a status report
on `siteview.splat-status.v1` as the GPU pipeline would: validated by the same model the videos
worker applies it with, keyed by the splat id, acknowledged by the broker (acks=all).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from pydantic import ValidationError

from siteview_common.events import Topics
from siteview_common.kafka import start_producer
from siteview_common.settings import KafkaSettings, load_settings
from siteview_ops.console import fail, out, run
from siteview_videos.domain import now_ms
from siteview_videos.views import SplatError, SplatResult, SplatStatusMessage

app = typer.Typer(
    help="Development helpers (APP_ENV=development only): play the GPU pipeline's part.",
    no_args_is_help=True,
)


class Status(StrEnum):
    processing = "processing"
    ready = "ready"
    failed = "failed"


def status_message(
    splat_id: str,
    status: Status,
    *,
    progress: int | None,
    url: str | None,
    format_: str,
    size_bytes: int,
    gaussians: int,
    error_code: str,
    error_message: str,
    at: int | None,
) -> SplatStatusMessage:
    """The report the pipeline would send (`ValidationError` when it would be refused); the
    defaults are the `splat-status` command's."""
    result = error = None
    if status is Status.ready:
        result = SplatResult(
            url=url or f"https://splats.example.com/{splat_id}.{format_}",
            format=format_,
            size_bytes=size_bytes,
            gaussians=gaussians,
        )
    if status is Status.failed:
        error = SplatError(code=error_code, message=error_message)
    if progress is None:
        progress = 100 if status is Status.ready else 0
    return SplatStatusMessage(
        splat_id=splat_id,
        status=status.value,
        progress=progress,
        result=result,
        error=error,
        at=at if at is not None else now_ms(),
    )


async def publish(settings: KafkaSettings, message: SplatStatusMessage) -> None:
    producer = await start_producer(settings, client_id="siteview-dev")
    try:
        await producer.send_and_wait(
            Topics.SPLAT_STATUS, message.to_json(), key=message.splat_id.encode()
        )
    finally:
        await producer.stop()


@app.command("splat-status")
def splat_status(
    splat_id: Annotated[str, typer.Argument(help="The splat's id (32 hex digits).")],
    status: Annotated[Status, typer.Option(help="What the pipeline reports.")],
    progress: Annotated[
        int | None,
        typer.Option(min=0, max=100, help="Percent done. Default: 100 when ready, else 0."),
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="Where the ready splat is (default: a placeholder URL).")
    ] = None,
    format_: Annotated[str, typer.Option("--format", help="The ready splat's format.")] = "ply",
    size_bytes: Annotated[int, typer.Option(min=0, help="The ready splat's size.")] = 48_000_000,
    gaussians: Annotated[int, typer.Option(min=0, help="Its number of Gaussians.")] = 1_000_000,
    error_code: Annotated[str, typer.Option(help="The failure's code.")] = "reconstruction_failed",
    error_message: Annotated[
        str, typer.Option(help="The failure's message.")
    ] = "the pipeline could not reconstruct this video",
    at: Annotated[
        int | None,
        typer.Option(min=0, help="The report's time, ms since the epoch (default: now)."),
    ] = None,
) -> None:
    """Publish a splat status report as the GPU pipeline would."""
    settings = load_settings(KafkaSettings)
    if not settings.is_development:
        fail("dev commands run only with APP_ENV=development (they stand in for other systems)")
    try:
        message = status_message(
            splat_id,
            status,
            progress=progress,
            url=url,
            format_=format_,
            size_bytes=size_bytes,
            gaussians=gaussians,
            error_code=error_code,
            error_message=error_message,
            at=at,
        )
    except ValidationError as exc:  # what the worker would dead-letter
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "report"
        fail(f"not a valid status report: {where}: {error['msg']}")
    run(lambda: publish(settings, message))
    out.print(message.to_json().decode(), highlight=False)
