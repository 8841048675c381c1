"""A TCP listener on 127.0.0.1 that accepts every connection and never answers.

A media URL pointing at it is a download that never delivers a byte: the fetcher connects,
sends its request and waits until its own deadline. The listener counts the connections it
accepted and those still open, which tells how many fetches are waiting on it right now.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class SilentListener:
    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.port = 0

    async def __aenter__(self) -> SilentListener:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    @property
    def accepted(self) -> int:
        return len(self._connections)

    @property
    def open(self) -> int:
        """Connections the other side has not closed (its end of file not seen yet)."""
        return sum(1 for reader, _ in self._connections if not reader.at_eof())

    def release(self) -> None:
        """Close every connection: the waiting fetches fail at once instead of at their deadline."""
        for _, writer in self._connections:
            writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.append((reader, writer))
        # Read (and drop) what the client sends, so that its closing is seen as end of file.
        while not writer.is_closing() and await _read_some(reader):
            pass


async def _read_some(reader: asyncio.StreamReader) -> bool:
    try:
        return bool(await reader.read(4096))
    except ConnectionError:
        return False
