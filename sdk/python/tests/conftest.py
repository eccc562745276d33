"""Why: what the live tests share: the server under test (SDK_TEST_API, set by
scripts/test-sdks.sh), an admin client, restarting that server, VM clean-up, and the early
opening of user ``ratelimited``'s one-minute window (test_z_rate_limit.py uses it)."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from voidvm import VoidVMClient, VoidVMError

API = os.environ.get("SDK_TEST_API", "http://127.0.0.1:3000/api/v1")
RL_USER = "ratelimited"
RL_PASSWORD = "ratelimited-pass-1"


def admin_client() -> VoidVMClient:
    return VoidVMClient.login(API, "admin", "admin123")


def restart_server() -> None:
    """Kills the server and starts it again on the same database and port."""
    subprocess.run(os.environ["SDK_TEST_RESTART"], shell=True, check=True)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def remove_vm(client: VoidVMClient, vm_id: str) -> None:
    """Stops (forced) and deletes a VM whatever its state; one already gone is fine."""
    try:
        vm = client.vms.get(vm_id)
        if vm.get("pendingJobId"):
            client.jobs.wait(vm["pendingJobId"], timeout=60)
        now = client.vms.get(vm_id)["status"]
        if now not in ("stopped", "error", "crashed", "deleted", "deleting"):
            client.vms.stop(vm_id, force=True, wait=True, wait_timeout=60)
        if now not in ("deleted", "deleting"):
            client.vms.delete(vm_id, wait=True, wait_timeout=60)
    except VoidVMError as e:
        if e.code != "VM_NOT_FOUND":
            raise


@pytest.fixture
def admin() -> Iterator[VoidVMClient]:
    client = admin_client()
    yield client
    client.close()


@pytest.fixture(scope="session", autouse=True)
def open_rate_limit_window() -> None:
    """User ``ratelimited`` makes its first request now: its window opens at the session start."""
    a = admin_client()
    try:
        a.users.create({"username": RL_USER, "password": RL_PASSWORD, "role": "viewer"})
    except VoidVMError as e:
        if e.code != "USERNAME_TAKEN":
            raise
    with VoidVMClient.login(API, RL_USER, RL_PASSWORD) as rl:
        rl.auth.me()
    a.close()
