"""Why: ``client.webhooks`` (sync and asyncio) against the live server (every method,
VALIDATION_ERROR on a bad url, WEBHOOK_NOT_FOUND after delete), ``verify_webhook_signature``
against the server's own test vector, and a real delivery: an ``http.server`` receiver gets
VmCreated for a new VM, signed with the webhook's secret."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

import pytest

from conftest import API, remove_vm, unique
from voidvm import AsyncVoidVMClient, VoidVMClient, VoidVMError, verify_webhook_signature

T = TypeVar("T")


def until(what: str, probe: Callable[[], T | None], seconds: float = 60) -> T:
    """Polls ``probe`` until it answers something truthy; fails after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def drop_hook(client: VoidVMClient, webhook_id: str) -> None:
    try:
        client.webhooks.delete(webhook_id)
    except VoidVMError as e:
        if e.code != "WEBHOOK_NOT_FOUND":
            raise


# src/webhooks/signature.rs: sign("key", 1700000000, b'{"a":1}').
VECTOR = "sha256=a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03"


def test_verify_webhook_signature_vector_tampering_and_staleness() -> None:
    ts, body, now = "1700000000", b'{"a":1}', 1_700_000_000
    assert verify_webhook_signature("key", ts, body, VECTOR, now=now)
    assert verify_webhook_signature("key", 1_700_000_000, body, VECTOR, now=now)
    assert not verify_webhook_signature("key", ts, b'{"a":2}', VECTOR, now=now)
    assert not verify_webhook_signature("kez", ts, body, VECTOR, now=now)
    assert not verify_webhook_signature("key", ts, body, VECTOR[:-2], now=now)
    assert not verify_webhook_signature("key", ts, body, VECTOR.replace("sha256=", "sha1="), now=now)
    assert not verify_webhook_signature("key", ts, body, None, now=now)
    assert not verify_webhook_signature("key", None, body, VECTOR, now=now)
    # The timestamp is signed: another one fails even within the tolerance.
    assert not verify_webhook_signature("key", "1700000001", body, VECTOR, now=now + 1)
    # Stale (or from the future) beyond the tolerance: refused though the signature is right.
    assert verify_webhook_signature("key", ts, body, VECTOR, now=now + 300)
    assert not verify_webhook_signature("key", ts, body, VECTOR, now=now + 301)
    assert not verify_webhook_signature("key", ts, body, VECTOR, now=now - 301)
    assert verify_webhook_signature("key", ts, body, VECTOR, tolerance_seconds=900, now=now + 900)
    assert not verify_webhook_signature("key", ts, body, VECTOR)  # the clock: 2023 is stale


def test_webhooks_create_list_get_update_deliveries_delete(admin: VoidVMClient) -> None:
    created = admin.webhooks.create({"url": "http://127.0.0.1:9/hooks/py", "events": ["VmStarted", "VmStopped"]})
    try:
        assert created["url"] == "http://127.0.0.1:9/hooks/py"
        assert created["events"] == ["VmStarted", "VmStopped"]
        assert created["active"] is True
        assert created["owner"] == admin.auth.me()["id"]
        assert created["deliveries"] == {"pending": 0, "delivered": 0, "failed": 0}
        assert isinstance(created["secret"], str) and len(created["secret"]) >= 16

        assert any(w["id"] == created["id"] for w in admin.webhooks.list())
        got = admin.webhooks.get(created["id"])
        assert got["url"] == created["url"]
        assert "secret" not in got

        changed = admin.webhooks.update(created["id"], {"events": ["*"], "active": False})
        assert (changed["events"], changed["active"]) == (["*"], False)
        assert changed["version"] > created["version"]
        assert "secret" not in changed
        secret = "a-secret-of-the-test-1234"
        assert admin.webhooks.update(created["id"], {"secret": secret})["secret"] == secret

        page = admin.webhooks.deliveries(created["id"], page=1, limit=5, status="failed")
        assert page["items"] == []
        assert (page["pagination"]["limit"], page["pagination"]["total"]) == (5, 0)

        admin.webhooks.delete(created["id"])
        assert all(w["id"] != created["id"] for w in admin.webhooks.list())
        with pytest.raises(VoidVMError) as info:
            admin.webhooks.get(created["id"])
        assert (info.value.status, info.value.code) == (404, "WEBHOOK_NOT_FOUND")
    finally:
        drop_hook(admin, created["id"])


def test_webhooks_bad_url_or_status_is_a_validation_error(admin: VoidVMClient) -> None:
    with pytest.raises(VoidVMError) as info:
        admin.webhooks.create({"url": "ftp://example.test/hook", "events": ["*"]})
    assert (info.value.status, info.value.code, info.value.field) == (400, "VALIDATION_ERROR", "url")
    with pytest.raises(VoidVMError) as info:
        admin.webhooks.create({"url": "http://127.0.0.1:9/", "events": ["NoSuchEvent"]})
    assert (info.value.code, info.value.field) == ("VALIDATION_ERROR", "events")
    hook = admin.webhooks.create({"url": "http://127.0.0.1:9/", "events": ["*"], "active": False})
    try:
        with pytest.raises(VoidVMError) as info:
            admin.webhooks.deliveries(hook["id"], status="lost")
        assert (info.value.code, info.value.field) == ("VALIDATION_ERROR", "status")
    finally:
        drop_hook(admin, hook["id"])


