"""Why: a 429 is retried after its Retry-After. User ``ratelimited`` (whose window conftest opened
at the session start) gets a budget of 2 requests a minute through PUT /users/{id}; its third
request is refused and the SDK retries it once the window resets."""

from __future__ import annotations

from conftest import API, RL_PASSWORD, RL_USER
from voidvm import VoidVMClient


def test_a_429_is_retried_after_retry_after(admin: VoidVMClient) -> None:
    user = next(u for u in admin.users.list(limit=100)["items"] if u["username"] == RL_USER)
    retries: list[float] = []
    with VoidVMClient.login(
        API, RL_USER, RL_PASSWORD, on_retry=lambda attempt, delay, method, path: retries.append(delay)
    ) as rl:
        assert admin.users.update(user["id"], {"rateLimit": 2})["rateLimit"] == 2
        for _ in range(3):
            assert rl.auth.me()["username"] == RL_USER
    assert retries and all(1 <= d <= 61 for d in retries)
