"""Why: ``VoidVMClient``, the blocking client: every resource of the API as methods answering
the envelope's ``data`` as dicts, ``jobs.wait``, and the resuming feed iterator."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect

from ._common import (
    BUSY_RETRIES, JSON, POLL_SECS, JSONList, FeedState, backoff, fatal_close, feed_url, seg, settle_verdict, vm_path,
)
from ._console import SerialConsole, VncConsole
from ._errors import VoidVMError
from ._transport import RetryHook, SyncTransport


class Jobs:
    def __init__(self, t: SyncTransport) -> None:
        self._t = t

    def list(self, **query: Any) -> JSON:
        return self._t.obj("GET", "/jobs", query=query)

    def get(self, job_id: str) -> JSON:
        return self._t.obj("GET", f"/jobs/{seg(job_id)}")

    def cancel(self, job_id: str) -> JSON:
        return self._t.obj("POST", f"/jobs/{seg(job_id)}/cancel")

    def wait(self, job_id: str, timeout: float = 120) -> JSON:
        """Waits until the job ends or ``timeout`` seconds pass; answers it with ``finished``."""
        deadline = time.monotonic() + timeout
        while True:
            left = max(0, int(deadline - time.monotonic() + 0.999))
            job = self._t.obj(
                "GET", f"/jobs/{seg(job_id)}/wait", query={"timeout": min(left, POLL_SECS)}
            )
            if job.get("finished") or time.monotonic() >= deadline:
                return job

    def settle(self, job_id: str, timeout: float = 120) -> JSON:
        """Waits for the job; raises VoidVMError unless it succeeded."""
        return settle_verdict(job_id, self.wait(job_id, timeout))


class Vms:
    def __init__(self, t: SyncTransport, jobs: Jobs) -> None:
        self._t = t
        self._jobs = jobs

    def list(self, **query: Any) -> JSON:
        return self._t.obj("GET", "/vms", query=query)

    def get(self, vm_id: str) -> JSON:
        return self._t.obj("GET", vm_path(vm_id))

    def create(self, spec: JSON, *, wait: bool = False, wait_timeout: float = 120) -> JSON:
        """Creates a VM (status ``creating``); with ``wait``, answers once it is provisioned."""
        vm = self._t.obj("POST", "/vms", body=spec)
        if not wait:
            return vm
        self._jobs.settle(vm["jobId"], wait_timeout)
        return {**self.get(vm["id"]), "jobId": vm["jobId"]}

    def console(self, vm_id: str) -> SerialConsole:
        """Opens a running VM's serial console (needs ``vm:console``); use it in ``with``."""
        return SerialConsole.open(self._t.origin, self._t.token, vm_id)

    def vnc(self, vm_id: str) -> VncConsole:
        """Opens a running VM's graphical console, RFB bytes both ways with QEMU's VNC server
        (needs ``vm:console``); use it in ``with``."""
        return VncConsole.open(self._t.origin, self._t.token, vm_id)

    def update(self, vm_id: str, change: JSON, *, if_match: int | None = None) -> JSON:
        return self._t.obj("PATCH", vm_path(vm_id), body=change, if_match=if_match)

    def delete(self, vm_id: str, *, wait: bool = False, wait_timeout: float = 120, if_match: int | None = None) -> JSON:
        return self._command("DELETE", vm_path(vm_id), None, wait, wait_timeout, if_match)

    def start(self, vm_id: str, *, wait: bool = False, wait_timeout: float = 120, if_match: int | None = None) -> JSON:
        return self._command("POST", vm_path(vm_id, "/start"), None, wait, wait_timeout, if_match)

    def stop(
        self, vm_id: str, *, force: bool | None = None, timeout: int | None = None,
        wait: bool = False, wait_timeout: float = 120, if_match: int | None = None,
    ) -> JSON:
        """Stops the VM: ACPI powerdown, then quit after ``timeout`` seconds; ``force`` at once."""
        body = {k: v for k, v in {"force": force, "timeout": timeout}.items() if v is not None}
        return self._command("POST", vm_path(vm_id, "/stop"), body, wait, wait_timeout, if_match)

    def restart(self, vm_id: str, *, wait: bool = False, wait_timeout: float = 120, if_match: int | None = None) -> JSON:
        return self._command("POST", vm_path(vm_id, "/restart"), None, wait, wait_timeout, if_match)

    def pause(self, vm_id: str, *, wait: bool = False, wait_timeout: float = 120, if_match: int | None = None) -> JSON:
        return self._command("POST", vm_path(vm_id, "/pause"), None, wait, wait_timeout, if_match)

    def resume(self, vm_id: str, *, wait: bool = False, wait_timeout: float = 120, if_match: int | None = None) -> JSON:
        return self._command("POST", vm_path(vm_id, "/resume"), None, wait, wait_timeout, if_match)

    def reset(self, vm_id: str, *, wait: bool = False, wait_timeout: float = 120, if_match: int | None = None) -> JSON:
        return self._command("POST", vm_path(vm_id, "/reset"), None, wait, wait_timeout, if_match)

    def snapshots(self, vm_id: str) -> JSONList:
        """The VM's disk snapshots, oldest first."""
        return self._t.items("GET", vm_path(vm_id, "/snapshots"))

    def take_snapshot(
        self, vm_id: str, name: str, *, description: str | None = None, memory: bool | None = None,
        wait: bool = False, wait_timeout: float = 120, if_match: int | None = None,
    ) -> JSON:
        """Takes a snapshot (a job; ``memory`` needs a running VM)."""
        body = {k: v for k, v in {"name": name, "description": description, "memory": memory}.items() if v is not None}
        return self._command("POST", vm_path(vm_id, "/snapshots"), body, wait, wait_timeout, if_match)

    def restore_snapshot(
        self, vm_id: str, name: str, *, wait: bool = False, wait_timeout: float = 120, if_match: int | None = None,
    ) -> JSON:
        """Puts the VM back as snapshot ``name`` left it (a disk-only one needs a stopped VM)."""
        return self._command("POST", vm_path(vm_id, f"/snapshots/{seg(name)}/restore"), None, wait, wait_timeout, if_match)

    def delete_snapshot(
        self, vm_id: str, name: str, *, wait: bool = False, wait_timeout: float = 120, if_match: int | None = None,
    ) -> JSON:
        """Deletes snapshot ``name`` from the VM's disk."""
        return self._command("DELETE", vm_path(vm_id, f"/snapshots/{seg(name)}"), None, wait, wait_timeout, if_match)

    def attach_iso(
        self, vm_id: str, image: str, *, wait: bool = False, wait_timeout: float = 120, if_match: int | None = None,
    ) -> JSON:
        """Puts image ``image``'s ISO in the VM's CD-ROM (live on a running VM)."""
        return self._command("POST", vm_path(vm_id, "/iso"), {"image": image}, wait, wait_timeout, if_match)

    def detach_iso(self, vm_id: str, *, wait: bool = False, wait_timeout: float = 120, if_match: int | None = None) -> JSON:
        """Takes the ISO out of the VM's CD-ROM."""
        return self._command("DELETE", vm_path(vm_id, "/iso"), None, wait, wait_timeout, if_match)

    def events(self, vm_id: str, **query: Any) -> JSON:
        """The VM's own events, oldest first; ``after``/``next`` are sequence numbers."""
        return self._t.obj("GET", vm_path(vm_id, "/events"), query=query)

    def history(self, vm_id: str, at: int | str | None = None) -> JSON:
        """The VM as it was at a sequence number or RFC 3339 time."""
        return self._t.obj("GET", vm_path(vm_id, "/history"), query={"at": at})

    def _command(self, method: str, path: str, body: Any, wait: bool, wait_timeout: float, if_match: int | None) -> JSON:
        # One key for every try: a refused command records nothing, so a retry is decided again.
        key = str(uuid.uuid4())
        for busy in range(BUSY_RETRIES + 1):
            try:
                accepted = self._t.obj(method, path, body=body, if_match=if_match, idempotency_key=key)
                break
            except VoidVMError as e:
                # Busy with another job (e.g. start right after create): wait for it, send again.
                if e.code != "VM_BUSY" or busy >= BUSY_RETRIES:
                    raise
                pending = (self._t.obj("GET", "/".join(path.split("/")[:3]))).get("pendingJobId")
                if pending:
                    self._jobs.wait(pending, wait_timeout)
        if not wait:
            return accepted
        return self._jobs.settle(accepted["jobId"], wait_timeout)


