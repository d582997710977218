"""A minimal asyncio HTTP/1.1 client for the load generators: one request per connection.

Every request opens its own connection, as a client without a connection pool
does (and as every client had to with the sync workers that served banditd
before gunicorn.conf.py). The client is a bare
``asyncio.Protocol`` (no streams, no parsing beyond the status line and
Content-Length) so that generating 1,000 requests/s costs a small share of one core.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Endpoint:
    """Where requests go and the headers they carry."""

    host: str
    port: int
    path: str
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)

    def request(self, body: bytes = b"") -> bytes:
        """The raw request bytes for ``body``."""
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        if self.method == "POST":
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class HttpError(Exception):
    """The connection failed or the answer was not HTTP."""


class _Exchange(asyncio.Protocol):
    def __init__(self, raw: bytes, done: asyncio.Future) -> None:
        self.raw = raw
        self.done = done
        self.buffer = bytearray()
        self.header_end = -1
        self.length: int | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.raw)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.header_end < 0:
            self.header_end = self.buffer.find(b"\r\n\r\n")
            if self.header_end < 0:
                return
            for line in bytes(self.buffer[: self.header_end]).split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    self.length = int(value)
        if self.length is not None and len(self.buffer) >= self.header_end + 4 + self.length:
            self._finish()

    def eof_received(self) -> bool:
        self._finish()
        return False

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            if exc is not None or self.header_end < 0:
                self.done.set_exception(HttpError(f"connection lost: {exc!r}"))
            else:
                self._finish()

    def _finish(self) -> None:
        if self.done.done():
            return
        try:
            status = int(self.buffer[9:12])
        except ValueError:
            self.done.set_exception(HttpError(f"not HTTP: {bytes(self.buffer[:40])!r}"))
            return
        self.done.set_result((status, bytes(self.buffer[self.header_end + 4 :])))


async def call(endpoint: Endpoint, raw: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send one raw request on a new connection; (status, body) of the answer."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    transport = None
    try:
        async with asyncio.timeout(timeout):
            transport, _ = await loop.create_connection(
                lambda: _Exchange(raw, done), endpoint.host, endpoint.port
            )
            return await done
    finally:
        if transport is not None:
            transport.close()
