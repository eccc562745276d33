"""Why: how a webhook receiver knows a delivery came from VoidVM and is fresh (the server's
src/webhooks/signature.rs): ``X-VoidVM-Signature: sha256=<hex>`` is the HMAC-SHA256, keyed with
the webhook's secret, of ``b"<X-VoidVM-Timestamp>.<raw body>"``."""

from __future__ import annotations

import hashlib
import hmac
import re
import time

_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
_TIMESTAMP = re.compile(r"[0-9]{1,15}")


def verify_webhook_signature(
    secret: str,
    timestamp: str | int | None,
    body: bytes,
    signature: str | None,
    tolerance_seconds: float = 300,
    now: float | None = None,
) -> bool:
    """Whether a delivery is signed with ``secret`` and its timestamp is within
    ``tolerance_seconds`` of ``now`` (Unix seconds, default the clock).

    ``timestamp`` and ``signature`` are the ``X-VoidVM-Timestamp`` and ``X-VoidVM-Signature``
    headers (None when missing); ``body`` is the raw request body, byte for byte as received.
    A replayed request keeps its old timestamp, which the signature covers, so a stale one is
    refused. Compares in constant time."""
    if signature is None or timestamp is None or isinstance(timestamp, bool):
        return False
    ts = str(timestamp).strip()
    if not _TIMESTAMP.fullmatch(ts):
        return False
    current = time.time() if now is None else now
    if not abs(current - int(ts)) <= tolerance_seconds:
        return False
    given = _SIGNATURE.fullmatch(signature.strip())
    if given is None:
        return False
    expected = hmac.new(secret.encode(), ts.encode() + b"." + bytes(body), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given.group(1).lower())
