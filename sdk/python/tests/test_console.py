"""Why: ``vms.console`` and ``vms.vnc`` (blocking and asyncio) against the live server and the real
test guest: a stopped VM's consoles are refused with the API's own error; a running one's shell
answers what is typed into it (an answer the guest computes, so the echo of the typed line never
counts); its graphical console speaks RFB through to QEMU's framebuffer; closing either leaves the
guest running, and the server answered the close with 1000."""

from __future__ import annotations

import asyncio
import struct
import time

import pytest

from conftest import API, remove_vm, unique
from voidvm import (
    AsyncSerialConsole,
    AsyncVncConsole,
    AsyncVoidVMClient,
    SerialConsole,
    VncConsole,
    VoidVMClient,
    VoidVMError,
)

LINE = 'echo "PY""-CONSOLE-$((6*7))"\n'
ANSWER = "PY-CONSOLE-42"
# Many lines a little apart, so many messages, none of them read before the console closes.
FLOOD = 'i=0; while [ $i -lt 60 ]; do echo "PY-FLOOD-$i"; i=$((i+1)); sleep 0.05; done\n'
FLOOD_SECONDS = 6


def ask(console: SerialConsole, deadline: float) -> str:
    seen = ""
    typed_at = 0.0
    while ANSWER not in seen:
        assert time.monotonic() < deadline, f"the guest never answered; the console showed:\n{seen}"
        if time.monotonic() - typed_at > 3:  # again: the shell may not be up yet
            console.write(LINE)
            typed_at = time.monotonic()
        chunk = console.read(timeout=0.5)
        if chunk is not None:
            seen += chunk.decode(errors="replace")
    return seen


async def ask_async(console: AsyncSerialConsole, deadline: float) -> str:
    seen = ""
    typed_at = 0.0
    while ANSWER not in seen:
        assert time.monotonic() < deadline, f"the guest never answered; the console showed:\n{seen}"
        if time.monotonic() - typed_at > 3:
            await console.write(LINE)
            typed_at = time.monotonic()
        chunk = await console.read(timeout=0.5)
        if chunk is not None:
            seen += chunk.decode(errors="replace")
    return seen


class Rfb:
    """Exact byte counts from a graphical console, whatever the frames' boundaries."""

    def __init__(self, console: VncConsole) -> None:
        self.console = console
        self.buffered = b""

    def take(self, n: int) -> bytes:
        deadline = time.monotonic() + 30
        while len(self.buffered) < n:
            assert time.monotonic() < deadline, f"waited 30 s for {n} bytes"
            chunk = self.console.read(timeout=1)
            if chunk is not None:
                self.buffered += chunk
        taken, self.buffered = self.buffered[:n], self.buffered[n:]
        return taken


def handshake(console: VncConsole) -> tuple[int, int]:
    """An RFB 3.8 handshake with no security; the framebuffer's width and height."""
    rfb = Rfb(console)
    assert rfb.take(12) == b"RFB 003.008\n"
    console.write(b"RFB 003.008\n")
    types = rfb.take(rfb.take(1)[0])
    assert 1 in types, f"the server offers no 'None' security type: {list(types)}"
    console.write(bytes([1]))
    assert rfb.take(4) == b"\0\0\0\0", "the security handshake failed"
    console.write(bytes([1]))  # ClientInit, shared
    width, height = struct.unpack(">HH", rfb.take(4))
    name_length = struct.unpack(">I", rfb.take(20)[16:])[0]
    assert rfb.take(name_length), "the desktop has no name"
    return width, height


async def handshake_async(console: AsyncVncConsole) -> bytes:
    """The server's version line and the security types it offers, read with asyncio."""
    seen = b""
    deadline = time.monotonic() + 30
    while len(seen) < 12:
        assert time.monotonic() < deadline, f"the server's version never came: {seen!r}"
        seen += await console.read(timeout=1) or b""
    await console.write(seen[:12])
    return seen


def test_console_is_refused_while_stopped_and_answers_once_running(admin: VoidVMClient) -> None:
    vm = admin.vms.create({"name": unique("py-console"), "cpu": 1, "memory": 128, "disk": 1, "os": "busybox"}, wait=True)
    try:
        with pytest.raises(VoidVMError) as info:
            admin.vms.console(vm["id"])
        assert (info.value.status, info.value.code) == (409, "VM_NOT_RUNNING")
        with pytest.raises(VoidVMError) as info:
            admin.vms.vnc(vm["id"])
        assert (info.value.status, info.value.code) == (409, "VM_NOT_RUNNING")

        admin.vms.start(vm["id"], wait=True)
        with admin.vms.console(vm["id"]) as console:
            ask(console, time.monotonic() + 180)
            # Output left unread when the console closes (more messages than websockets queues
            # before it stops reading) does not keep the close from completing.
            console.write(FLOOD)
            time.sleep(FLOOD_SECONDS)
        assert console.close_code == 1000
        with pytest.raises(VoidVMError) as closed:
            console.write("too late\n")
        assert closed.value.code == "CONSOLE_CLOSED"

        with admin.vms.vnc(vm["id"]) as vnc:
            width, height = handshake(vnc)
        assert width >= 320 and height >= 200, f"a framebuffer of {width}x{height}"
        assert vnc.close_code == 1000

        async def the_async_client() -> None:
            async with await AsyncVoidVMClient.login(API, "admin", "admin123") as client:
                async with await client.vms.console(vm["id"]) as console:
                    await ask_async(console, time.monotonic() + 120)
                    await console.write(FLOOD)
                    await asyncio.sleep(FLOOD_SECONDS)
                assert console.close_code == 1000
                async with await client.vms.vnc(vm["id"]) as graphical:
                    assert (await handshake_async(graphical)).startswith(b"RFB 003.008\n")
                assert graphical.close_code == 1000

        asyncio.run(the_async_client())
        assert admin.vms.get(vm["id"])["status"] == "running"
    finally:
        remove_vm(admin, vm["id"])
