"""A TCP proxy for tests that need a sick dependency: it forwards to a real server and can be
switched, at any moment, to refuse connections or to swallow them without ever answering.

    with TcpProxy("127.0.0.1", 27017) as proxy:   # forwarding on proxy.port
        proxy.black_hole()   # connections are accepted and read, nothing is ever answered
        proxy.refuse()       # nothing listens; open connections are reset
        proxy.forward()      # back to normal
        proxy.lose_replies(to=is_request, times=3)   # see below

`lose_replies` keeps forwarding but, for the next few requests that `to` picks out of what a
client sends, delivers the request to the server and then resets the connection the moment the
server's reply arrives, before the client gets any of it: the request took effect, its answer
was lost. It runs its own event loop on a thread, so synchronous tests can drive it.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pymongo.uri_parser import parse_uri

from siteview_devstack.broker import free_port

T = TypeVar("T")

Mode = Literal["forward", "black_hole", "refuse"]

CHUNK = 65536


@dataclass(eq=False)
class _Link:
    """One proxied connection: the client's side and the server's."""

    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    losing_reply: bool = False


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.mode: Mode = "forward"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._lose: Callable[[bytes], bool] = lambda data: False
        self._losses_left = 0
        #: How many replies `lose_replies` kept from their clients so far.
        self.replies_lost = 0

    # -- control, from any thread ------------------------------------------------------------

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def forward(self) -> None:
        """Forward again; connections left from before are reset (their streams are broken)."""
        self._call(self._switch("forward"))

    def black_hole(self) -> None:
        """Accept and read everything, answer nothing, on new and open connections alike."""
        self._call(self._switch("black_hole"))

    def refuse(self) -> None:
        """Stop listening (connecting is refused) and reset every open connection."""
        self._call(self._switch("refuse"))

    def lose_replies(self, to: Callable[[bytes], bool], times: int) -> None:
        """For the next `times` chunks a client sends that `to` is true of: deliver the chunk,
        then reset the connection when the server answers, the answer undelivered."""
        self._call(self._set_losses(to, times))

    def stop(self) -> None:
        if self._loop.is_closed():
            return
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    # -- on the proxy's loop -----------------------------------------------------------------

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._accept, self.host, self.port, reuse_address=True
            )

    async def _switch(self, mode: Mode) -> None:
        self.mode = mode
        if mode == "refuse" and self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if mode != "black_hole":
            for writer in list(self._writers):
                _reset(writer)
            self._writers.clear()
        if mode == "forward":
            await self._listen()

    async def _set_losses(self, to: Callable[[bytes], bool], times: int) -> None:
        self._lose, self._losses_left = to, times

    async def _close(self) -> None:
        await self._switch("refuse")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self.mode != "forward":
            await self._swallow(reader)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(writer)
            return
        self._writers.add(up_writer)
        link = _Link(client=writer, server=up_writer)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink, link))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, link: _Link
    ) -> None:
        upstream = sink is link.server
        try:
            while data := await source.read(CHUNK):
                if self.mode != "forward":
                    continue  # swallowed: the other side waits for an answer that never comes
                if not upstream and link.losing_reply:
                    self.replies_lost += 1  # the reply dies with the connection, unsent
                    _reset(link.client)
                    _reset(link.server)
                    return
                sink.write(data)
                await sink.drain()
                if upstream and self._losses_left > 0 and self._lose(data):
                    self._losses_left -= 1
                    link.losing_reply = True
        except OSError:
            pass
        finally:
            self._writers.discard(sink)
            if not sink.is_closing():
                sink.close()

    async def _swallow(self, reader: asyncio.StreamReader) -> None:
        try:
            while await reader.read(CHUNK):
                pass
        except OSError:
            pass


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset, as a crashed or restarted server's host would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


def mongo_upstream(url: str) -> tuple[str, int]:
    """The first host of a MongoDB URL: what a proxy in front of it forwards to."""
    host, port = parse_uri(url)["nodelist"][0]
    return host, port


def through_proxy(url: str, port: int) -> tuple[str, str, int]:
    """`url` rewritten to reach its first host through 127.0.0.1:`port` (and only that host:
    a directConnection), and the host and port it pointed at."""
    scheme, _, rest = url.partition("://")
    assert scheme == "mongodb", f"cannot proxy {scheme} URLs"
    cut = min([i for i in (rest.find("/"), rest.find("?")) if i >= 0] or [len(rest)])
    authority, tail = rest[:cut], rest[cut:]
    userinfo, at, _ = authority.rpartition("@")
    if not tail.startswith("/"):
        tail = "/" + tail
    tail += ("&" if "?" in tail else "?") + "directConnection=true"
    return f"mongodb://{userinfo}{at}127.0.0.1:{port}{tail}", *mongo_upstream(url)
