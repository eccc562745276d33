"""Why: one error type for everything the API refuses (its error envelope plus the HTTP status)."""

from __future__ import annotations


class VoidVMError(Exception):
    """An error answer of the VoidVM API, or a failure to reach it (``status`` 0)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: str = "",
        field: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.field = field
        self.request_id = request_id