def test_webhooks_with_the_async_client() -> None:
    async def run() -> None:
        async with await AsyncVoidVMClient.login(API, "admin", "admin123") as a:
            hook = await a.webhooks.create({"url": "http://127.0.0.1:9/async", "events": ["VmDeleted"], "active": False})
            try:
                assert isinstance(hook["secret"], str)
                assert any(w["id"] == hook["id"] for w in await a.webhooks.list())
                assert (await a.webhooks.get(hook["id"]))["events"] == ["VmDeleted"]
                assert (await a.webhooks.update(hook["id"], {"url": "http://127.0.0.1:9/other"}))["url"] == (
                    "http://127.0.0.1:9/other"
                )
                assert (await a.webhooks.deliveries(hook["id"], limit=1))["items"] == []
            finally:
                await a.webhooks.delete(hook["id"])
            with pytest.raises(VoidVMError) as info:
                await a.webhooks.get(hook["id"])
            assert info.value.code == "WEBHOOK_NOT_FOUND"

    asyncio.run(run())


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[Received]]]:
    """An HTTP server in a thread that records every POST and answers 204."""
    received: list[Received] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/voidvm", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_vm_created_is_delivered_signed(admin: VoidVMClient, receiver: tuple[str, list[Received]]) -> None:
    url, received = receiver
    secret = "py-receiver-secret-0123456789"
    hook = admin.webhooks.create({"url": url, "events": ["VmCreated"], "secret": secret})
    vm: dict[str, object] = {}
    try:
        assert hook["secret"] == secret
        vm = admin.vms.create({"name": unique("py-hook"), "cpu": 1, "memory": 128, "disk": 1, "os": "busybox"})

        def for_the_vm() -> Received | None:
            return next((r for r in list(received) if json.loads(r.body)["event"]["vmId"] == vm["id"]), None)

        delivery = until("the VmCreated delivery", for_the_vm)
        assert delivery.path == "/voidvm"
        assert delivery.headers["content-type"].startswith("application/json")
        assert delivery.headers["x-voidvm-event"] == "VmCreated"
        body = json.loads(delivery.body)
        assert (body["webhookId"], body["attempt"], body["event"]["type"]) == (hook["id"], 1, "VmCreated")
        assert str(body["id"]) == delivery.headers["x-voidvm-delivery"]
        assert str(body["event"]["position"]) == delivery.headers["x-voidvm-position"]

        ts, sig = delivery.headers["x-voidvm-timestamp"], delivery.headers["x-voidvm-signature"]
        assert sig.startswith("sha256=") and len(sig) == 7 + 64
        assert abs(int(ts) - time.time()) < 120
        assert verify_webhook_signature(secret, ts, delivery.body, sig)
        tampered = delivery.body.replace(b'"VmCreated"', b'"VmDeleted"')
        assert tampered != delivery.body
        assert not verify_webhook_signature(secret, ts, tampered, sig)
        assert not verify_webhook_signature(secret + "x", ts, delivery.body, sig)
        assert not verify_webhook_signature(secret, ts, delivery.body, sig, now=int(ts) + 301)

        # Only VmCreated was asked for; the webhook's deliveries show this one delivered (204).
        assert all(r.headers["x-voidvm-event"] == "VmCreated" for r in list(received))

        def shown() -> dict[str, object] | None:
            items = admin.webhooks.deliveries(hook["id"], status="delivered")["items"]
            return next((d for d in items if d["id"] == body["id"]), None)

        d = until("the delivery shown as delivered", shown)
        assert (d["vmId"], d["eventType"], d["responseStatus"], d["attempts"]) == (vm["id"], "VmCreated", 204, 1)
        assert admin.webhooks.get(hook["id"])["deliveries"]["delivered"] >= 1

        # Sent again on request: the same delivery, pending with a fresh count, then delivered.
        again = admin.webhooks.redeliver(hook["id"], int(str(d["id"])))
        assert (again["id"], again["status"], again["attempts"]) == (d["id"], "pending", 0)
        repeat = until(
            "the delivery sent again",
            lambda: [r for r in list(received) if r.headers["x-voidvm-delivery"] == str(d["id"])][1:],
        )
        assert json.loads(repeat[0].body)["attempt"] == 1
        with pytest.raises(VoidVMError) as info:
            admin.webhooks.redeliver(hook["id"], 999_999_999)
        assert (info.value.status, info.value.code) == (404, "DELIVERY_NOT_FOUND")
    finally:
        drop_hook(admin, hook["id"])
        if vm:
            remove_vm(admin, str(vm["id"]))
