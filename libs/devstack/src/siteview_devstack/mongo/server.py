"""asyncio TCP server for the MongoDB wire-protocol stand-in, a thread runner and the CLI.

Messages are decoded and executed on one dedicated worker thread, so an in-process stand-in
never blocks the host event loop with storage work and commands never run concurrently.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import itertools
import logging
import threading
from typing import Any

from siteview_devstack.mongo.commands import Backend, CommandError
from siteview_devstack.mongo.wire import (
    HEADER,
    MAX_MESSAGE_SIZE,
    MORE_TO_COME,
    OP_COMPRESSED,
    OP_MSG,
    OP_QUERY,
    QUERY_FAILURE,
    ProtocolError,
    decode_op_msg,
    decode_op_query,
    encode_op_msg,
    encode_op_reply,
)

log = logging.getLogger("siteview_devstack.mongo")

_HANDSHAKE_COMMANDS = frozenset({"hello", "isMaster", "ismaster"})


class MongoStandIn:
    """A development/test STAND-IN that speaks MongoDB's wire protocol; it is not MongoDB."""

    def __init__(self) -> None:
        self.backend = Backend()
        self.host = "127.0.0.1"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._connection_ids = itertools.count(1)
        self._request_ids = itertools.count(1)
        self._stopping = False

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host  # noqa: S104
        return f"mongodb://{host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 27017) -> None:
        if self._server is not None:
            raise RuntimeError("the MongoDB stand-in is already started")
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "mongo-standin")
        try:
            self._server = await asyncio.start_server(self._serve, host, port)
        except BaseException:
            self._executor.shutdown()
            self._executor = None
            raise
        self.host, self.port = host, self._server.sockets[0].getsockname()[1]
        log.warning(
            "MongoDB wire-protocol STAND-IN listening on %s: in-memory mongomock storage, "
            "NOT MongoDB, for development and tests only",
            self.url,
        )

    async def stop(self) -> None:
        if self._server is None:
            return
        self._stopping = True
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
        assert self._executor is not None
        self._executor.shutdown(wait=True)
        self._executor = None
        self._stopping = False
        log.info("MongoDB stand-in on port %d stopped", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        connection_id = next(self._connection_ids)
        loop = asyncio.get_running_loop()
        try:
            while True:
                header = await reader.readexactly(HEADER.size)
                length, request_id, _response_to, opcode = HEADER.unpack(header)
                if not HEADER.size < length <= MAX_MESSAGE_SIZE:
                    log.error("mongo stand-in: bad message length %d; closing", length)
                    break
                payload = await reader.readexactly(length - HEADER.size)
                reply, close = await loop.run_in_executor(
                    self._executor, self._handle, opcode, request_id, payload, connection_id
                )
                if reply:
                    writer.write(reply)
                    await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            if not self._stopping:
                raise
        except Exception:
            log.exception("mongo stand-in: connection %d failed; closing it", connection_id)
        finally:
            self._connections.discard(task)
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass

    def _handle(
        self, opcode: int, request_id: int, payload: bytes, connection_id: int
    ) -> tuple[bytes | None, bool]:
        """Runs on the worker thread. Returns (reply bytes or None, close the connection)."""
        reply_id = next(self._request_ids)
        if opcode == OP_MSG:
            try:
                flags, body = decode_op_msg(payload)
            except ProtocolError as exc:
                log.error("mongo stand-in: %s; closing the connection", exc)
                return encode_op_msg(reply_id, request_id, CommandError(9, str(exc)).reply()), True
            reply = self.backend.run(body, connection_id)
            if flags & MORE_TO_COME:  # unacknowledged write: the client waits for nothing
                return None, False
            try:
                return encode_op_msg(reply_id, request_id, reply), False
            except Exception as exc:  # a reply BSON cannot hold: answer an error instead
                log.exception("mongo stand-in: cannot encode the reply")
                error = CommandError(1, f"the stand-in cannot encode its reply: {exc}").reply()
                return encode_op_msg(reply_id, request_id, error), False
        if opcode == OP_QUERY:
            try:
                namespace, query = decode_op_query(payload)
            except ProtocolError as exc:
                log.error("mongo stand-in: %s; closing the connection", exc)
                return None, True
            query = query.get("$query", query)  # read-preference wrapping
            name = next(iter(query), "")
            if not namespace.endswith(".$cmd") or name not in _HANDSHAKE_COMMANDS:
                error = CommandError(
                    352,
                    f"Unsupported OP_QUERY command: {name or namespace}. The SiteView MongoDB "
                    "stand-in accepts OP_QUERY only for the hello/isMaster handshake",
                ).reply()
                return encode_op_reply(reply_id, request_id, error, QUERY_FAILURE), False
            command: dict[str, Any] = {**query, "$db": namespace[: -len(".$cmd")]}
            return encode_op_reply(
                reply_id, request_id, self.backend.run(command, connection_id)
            ), False
        if opcode == OP_COMPRESSED:
            log.error("mongo stand-in: OP_COMPRESSED received; compression is not supported")
            error = CommandError(
                238,
                "OP_COMPRESSED is not supported by the SiteView MongoDB stand-in "
                "(it never advertises compression); disable compressors",
            ).reply()
            return encode_op_msg(reply_id, request_id, error), True
        log.error("mongo stand-in: unsupported opcode %d; closing the connection", opcode)
        return None, True


class StandInThread:
    """A MongoStandIn running on its own event loop in a daemon thread (for test fixtures)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.standin = MongoStandIn()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="mongo-standin-loop", daemon=True
        )
        self._thread.start()
        try:
            self._call(self.standin.start(host, port))
        except BaseException:
            self._shutdown_loop()
            raise

    @property
    def url(self) -> str:
        return self.standin.url

    @property
    def port(self) -> int:
        return self.standin.port

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def _shutdown_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def stop(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._call(self.standin.stop())
        finally:
            self._shutdown_loop()

    def __enter__(self) -> StandInThread:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_in_thread(host: str = "127.0.0.1", port: int = 0) -> StandInThread:
    """Start a stand-in in a background thread; call ``.stop()`` (or use ``with``) to end it."""
    return StandInThread(host, port)


async def _serve_forever(host: str, port: int) -> None:
    standin = MongoStandIn()
    await standin.start(host, port)
    try:
        await asyncio.Event().wait()
    finally:
        await standin.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="siteview-mongo-standin",
        description="Development STAND-IN speaking MongoDB's wire protocol over in-memory "
        "mongomock storage. It is not MongoDB: data is lost on exit.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=27017)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        asyncio.run(_serve_forever(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