class Images:
    """The image catalogue: an import downloads a URL as a job (``progress`` on the job,
    ``ImageImport*`` events on the ``images`` feed topic); an upload sends bytes."""

    def __init__(self, t: SyncTransport, jobs: Jobs) -> None:
        self._t = t
        self._jobs = jobs

    def list(self) -> JSONList:
        return self._t.items("GET", "/images")

    def get(self, name: str) -> JSON:
        return self._t.obj("GET", f"/images/{seg(name)}")

    def import_(self, spec: JSON, *, wait: bool = False, wait_timeout: float = 120) -> JSON:
        """Imports ``{name, url, kind, format?, sha256?}``: the image (``importing``) and its job;
        with ``wait``, the image once the import succeeded (``VoidVMError`` if it failed)."""
        accepted = self._t.obj("POST", "/images", body=spec)
        if not wait:
            return accepted
        self._jobs.settle(accepted["job"]["id"], wait_timeout)
        return self.get(spec["name"])

    def upload(
        self, name: str, content: bytes, *, kind: str, format: str | None = None, sha256: str | None = None,
    ) -> JSON:
        """Sends ``content`` as image ``name``; answers the installed image."""
        query = {"kind": kind, "format": format, "sha256": sha256}
        return self._t.obj("PUT", f"/images/{seg(name)}/upload", query=query, content=content)

    def delete(self, name: str) -> None:
        """Deletes the image and its files (409 ``IMAGE_IN_USE`` while a VM is made from it)."""
        self._t.request("DELETE", f"/images/{seg(name)}")


