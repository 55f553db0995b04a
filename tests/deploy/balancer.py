"""A TCP load balancer for tests: the first backend that accepts the connection gets it.

It stands in for the deployment's proxy (Caddy's `lb_try_duration`, a Kubernetes Service): a
backend that is draining refuses new connections, and the client's reconnect lands on the
next one. Bytes are copied both ways untouched (HTTP and websockets alike).
"""

from __future__ import annotations

import asyncio
import threading
from contextlib import suppress

from embedded_redis import free_port

CHUNK = 64 * 1024


class Balancer:
    def __init__(self, backend_ports: list[int]) -> None:
        self.backend_ports = backend_ports
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-balancer", daemon=True)

    def __enter__(self) -> Balancer:
        self._thread.start()
        self._started.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port)
        )
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()

    async def _handle(self, client_reader, client_writer) -> None:
        for port in self.backend_ports:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:  # refused: draining or down, try the next backend
                continue
            await asyncio.gather(
                self._pipe(client_reader, writer), self._pipe(reader, client_writer)
            )
            return
        client_writer.close()

    @staticmethod
    async def _pipe(reader, writer) -> None:
        with suppress(OSError):
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
        with suppress(OSError):
            writer.close()
