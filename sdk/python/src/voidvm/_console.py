"""Why: ``client.vms.console(vm_id)``: a running VM's serial console (README "Consoles") as an
object that types into the guest and reads what it prints, over the console's WebSocket of binary
frames, blocking (``SerialConsole``) or with asyncio (``AsyncSerialConsole``). A refused upgrade
(not running, not yours, no ``vm:console``) raises the API's own error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from types import TracebackType

from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect

from ._common import console_closed, console_refusal, console_url


def _bytes(data: bytes | str) -> bytes:
    return data.encode() if isinstance(data, str) else data


class SerialConsole:
    """An open serial console: ``write`` types, ``read`` returns the next output (first the
    last 64 KiB the guest printed), iterating yields output until it closes. Closing it (or
    leaving its ``with`` block) leaves the guest running."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    @classmethod
    def open(cls, origin: str, token: str | None, vm_id: str) -> SerialConsole:
        try:
            ws = connect(console_url(origin, token, vm_id), open_timeout=10, max_size=None)
        except InvalidStatus as e:
            raise console_refusal(e.response.status_code, e.response.body) from e
        # The connection outlives this call (``SerialConsole`` closes it): entered here, as
        # websockets >= 17.1 asks of a connection not opened in a ``with`` block.
        return cls(ws.__enter__())

    @property
    def close_code(self) -> int | None:
        """The close code once closed (1000 when the machine stopped or the console was closed)."""
        return self._ws.close_code

    @property
    def close_reason(self) -> str | None:
        return self._ws.close_reason

    def write(self, data: bytes | str) -> None:
        """Types into the guest's serial port (a string as its UTF-8 bytes)."""
        try:
            self._ws.send(_bytes(data))
        except ConnectionClosed as e:
            raise console_closed(self.close_code, self.close_reason) from e

    def read(self, timeout: float | None = None) -> bytes | None:
        """The next output; ``None`` when ``timeout`` seconds pass without any. Raises
        ``VoidVMError`` (``CONSOLE_CLOSED``) once the console is closed."""
        try:
            return _bytes(self._ws.recv(timeout))
        except TimeoutError:
            return None
        except ConnectionClosed as e:
            raise console_closed(self.close_code, self.close_reason) from e

    def __iter__(self) -> Iterator[bytes]:
        try:
            for message in self._ws:
                yield _bytes(message)
        except ConnectionClosed:
            return

    def close(self) -> None:
        self._ws.close()

    def __enter__(self) -> SerialConsole:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncSerialConsole:
    """``SerialConsole`` for asyncio: ``await write``, ``await read``, ``async for``,
    ``async with``."""

    def __init__(self, ws: AsyncConnection) -> None:
        self._ws = ws

    @classmethod
    async def open(cls, origin: str, token: str | None, vm_id: str) -> AsyncSerialConsole:
        try:
            ws = await async_connect(console_url(origin, token, vm_id), open_timeout=10, max_size=None)
        except InvalidStatus as e:
            raise console_refusal(e.response.status_code, e.response.body) from e
        return cls(ws)

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    @property
    def close_reason(self) -> str | None:
        return self._ws.close_reason

    async def write(self, data: bytes | str) -> None:
        try:
            await self._ws.send(_bytes(data))
        except ConnectionClosed as e:
            raise console_closed(self.close_code, self.close_reason) from e

    async def read(self, timeout: float | None = None) -> bytes | None:
        try:
            # Cancelling recv() loses nothing (websockets documents it as safe).
            return _bytes(await asyncio.wait_for(self._ws.recv(), timeout))
        except TimeoutError:
            return None
        except ConnectionClosed as e:
            raise console_closed(self.close_code, self.close_reason) from e

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for message in self._ws:
                yield _bytes(message)
        except ConnectionClosed:
            return

    async def close(self) -> None:
        await self._ws.close()

    async def __aenter__(self) -> AsyncSerialConsole:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None,
    ) -> None:
        await self.close()

