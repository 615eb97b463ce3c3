"""A loopback TCP relay that stops relaying after N request bytes: a worker frozen mid-upload.

The test waits on :attr:`FreezingProxy.frozen` (an event, not a sleep) to know the worker
is inside its upload, then kills it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from tests.conftest import free_port


class FreezingProxy:
    def __init__(self, upstream_host: str, upstream_port: int, *, freeze_after: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.freeze_after = freeze_after
        self.port = free_port()
        self.sent = 0  # client -> server bytes relayed so far
        self.received = 0  # server -> client bytes relayed so far (what the client read)
        self.frozen = threading.Event()
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FreezingProxy:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", self.port)
        )
        self._ready.set()
        self._loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._writers.append(up_writer)
        back = asyncio.create_task(self._pipe(up_reader, writer, count=False))
        self._tasks.add(back)
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            await self._pipe(reader, up_writer, count=True)
        back.cancel()
        up_writer.close()
        writer.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, count: bool
    ) -> None:
        while True:
            if count and self.sent >= self.freeze_after:
                self.frozen.set()
                await asyncio.Event().wait()  # hold the connection open, relay nothing more
            data = await reader.read(64 * 1024)
            if not data:
                return
            if count:
                data = data[: max(0, self.freeze_after - self.sent)] or data[:0]
                self.sent += len(data)
            else:
                self.received += len(data)
            writer.write(data)
            await writer.drain()
