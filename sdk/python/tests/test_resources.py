"""Why: every resource method of the Python SDK, at least once each, against the live server,
asserting on its answer; plus VoidVMError (VM_NOT_FOUND), the Idempotency-Key replay and the
asyncio client."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from conftest import API, remove_vm, unique
from voidvm import AsyncVoidVMClient, VoidVMClient, VoidVMError


def test_auth_me(admin: VoidVMClient) -> None:
    me = admin.auth.me()
    assert me["username"] == "admin"
    assert me["permissions"] == ["*"]


def test_a_missing_vm_raises_vm_not_found(admin: VoidVMClient) -> None:
    with pytest.raises(VoidVMError) as info:
        admin.vms.get("vm-does-not-exist")
    assert info.value.status == 404
    assert info.value.code == "VM_NOT_FOUND"
    assert "vm-does-not-exist" in info.value.details


def test_vm_lifecycle_jobs_events_history(admin: VoidVMClient) -> None:
    created = admin.vms.create({"name": unique("py-life"), "cpu": 1, "memory": 128, "disk": 1, "os": "busybox"})
    try:
        assert created["status"] == "creating"
        provisioned = admin.jobs.wait(created["jobId"], timeout=60)
        assert provisioned["finished"] is True and provisioned["status"] == "succeeded"
        assert any(vm["id"] == created["id"] for vm in admin.vms.list(limit=100)["items"])
        assert admin.vms.get(created["id"])["status"] == "stopped"
        patched = admin.vms.update(created["id"], {"description": "from the Python SDK"})
        assert patched["vm"]["description"] == "from the Python SDK"

        started = admin.vms.start(created["id"], wait=True)
        assert (started["kind"], started["status"]) == ("start", "succeeded")
        assert admin.vms.get(created["id"])["status"] == "running"
        assert admin.vms.pause(created["id"], wait=True)["status"] == "succeeded"
        assert admin.vms.get(created["id"])["status"] == "paused"
        assert admin.vms.resume(created["id"], wait=True)["status"] == "succeeded"
        assert admin.vms.restart(created["id"], wait=True)["status"] == "succeeded"
        assert admin.vms.reset(created["id"], wait=True)["status"] == "succeeded"

        # The SDK's key is one per call; the same key sent twice replays the first answer.
        key = str(uuid.uuid4())
        first = admin.transport.obj("POST", f"/vms/{created['id']}/stop", body={"force": True}, idempotency_key=key)
        again = admin.transport.obj("POST", f"/vms/{created['id']}/stop", body={"force": True}, idempotency_key=key)
        assert again["jobId"] == first["jobId"]
        assert admin.jobs.get(first["jobId"])["kind"] == "stop"
        assert admin.jobs.wait(first["jobId"], timeout=60)["status"] == "succeeded"
        assert len(admin.jobs.list(vmId=created["id"])["items"]) >= 7
        with pytest.raises(VoidVMError) as info:
            admin.jobs.cancel(first["jobId"])
        assert info.value.code == "JOB_NOT_CANCELLABLE"

        events = admin.vms.events(created["id"], limit=3)
        assert events["items"][0]["type"] == "VmCreated"
        rest = admin.vms.events(created["id"], after=events["next"])
        assert all(e["sequence"] > events["items"][2]["sequence"] for e in rest["items"])
        history = admin.vms.history(created["id"], at=2)
        assert history["state"]["status"] == "stopped"

        deleted = admin.vms.delete(created["id"], wait=True)
        assert (deleted["kind"], deleted["status"]) == ("delete", "succeeded")
    finally:
        remove_vm(admin, created["id"])


def test_events_paged_with_the_cursor(admin: VoidVMClient) -> None:
    first = admin.events.list(streamType="vm", limit=2)
    assert len(first["items"]) == 2 and first["hasMore"]
    second = admin.events.list(streamType="vm", limit=2, after=first["next"])
    assert second["items"][0]["position"] > first["items"][1]["position"]
    positions = [e["position"] for e in admin.events.iterate(streamType="vm", limit=5)]
    assert len(positions) > 4 and positions == sorted(set(positions))


def test_logs(admin: VoidVMClient) -> None:
    logs = admin.logs.list(limit=5)
    assert logs["items"] and isinstance(logs["items"][0]["message"], str)


def test_users_with_transfer_to(admin: VoidVMClient) -> None:
    username, password = unique("py-user"), "a-good-password-1"
    user = admin.users.create({"username": username, "password": password, "role": "user"})
    assert (user["username"], user["role"]) == (username, "user")
    assert admin.users.get(user["id"])["username"] == username
    assert any(u["id"] == user["id"] for u in admin.users.list(limit=100)["items"])
    changed = admin.users.update(user["id"], {"rateLimit": 500})
    assert changed["rateLimit"] == 500
    with VoidVMClient.login(API, username, password) as u:
        vm = u.vms.create({"name": "owned", "cpu": 1, "memory": 128, "disk": 1, "os": "busybox"}, wait=True)
    try:
        with pytest.raises(VoidVMError) as info:
            admin.users.delete(user["id"])
        assert info.value.code == "USER_HAS_VMS"
        admin.users.delete(user["id"], transfer_to="admin")
        with pytest.raises(VoidVMError):
            admin.users.get(user["id"])
        assert admin.vms.get(vm["id"])["owner"] == "admin"
    finally:
        remove_vm(admin, vm["id"])


def test_roles(admin: VoidVMClient) -> None:
    assert any(p["id"] == "vm:read" for p in admin.roles.permissions())
    assert {"admin", "user", "viewer"} <= {r["id"] for r in admin.roles.list()}
    role_id = unique("py-role")
    role = admin.roles.create({"id": role_id, "name": "Auditor", "permissions": ["vm:read"], "scope": "all"})
    assert role["id"] == role_id and role["builtIn"] is False
    assert admin.roles.update(role_id, {"permissions": ["vm:read", "event:read"]})["permissions"] == ["vm:read", "event:read"]
    admin.roles.delete(role_id)
    assert role_id not in {r["id"] for r in admin.roles.list()}


def test_config(admin: VoidVMClient) -> None:
    before = admin.config.get()
    assert admin.config.update({"system": {"maxVmsPerUser": 7}})["system"]["maxVmsPerUser"] == 7
    back = admin.config.update({"system": {"maxVmsPerUser": None}})
    assert back["system"]["maxVmsPerUser"] == before["system"]["maxVmsPerUser"]


def test_system(admin: VoidVMClient) -> None:
    assert admin.system.info()["apiVersion"] == "1.0.0"
    assert isinstance(admin.system.stats(period="1h")["vms"]["total"], int)


def test_the_async_client() -> None:
    async def run() -> None:
        async with await AsyncVoidVMClient.login(API, "admin", "admin123") as a:
            with pytest.raises(VoidVMError) as info:
                await a.vms.get("vm-nope")
            assert info.value.code == "VM_NOT_FOUND"
            vm = await a.vms.create({"name": unique("py-async"), "cpu": 1, "memory": 128, "disk": 1, "os": "busybox"})
            job = await a.vms.delete(vm["id"], wait=True)  # waits out the provisioning (VM_BUSY)
            assert job["status"] == "succeeded"
            assert (await a.system.info())["apiVersion"] == "1.0.0"
            frames = []
            async for frame in a.feed.subscribe("vm-status", vm_id=vm["id"], since=0):
                frames.append(frame["data"]["type"])
                if frame["data"]["type"] == "VmDeleted":
                    break
            assert frames[0] == "VmCreated"

    asyncio.run(run())
