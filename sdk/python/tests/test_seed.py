"""Why: the seed page's Python snippet (api-index.zh.md, "SDK 和示例") must work as written: it
runs verbatim below, but for the host (base_url) and the token. Its VM is removed after."""

from __future__ import annotations

from conftest import API, admin_client, remove_vm


def test_the_seed_snippet_lists_creates_and_starts_a_vm() -> None:
    HOST_API = API
    TOKEN = admin_client().token

    # ---- the seed's snippet, verbatim but for base_url and token ----
    from voidvm import VoidVMClient

    client = VoidVMClient(
        base_url=HOST_API,
        token=TOKEN
    )

    # 获取虚拟机列表
    vms = client.vms.list()

    # 创建虚拟机
    new_vm = client.vms.create({
        'name': 'my-vm',
        'cpu': 2,
        'memory': 2048,
        'disk': 20
    })

    # 启动虚拟机
    client.vms.start(new_vm['id'])
    # ---- end of the snippet ----

    try:
        assert isinstance(vms["items"], list)
        assert isinstance(vms["pagination"]["total"], int)
        assert new_vm["id"].startswith("vm-")
        assert new_vm["status"] == "creating"
        assert client.vms.get(new_vm["id"])["os"] == "ubuntu20.04"
        jobs = client.jobs.list(vmId=new_vm["id"])
        assert any(j["kind"] == "start" for j in jobs["items"])
    finally:
        remove_vm(client, new_vm["id"])
