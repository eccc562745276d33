"""Why: ``client.images`` (import with progress, upload, list, get, delete) and
``vms.attach_iso``/``detach_iso`` against the live server, blocking and asyncio, with the
import's events on the ``images`` feed topic."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import os
import threading
from collections.abc import Iterator

import pytest

from conftest import API, remove_vm, unique
from voidvm import AsyncVoidVMClient, VoidVMClient, VoidVMError


@pytest.fixture
def served() -> Iterator[tuple[str, bytes]]:
    """An HTTP server on a free loopback port answering every GET with the same bytes: random,
    but an ISO as the server reads one (an ISO 9660 volume descriptor at sector 16)."""
    raw = bytearray(os.urandom(300 * 1024))
    raw[32769:32774] = b"CD001"
    content = bytes(raw)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/image.iso", content
    finally:
        server.shutdown()
        server.server_close()


def test_images_import_upload_iso_and_delete(admin: VoidVMClient, served: tuple[str, bytes]) -> None:
    url, content = served
    digest = hashlib.sha256(content).hexdigest()
    imported, uploaded = unique("py-iso"), unique("py-up")
    since = max((e["position"] for e in admin.events.iterate(limit=100)), default=0)

    accepted = admin.images.import_({"name": imported, "url": url, "kind": "iso", "sha256": digest})
    assert accepted["status"] == "importing"
    job = admin.jobs.wait(accepted["job"]["id"], timeout=60)
    assert (job["status"], job["image"]) == ("succeeded", imported)
    assert job["progress"]["bytesDone"] == len(content)
    ready = admin.images.get(imported)
    assert (ready["status"], ready["kind"], ready["sha256"]) == ("ready", "iso", digest)

    types = []
    for frame in admin.feed.subscribe("images", since=since):
        data = frame["data"]
        if frame["type"] != "image-event" or data["streamId"] != imported:
            continue
        types.append(data["type"])
        if data["type"] == "ImageImported":
            break
    assert types[0] == "ImageImportRequested" and "ImageImportProgressed" in types, types

    up = admin.images.upload(uploaded, content, kind="iso", sha256=digest)
    assert (up["status"], up["source"]) == ("ready", "upload")
    names = [i["name"] for i in admin.images.list()]
    assert {"busybox", imported, uploaded} <= set(names), names

    vm = admin.vms.create({"name": unique("py-iso-vm"), "cpu": 1, "memory": 128, "disk": 1, "os": "busybox"}, wait=True)
    try:
        assert admin.vms.attach_iso(vm["id"], imported, wait=True)["status"] == "succeeded"
        assert admin.vms.get(vm["id"])["iso"] == imported
        assert admin.vms.detach_iso(vm["id"], wait=True)["status"] == "succeeded"
        assert admin.vms.get(vm["id"]).get("iso") is None
    finally:
        remove_vm(admin, vm["id"])

    admin.images.delete(uploaded)
    with pytest.raises(VoidVMError) as info:
        admin.images.get(uploaded)
    assert (info.value.status, info.value.code) == (404, "IMAGE_NOT_FOUND")

    async def the_async_client() -> None:
        async with await AsyncVoidVMClient.login(API, "admin", "admin123") as client:
            image = await client.images.get(imported)
            assert image["name"] == imported
            await client.images.delete(imported)
            assert imported not in [i["name"] for i in await client.images.list()]

    asyncio.run(the_async_client())