class Events:
    def __init__(self, t: SyncTransport) -> None:
        self._t = t

    def list(self, **query: Any) -> JSON:
        """One page, oldest first; pass the answer's ``next`` as ``after`` for the next page."""
        return self._t.obj("GET", "/events", query=query)

    def iterate(self, **query: Any) -> Iterator[JSON]:
        """Every event matching the query, following the cursor page by page."""
        while True:
            page = self.list(**query)
            yield from page["items"]
            if not page.get("hasMore") or page.get("next") is None:
                return
            query["after"] = page["next"]


class Logs:
    def __init__(self, t: SyncTransport) -> None:
        self._t = t

    def list(self, **query: Any) -> JSON:
        return self._t.obj("GET", "/logs", query=query)


class Auth:
    def __init__(self, t: SyncTransport) -> None:
        self._t = t

    def me(self) -> JSON:
        return self._t.obj("GET", "/auth/me")


class Users:
    def __init__(self, t: SyncTransport) -> None:
        self._t = t

    def list(self, **query: Any) -> JSON:
        return self._t.obj("GET", "/users", query=query)

    def get(self, user_id: str) -> JSON:
        return self._t.obj("GET", f"/users/{seg(user_id)}")

    def create(self, user: JSON) -> JSON:
        return self._t.obj("POST", "/users", body=user)

    def update(self, user_id: str, change: JSON) -> JSON:
        return self._t.obj("PUT", f"/users/{seg(user_id)}", body=change)

    def delete(self, user_id: str, *, transfer_to: str | None = None) -> JSON:
        """Deletes a user; one who owns VMs needs ``transfer_to`` (a user id or name)."""
        return self._t.obj("DELETE", f"/users/{seg(user_id)}", query={"transferTo": transfer_to})


class Roles:
    def __init__(self, t: SyncTransport) -> None:
        self._t = t

    def list(self) -> JSONList:
        return self._t.items("GET", "/roles")

    def create(self, role: JSON) -> JSON:
        return self._t.obj("POST", "/roles", body=role)

    def update(self, role_id: str, change: JSON) -> JSON:
        return self._t.obj("PUT", f"/roles/{seg(role_id)}", body=change)

    def delete(self, role_id: str) -> JSON:
        return self._t.obj("DELETE", f"/roles/{seg(role_id)}")

    def permissions(self) -> JSONList:
        """The permission catalog (``GET /permissions``)."""
        return self._t.items("GET", "/permissions")


class Config:
    def __init__(self, t: SyncTransport) -> None:
        self._t = t

    def get(self) -> JSON:
        return self._t.obj("GET", "/config")

    def update(self, change: JSON) -> JSON:
        """Sections with live fields: a number sets one, ``None`` returns it to the default."""
        return self._t.obj("PUT", "/config", body=change)


class System:
    def __init__(self, t: SyncTransport) -> None:
        self._t = t

    def info(self) -> JSON:
        return self._t.obj("GET", "/system/info")

    def stats(self, period: str | None = None) -> JSON:
        return self._t.obj("GET", "/system/stats", query={"period": period})


