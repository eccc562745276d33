"""Why: the feed iterator resumes after the server is killed and started again: the positions
it yields rise strictly, none repeated and none missing compared with GET /events?streamType=vm."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from conftest import remove_vm, restart_server, unique
from voidvm import VoidVMClient


def test_the_feed_resumes_across_a_server_restart(admin: VoidVMClient) -> None:
    since = 0
    for e in admin.events.iterate(streamType="vm", limit=100):
        since = e["position"]
    vm = admin.vms.create({"name": unique("py-feed"), "cpu": 1, "memory": 128, "disk": 1, "os": "busybox"}, wait=True)
    feed: Iterator[dict[str, Any]] = admin.feed.subscribe("vm-status-all", since=since)
    seen: list[int] = []

    def latest() -> int:
        return int(admin.vms.events(vm["id"], limit=100)["items"][-1]["position"])

    def read_until(position: int) -> None:
        while not seen or seen[-1] < position:
            frame = next(feed)
            if isinstance(frame["data"].get("position"), int):
                seen.append(frame["data"]["position"])

    try:
        read_until(latest())
        admin.vms.update(vm["id"], {"description": "before the restart"})
        read_until(latest())
        restart_server()
        admin.vms.update(vm["id"], {"description": "after the restart 1"})
        admin.vms.update(vm["id"], {"description": "after the restart 2"})
        read_until(latest())
        admin.vms.update(vm["id"], {"description": "after the restart 3"})
        read_until(latest())
        logged = [
            e["position"] for e in admin.events.iterate(streamType="vm", after=since, limit=100)
            if e["position"] <= seen[-1]
        ]
        assert seen == sorted(set(seen)), seen
        assert seen == logged
        assert len(seen) >= 6
    finally:
        close = getattr(feed, "close", None)
        if close:
            close()
        remove_vm(admin, vm["id"])
