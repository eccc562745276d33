"""Why: ``vms.console`` (blocking and asyncio) against the live server and the real test guest:
a stopped VM's console is refused with the API's own error; a running one's shell answers what
is typed into it (an answer the guest computes, so the echo of the typed line never counts);
closing it leaves the guest running, and the server answered the close with 1000."""

from __future__ import annotations

import asyncio
import time

import pytest

from conftest import API, remove_vm, unique
from voidvm import AsyncSerialConsole, AsyncVoidVMClient, SerialConsole, VoidVMClient, VoidVMError

LINE = 'echo "PY""-CONSOLE-$((6*7))"\n'
ANSWER = "PY-CONSOLE-42"


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


def test_console_is_refused_while_stopped_and_answers_once_running(admin: VoidVMClient) -> None:
    vm = admin.vms.create({"name": unique("py-console"), "cpu": 1, "memory": 128, "disk": 1, "os": "busybox"}, wait=True)
    try:
        with pytest.raises(VoidVMError) as info:
            admin.vms.console(vm["id"])
        assert (info.value.status, info.value.code) == (409, "VM_NOT_RUNNING")

        admin.vms.start(vm["id"], wait=True)
        with admin.vms.console(vm["id"]) as console:
            ask(console, time.monotonic() + 180)
        assert console.close_code == 1000
        with pytest.raises(VoidVMError) as closed:
            console.write("too late\n")
        assert closed.value.code == "CONSOLE_CLOSED"

        async def the_async_client() -> None:
            async with await AsyncVoidVMClient.login(API, "admin", "admin123") as client:
                async with await client.vms.console(vm["id"]) as console:
                    await ask_async(console, time.monotonic() + 120)
                assert console.close_code == 1000

        asyncio.run(the_async_client())
        assert admin.vms.get(vm["id"])["status"] == "running"
    finally:
        remove_vm(admin, vm["id"])
