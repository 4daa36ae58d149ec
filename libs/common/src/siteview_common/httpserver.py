"""uvicorn's httptools protocol with the shared error contract: a request the HTTP parser refuses
is answered `{"detail": ...}` as JSON like every other error, and the request line and header
fields together are bounded (httptools itself buffers header fields of any size).

- A request the parser rejects (bad request line, bad header bytes, a malformed
  Content-Length, ...) answers 400 `{"detail": "invalid HTTP request"}`.
- A request line and header fields over `max_header_bytes` (64 KiB) answer 431
  `{"detail": "request headers too large"}`, refused as they arrive, not once they end.

Both end the connection, since the parser cannot find the next request after either: the
answer is written, the server's side shut down, and whatever the client still sends is read and
dropped until it closes its side (at most `linger_seconds`). Closing at once instead would make
the kernel reset the connection while the client is still sending, and the client would lose the
answer.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

#: Request line plus header fields, in bytes. Svix's and Clerk's requests need about 1 KiB; a
#: session token about 2 KiB; common servers allow 8-64 KiB.
MAX_HEADER_BYTES = 64 * 1024
#: How long a refused client may keep sending before the connection is closed under it.
LINGER_SECONDS = 5.0


class HeaderFieldsTooLargeError(Exception):
    pass


class JsonErrorsHttpToolsProtocol(HttpToolsProtocol):
    max_header_bytes = MAX_HEADER_BYTES
    linger_seconds = LINGER_SECONDS

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        #: Request line and header fields of the current request, as the parser reported them.
        self._header_bytes = 0
        #: Bytes received while a request's header fields were still incomplete.
        self._unparsed_header_bytes = 0
        self._awaiting_headers = True
        self._messages_completed = 0
        self._refused = False
        self._linger: asyncio.TimerHandle | None = None

    # The bound, counted two ways: what the parser reports (exact, once each field is complete)
    # and what arrived while the header fields were incomplete (so a huge field is refused
    # while it arrives; a chunk in which a request completes is not counted, so a client
    # pipelining requests is never refused for its bodies).

    def _count_header_bytes(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.max_header_bytes:
            raise HeaderFieldsTooLargeError

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count_header_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._count_header_bytes(len(name) + len(value) + 4)  # ": " and CRLF

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._unparsed_header_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_headers = True
        self._messages_completed += 1

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # answered already: drop what the client still sends
        self._unset_keepalive_if_required()
        completed = self._messages_completed
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, HeaderFieldsTooLargeError):
                self._refuse(431, "request headers too large")
            else:
                self.send_400_response("invalid HTTP request")
            return
        if self._awaiting_headers and self._messages_completed == completed:
            self._unparsed_header_bytes += len(data)
            if self._unparsed_header_bytes > self.max_header_bytes:
                self._refuse(431, "request headers too large")

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "invalid HTTP request")

    def _refuse(self, status: int, detail: str) -> None:
        """Answer `status` with a JSON detail and end the connection. If a response to an
        earlier request is still being written, only close: nothing may interleave with it."""
        self.logger.warning("refused a request: %s", detail, extra={"status": status})
        self._refused = True
        if not (self.cycle is None or self.cycle.response_complete):
            self.transport.close()
            return
        body = json.dumps({"detail": detail}).encode()
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()  # the client reads the answer, then the end of it
        self.flow.resume_reading()
        self._linger = self.loop.call_later(self.linger_seconds, self.transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()
        super().connection_lost(exc)