class Webhooks:
    """HTTP receivers of the event log; check their deliveries with ``verify_webhook_signature``."""

    def __init__(self, t: SyncTransport) -> None:
        self._t = t

    def list(self) -> JSONList:
        """The caller's webhooks (everyone's for a role with scope ``all``), oldest first."""
        return self._t.items("GET", "/webhooks")

    def get(self, webhook_id: str) -> JSON:
        return self._t.obj("GET", f"/webhooks/{seg(webhook_id)}")

    def create(self, webhook: JSON) -> JSON:
        """``{url, events: ["*"] | ["VmStarted", ...], secret?, active?}``; the answer carries
        the ``secret``, the only time it is shown."""
        return self._t.obj("POST", "/webhooks", body=webhook)

    def update(self, webhook_id: str, change: JSON) -> JSON:
        """Changes ``url``, ``events``, ``secret`` or ``active``; a new secret is shown once, here."""
        return self._t.obj("PATCH", f"/webhooks/{seg(webhook_id)}", body=change)

    def delete(self, webhook_id: str) -> JSON:
        """Deletes the webhook with its deliveries."""
        return self._t.obj("DELETE", f"/webhooks/{seg(webhook_id)}")

    def deliveries(
        self, webhook_id: str, *, page: int | None = None, limit: int | None = None, status: str | None = None,
    ) -> JSON:
        """A page of the webhook's deliveries, newest first; ``status``: pending, delivered or failed."""
        return self._t.obj(
            "GET", f"/webhooks/{seg(webhook_id)}/deliveries", query={"page": page, "limit": limit, "status": status}
        )

    def redeliver(self, webhook_id: str, delivery_id: int) -> JSON:
        """Sends a delivered or failed delivery again: pending at once, with its own id and a fresh
        set of attempts (409 ``DELIVERY_PENDING`` while it is still pending)."""
        return self._t.obj("POST", f"/webhooks/{seg(webhook_id)}/deliveries/{delivery_id}/redeliver")


class Feed:
    def __init__(self, t: SyncTransport) -> None:
        self._t = t

    def subscribe(
        self, topic: str, *, vm_id: str | None = None, since: int | None = None,
        interval: int | None = None, max_reconnects: int = 20,
    ) -> Iterator[JSON]:
        """Frames of one subscription, resuming after disconnects from the last position seen."""
        state = FeedState(topic, vm_id, since, interval)
        failures = 0
        while True:
            code: int | None = None
            reason: str | None = None
            try:
                with connect(feed_url(self._t.origin, self._t.token), open_timeout=10) as ws:
                    ws.send(state.subscribe_frame())
                    try:
                        for raw in ws:
                            frame, live = state.accept(raw)
                            if live:
                                failures = 0
                            if frame is not None:
                                yield frame
                    except ConnectionClosed as closed:
                        code, reason = _close_of(closed)
                    else:
                        code, reason = _close_of(None, ws.close_code, ws.close_reason)
            except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError):
                pass
            fatal = fatal_close(code, reason)
            if fatal:
                raise fatal
            failures += 1
            if failures > max_reconnects:
                raise VoidVMError(0, "NETWORK_ERROR", f"The feed could not reconnect after {max_reconnects} tries")
            time.sleep(backoff(failures))


def _close_of(closed: ConnectionClosed | None, code: int | None = None, reason: str | None = None) -> tuple[int | None, str | None]:
    if closed is not None and closed.rcvd is not None:
        return closed.rcvd.code, closed.rcvd.reason
    return code, reason


class VoidVMClient:
    """The blocking client: ``VoidVMClient(base_url=..., token=...)``."""

    def __init__(
        self, base_url: str, token: str | None = None, *, max_retries: int = 3,
        max_retry_delay: float = 65, idempotency_keys: bool = True,
        on_retry: RetryHook | None = None, timeout: float = 60,
    ) -> None:
        self.transport = SyncTransport(
            base_url, token, max_retries, max_retry_delay, idempotency_keys, on_retry, timeout=timeout
        )
        self.auth = Auth(self.transport)
        self.jobs = Jobs(self.transport)
        self.vms = Vms(self.transport, self.jobs)
        self.images = Images(self.transport, self.jobs)
        self.events = Events(self.transport)
        self.logs = Logs(self.transport)
        self.users = Users(self.transport)
        self.roles = Roles(self.transport)
        self.config = Config(self.transport)
        self.system = System(self.transport)
        self.webhooks = Webhooks(self.transport)
        self.feed = Feed(self.transport)

    @classmethod
    def login(cls, base_url: str, username: str, password: str, **options: Any) -> VoidVMClient:
        """Logs in and answers a client carrying the new token."""
        client = cls(base_url, **options)
        session = client.transport.obj(
            "POST", "/auth/login", body={"username": username, "password": password}, idempotency_key=False
        )
        client.transport.token = session["token"]
        return client

    @property
    def token(self) -> str | None:
        return self.transport.token

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> VoidVMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
