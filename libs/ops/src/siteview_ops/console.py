"""What every command family shares: the services it knows, its two consoles, progress bars,
and one way of failing: one `siteview: …` line on stderr and a non-zero exit, never a trace."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import NoReturn, TypeVar

import typer
from aiokafka.errors import KafkaConnectionError, KafkaError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

T = TypeVar("T")

#: Results on stdout; progress, warnings and skipped rows on stderr.
out = Console(soft_wrap=True)
err = Console(stderr=True)


class Service(StrEnum):
    users = "users"
    payments = "payments"
    videos = "videos"


class OpsError(Exception):
    """A failure the operator can act on: printed as one line, exit status 1."""


def fail(message: str, status: int = 1) -> NoReturn:
    """End the command with one line on stderr."""
    print(f"siteview: {message}", file=sys.stderr)
    raise typer.Exit(status)


def one_line(exc: BaseException) -> str:
    """The error's message on one line, without PyMongo's topology and timeout details."""
    text = re.sub(r"\s*\(configured timeouts:[^)]*\)", "", str(exc)).split(", Timeout:")[0]
    return " ".join(text.split()) or type(exc).__name__


def run(main: Callable[[], Awaitable[T]]) -> T:
    """Run an async command body; every failure becomes one line on stderr, never a trace."""
    try:
        return asyncio.run(main())  # type: ignore[arg-type]
    except typer.Exit:
        raise
    except OpsError as exc:
        fail(str(exc))
    except KafkaConnectionError as exc:
        fail(f"cannot reach Kafka at KAFKA_BOOTSTRAP_SERVERS: {type(exc).__name__}")
    except KafkaError as exc:
        fail(f"Kafka refused: {type(exc).__name__}: {exc}")
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except Exception as exc:
        fail(f"{type(exc).__name__}: {exc}")


def progress() -> Progress:
    """A progress bar on stderr that disappears when done."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
        transient=True,
    )
