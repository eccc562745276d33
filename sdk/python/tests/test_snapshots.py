"""Why: ``vms.snapshots``/``take_snapshot``/``restore_snapshot``/``delete_snapshot`` against the
live server on a stopped busybox VM (the qemu-img path), each change waited on as a job."""

from __future__ import annotations

import pytest

from conftest import remove_vm, unique
from voidvm import VoidVMClient, VoidVMError


def test_snapshots_take_list_restore_delete(admin: VoidVMClient) -> None:
    vm = admin.vms.create({"name": unique("py-snap"), "cpu": 1, "memory": 128, "disk": 1, "os": "busybox"}, wait=True)
    try:
        taken = admin.vms.take_snapshot(vm["id"], "first", description="from the SDK", wait=True)
        assert (taken["kind"], taken["status"]) == ("snapshot", "succeeded")
        listed = admin.vms.snapshots(vm["id"])
        assert [(s["name"], s["description"], s["memory"]) for s in listed] == [("first", "from the SDK", False)]
        with pytest.raises(VoidVMError) as info:
            admin.vms.take_snapshot(vm["id"], "first")
        assert info.value.code == "SNAPSHOT_EXISTS"
        assert admin.vms.restore_snapshot(vm["id"], "first", wait=True)["status"] == "succeeded"
        assert admin.vms.delete_snapshot(vm["id"], "first", wait=True)["status"] == "succeeded"
        assert admin.vms.snapshots(vm["id"]) == []
    finally:
        remove_vm(admin, vm["id"])
