"""Why: the one place requests are made (sync and async). It joins the base URL, sends the
token, gives every command (POST/PATCH/PUT/DELETE) an Idempotency-Key, retries 429 after
Retry-After (bounded), unwraps the ``{success, data}`` envelope and raises VoidVMError."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, cast

import httpx

from ._errors import VoidVMError

JSON = dict[str, Any]
COMMANDS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
RetryHook = Callable[[int, float, str, str], None]


class _Base:
    def __init__(
        self,
        base_url: str,
        token: str | None,
        max_retries: int,
        max_retry_delay: float,
        idempotency_keys: bool,
        on_retry: RetryHook | None,
    ) -> None:
        base = base_url.rstrip("/")
        self.api_base = base if base.endswith("/api/v1") else base + "/api/v1"
        self.token = token
        self.max_retries = max_retries
        self.max_retry_delay = max_retry_delay
        self.idempotency_keys = idempotency_keys
        self.on_retry = on_retry

    @property
    def origin(self) -> str:
        return self.api_base[: -len("/api/v1")]

    def _prepare(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any] | None,
        body: Any,
        if_match: int | None,
        idempotency_key: str | bool,
    ) -> tuple[str, dict[str, str], dict[str, str]]:
        url = self.api_base + path
        params = {k: _param(v) for k, v in (query or {}).items() if v is not None}
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if if_match is not None:
            headers["If-Match"] = f'"{if_match}"'
        if method in COMMANDS and idempotency_key is not False and self.idempotency_keys:
            headers["Idempotency-Key"] = (
                idempotency_key if isinstance(idempotency_key, str) else str(uuid.uuid4())
            )
        return url, params, headers

    def _retry_delay(self, res: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying a 429, or None to raise."""
        if res.status_code != 429 or attempt >= self.max_retries:
            return None
        try:
            delay = max(1.0, float(res.headers.get("Retry-After", "1")))
        except ValueError:
            delay = 1.0
        return delay if delay <= self.max_retry_delay else None

    @staticmethod
    def _answer(res: httpx.Response) -> Any:
        try:
            parsed: Any = res.json() if res.content else None
        except ValueError:
            parsed = None
        if res.is_success:
            return parsed
        err = parsed.get("error") if isinstance(parsed, dict) else None
        err = err if isinstance(err, dict) else {}
        raise VoidVMError(
            status=res.status_code,
            code=str(err.get("code") or f"HTTP_{res.status_code}"),
            message=str(err.get("message") or res.reason_phrase),
            details=str(err.get("details") or res.text),
            field=err.get("field") if isinstance(err.get("field"), str) else None,
            request_id=res.headers.get("X-Request-Id"),
        )


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _network_error(method: str, path: str, exc: Exception) -> VoidVMError:
    return VoidVMError(0, "NETWORK_ERROR", f"{method} {path} failed: {exc}")


class SyncTransport(_Base):
    def __init__(self, *args: Any, timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http = httpx.Client(timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content: bytes | None = None,
        if_match: int | None = None,
        idempotency_key: str | bool = True,
    ) -> Any:
        """Makes a request and answers the envelope's ``data`` (the whole body if it has none)."""
        url, params, headers = self._prepare(method, path, query, body, if_match, idempotency_key)
        if content is not None:
            headers["Content-Type"] = "application/octet-stream"
        for attempt in range(self.max_retries + 1):
            try:
                res = self.http.request(
                    method, url, params=params, headers=headers,
                    json=body if body is not None else None, content=content,
                )
            except httpx.HTTPError as exc:
                raise _network_error(method, path, exc) from exc
            delay = self._retry_delay(res, attempt)
            if delay is None:
                return _data(self._answer(res))
            if self.on_retry:
                self.on_retry(attempt + 1, delay, method, path)
            time.sleep(delay)
        raise AssertionError("unreachable")

    def obj(self, method: str, path: str, **kwargs: Any) -> JSON:
        """``request`` for an answer that is an object."""
        return cast(JSON, self.request(method, path, **kwargs))

    def items(self, method: str, path: str, **kwargs: Any) -> list[JSON]:
        """``request`` for an answer that is a list."""
        return cast(list[JSON], self.request(method, path, **kwargs))

    def close(self) -> None:
        self.http.close()


class AsyncTransport(_Base):
    def __init__(self, *args: Any, timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http = httpx.AsyncClient(timeout=timeout)

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content: bytes | None = None,
        if_match: int | None = None,
        idempotency_key: str | bool = True,
    ) -> Any:
        """Makes a request and answers the envelope's ``data`` (the whole body if it has none)."""
        url, params, headers = self._prepare(method, path, query, body, if_match, idempotency_key)
        if content is not None:
            headers["Content-Type"] = "application/octet-stream"
        for attempt in range(self.max_retries + 1):
            try:
                res = await self.http.request(
                    method, url, params=params, headers=headers,
                    json=body if body is not None else None, content=content,
                )
            except httpx.HTTPError as exc:
                raise _network_error(method, path, exc) from exc
            delay = self._retry_delay(res, attempt)
            if delay is None:
                return _data(self._answer(res))
            if self.on_retry:
                self.on_retry(attempt + 1, delay, method, path)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def obj(self, method: str, path: str, **kwargs: Any) -> JSON:
        """``request`` for an answer that is an object."""
        return cast(JSON, await self.request(method, path, **kwargs))

    async def items(self, method: str, path: str, **kwargs: Any) -> list[JSON]:
        """``request`` for an answer that is a list."""
        return cast(list[JSON], await self.request(method, path, **kwargs))

    async def close(self) -> None:
        await self.http.aclose()


def _data(body: Any) -> Any:
    if isinstance(body, dict) and "data" in body:
        return body["data"]
    return body
