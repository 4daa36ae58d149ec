"""Reading Server-Sent Events streams in tests: httpx streaming and a small parser of the
event-stream format (fields `event`, `id`, `data`, `retry`; comment lines; a blank line ends
an event)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

#: Longest wait for the next line of a stream, and for the next event however many
#: heartbeats arrive meanwhile: a test waiting for a push fails after this.
READ_TIMEOUT_SECONDS = 20.0


@dataclass
class SseEvent:
    event: str | None = None
    id: str | None = None
    data: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def value(self) -> Any:
        assert self.data is not None, self
        return json.loads(self.data)


class SseStream:
    """The events of one open stream, in order."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.iter_lines()
        #: Every block read so far, value events or not (retry, heartbeats).
        self.blocks: list[SseEvent] = []

    def next_block(self) -> SseEvent:
        block = SseEvent()
        seen = False
        deadline = time.monotonic() + READ_TIMEOUT_SECONDS
        for line in self._lines:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no event within {READ_TIMEOUT_SECONDS} s")
            if line == "":
                if seen:
                    self.blocks.append(block)
                    return block
                continue
            seen = True
            name, _, text = line.partition(":")
            text = text.removeprefix(" ")
            if name == "":
                block.comments.append(text)
            elif name == "data":
                block.data = text if block.data is None else f"{block.data}\n{text}"
            elif name == "event":
                block.event = text
            elif name == "id":
                block.id = text
            elif name == "retry":
                block.retry = int(text)
        raise EOFError("the stream ended")

    def next_value(self) -> SseEvent:
        """The next event that carries data (retry-only blocks and heartbeats are skipped)."""
        deadline = time.monotonic() + READ_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            block = self.next_block()
            if block.data is not None:
                return block
        raise TimeoutError(f"no value within {READ_TIMEOUT_SECONDS} s")


@contextmanager
def open_stream(
    url: str,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    cookies: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
) -> Iterator[SseStream]:
    """GET `url` as an event stream (200 expected); the stream closes on leaving."""
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    timeout = httpx.Timeout(10.0, read=READ_TIMEOUT_SECONDS)
    with (
        httpx.Client(timeout=timeout, cookies=cookies) as client,
        client.stream("GET", url, headers=sent, params=params) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        # Held here: a dropped line iterator would close the connection under the caller.
        stream = SseStream(response)
        yield stream
