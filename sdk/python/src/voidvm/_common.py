"""Why: what the sync and async clients share: paths, the wait budget and the verdict on a
finished job, and the feed's frame handling (resume position, duplicates, errors)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from ._errors import VoidVMError

JSON = dict[str, Any]
JSONList = list[JSON]
POLL_SECS = 30
BUSY_RETRIES = 3
"""Times a command refused with 409 ``VM_BUSY`` is sent again after the VM's pending job."""
"""Each long poll of ``/jobs/{id}/wait`` asks the server for at most this many seconds."""


def vm_path(vm_id: str, rest: str = "") -> str:
    return f"/vms/{quote(vm_id, safe='')}{rest}"


def seg(value: str) -> str:
    return quote(value, safe="")


def settle_verdict(job_id: str, job: JSON) -> JSON:
    """Answers a job that succeeded; raises for one that failed, was cancelled or is not done."""
    if job.get("status") == "succeeded":
        return job
    if not job.get("finished"):
        code, what = "TIMEOUT", "did not finish in time"
    elif job.get("status") == "cancelled":
        code, what = "JOB_CANCELLED", "was cancelled"
    else:
        code, what = "JOB_FAILED", "failed"
    raise VoidVMError(0, code, f"Job {job_id} ({job.get('kind')}) {what}", str(job.get("error") or ""))


@dataclass
class FeedState:
    """One subscription across reconnects: where to resume and what was already yielded."""

    topic: str
    vm_id: str | None
    last: int | None
    interval: int | None
    seq: int = 0
    sub_id: str = field(default="")

    def subscribe_frame(self) -> str:
        self.seq += 1
        self.sub_id = f"sub-{self.seq}"
        data: JSON = {"topic": self.topic}
        if self.vm_id is not None:
            data["vmId"] = self.vm_id
        if self.last is not None:
            data["since"] = self.last
        if self.interval is not None:
            data["interval"] = self.interval
        return json.dumps({"type": "subscribe", "id": self.sub_id, "data": data})

    def accept(self, raw: str | bytes) -> tuple[JSON | None, bool]:
        """Reads one server frame: (the frame to yield or None, whether the subscription is live)."""
        try:
            frame = json.loads(raw)
        except ValueError:
            return None, False
        if not isinstance(frame, dict):
            return None, False
        kind = frame.get("type")
        raw_data = frame.get("data")
        data: JSON = raw_data if isinstance(raw_data, dict) else {}
        if kind == "subscribed" and frame.get("id") == self.sub_id:
            if self.last is None and isinstance(data.get("position"), int):
                self.last = data["position"]
            return None, True
        if kind == "error":
            raise VoidVMError(
                0, str(data.get("code") or "FEED_ERROR"), str(data.get("message") or "feed error"),
                str(data.get("details") or ""), data.get("field") if isinstance(data.get("field"), str) else None,
            )
        if kind in ("pong", "authenticated", "unsubscribed"):
            return None, False
        pos = data.get("position")
        if isinstance(pos, int):
            if self.last is not None and pos <= self.last:
                return None, False  # already yielded before a reconnect
            self.last = pos
        return frame, False


def feed_url(origin: str, token: str | None) -> str:
    base = "ws" + origin[len("http"):] if origin.startswith("http") else origin
    return f"{base}/ws?token={quote(token or '', safe='')}"


def console_url(origin: str, token: str | None, vm_id: str, path: str) -> str:
    """The WebSocket URL of VM ``vm_id``'s console ``path`` (``console`` or ``vnc``)."""
    base = "ws" + origin[len("http"):] if origin.startswith("http") else origin
    return f"{base}/api/v1/vms/{quote(vm_id, safe='')}/{path}?token={quote(token or '', safe='')}"


def console_refusal(status: int, body: bytes | bytearray | None) -> VoidVMError:
    """The error a console upgrade refused with ``status`` and ``body`` (the API's envelope)."""
    try:
        error = json.loads(bytes(body or b""))["error"]
        return VoidVMError(
            status, str(error["code"]), str(error.get("message") or error["code"]),
            str(error.get("details") or ""), error.get("field"),
        )
    except (ValueError, KeyError, TypeError):
        return VoidVMError(status, "CONSOLE_REFUSED", f"The console was refused (HTTP {status})")


def console_closed(code: int | None, reason: str | None) -> VoidVMError:
    return VoidVMError(0, "CONSOLE_CLOSED", f"The console is closed ({code}{': ' + reason if reason else ''})")


def fatal_close(code: int | None, reason: str | None) -> VoidVMError | None:
    if code == 1008 and reason and "token" in reason:
        return VoidVMError(401, "UNAUTHORIZED", f"The feed was closed: {reason}")
    return None


def backoff(failures: int) -> float:
    return float(min(5.0, 0.1 * 2**failures))
