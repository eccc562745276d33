"""Why: ``client.vms.console(vm_id)`` and ``client.vms.vnc(vm_id)``: a running VM's serial console
and its graphical console (README "Consoles") as objects that write bytes to the VM and read what
it sends, over the console's WebSocket of binary frames, blocking (``SerialConsole``,
``VncConsole``) or with asyncio (``AsyncSerialConsole``, ``AsyncVncConsole``). The graphical one
carries RFB (RFC 6143) byte for byte with QEMU's VNC server, which asks for no password. A refused
upgrade (not running, not yours, no ``vm:console``) raises the API's own error."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import ClassVar, Literal, Self

from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect

from ._common import console_closed, console_refusal, console_url


def _bytes(data: bytes | str) -> bytes:
    return data.encode() if isinstance(data, str) else data


class _Console:
    """An open console: ``write`` sends bytes to the VM, ``read`` returns the next bytes it
    sent, iterating yields them until it closes. Closing it (or leaving its ``with`` block)
    leaves the guest running."""

    _PATH: ClassVar[Literal["console", "vnc"]]

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    @classmethod
    def open(cls, origin: str, token: str | None, vm_id: str) -> Self:
        try:
            ws = connect(console_url(origin, token, vm_id, cls._PATH), open_timeout=10, max_size=None)
        except InvalidStatus as e:
            raise console_refusal(e.response.status_code, e.response.body) from e
        # The connection outlives this call (the console closes it): entered here, as
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
        """Sends bytes to the VM (a string as its UTF-8 bytes)."""
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
        """Closes the console; output not read yet is dropped. websockets stops reading from the
        socket while 16 messages wait unread, so it would never read the server's answer to the
        close and would end the connection after its close timeout, as if it had failed (1006);
        the output is therefore read and dropped until the close completes."""
        closer = threading.Thread(target=self._ws.close, name="voidvm-console-close", daemon=True)
        closer.start()
        _drain(self._ws)
        closer.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None,
    ) -> None:
        self.close()


def _drain(ws: ClientConnection) -> None:
    """Reads and drops messages until the connection closes (or another thread is reading)."""
    try:
        for _ in ws:
            pass
    except (ConnectionClosed, RuntimeError):  # RuntimeError: ConcurrencyError, websockets >= 14
        pass


class SerialConsole(_Console):
    """An open serial console: ``write`` types into the guest's serial port, ``read`` returns
    what it printed next (first the last 64 KiB of it)."""

    _PATH = "console"


class VncConsole(_Console):
    """An open graphical console: RFB bytes both ways with QEMU's VNC server (no VNC password:
    the API decided who connects). The first bytes are the server's ``RFB 003.008`` line."""

    _PATH = "vnc"


class _AsyncConsole:
    """A console for asyncio: ``await write``, ``await read``, ``async for``, ``async with``."""

    _PATH: ClassVar[Literal["console", "vnc"]]

    def __init__(self, ws: AsyncConnection) -> None:
        self._ws = ws

    @classmethod
    async def open(cls, origin: str, token: str | None, vm_id: str) -> Self:
        try:
            ws = await async_connect(console_url(origin, token, vm_id, cls._PATH), open_timeout=10, max_size=None)
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
        """Closes the console; output not read yet is dropped (see ``SerialConsole.close``)."""
        drainer = asyncio.create_task(_drain_async(self._ws))
        try:
            await self._ws.close()
        finally:
            drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drainer

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None,
    ) -> None:
        await self.close()


async def _drain_async(ws: AsyncConnection) -> None:
    """Reads and drops messages until the connection closes (or another task is reading)."""
    try:
        async for _ in ws:
            pass
    except (ConnectionClosed, RuntimeError):  # RuntimeError: ConcurrencyError, websockets >= 14
        pass


class AsyncSerialConsole(_AsyncConsole):
    """``SerialConsole`` for asyncio."""

    _PATH = "console"


class AsyncVncConsole(_AsyncConsole):
    """``VncConsole`` for asyncio."""

    _PATH = "vnc"
