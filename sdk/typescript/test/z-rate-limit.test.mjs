// Why: a 429 is retried after its Retry-After. User `ratelimited` (made by 0-seed, whose first
// request opened its one-minute window) gets a budget of 2 requests a minute through
// PUT /users/{id}; its third request is refused and the SDK retries it once the window resets.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { VoidVMClient } from '@void-vm/sdk'
import { API, admin, RL_PASSWORD, RL_USER } from './helpers.mjs'

test('a 429 is retried after Retry-After', { timeout: 150_000 }, async () => {
  const a = await admin()
  const user = (await a.users.list({ limit: 100 })).items.find((u) => u.username === RL_USER)
  assert.ok(user, 'user ratelimited exists')
  const retries = []
  const rl = await VoidVMClient.login({
    baseURL: API,
    username: RL_USER,
    password: RL_PASSWORD,
    onRetry: (info) => retries.push(info),
  })
  assert.equal((await a.users.update(user.id, { rateLimit: 2 })).rateLimit, 2)
  for (let i = 0; i < 3; i++) {
    const me = await rl.auth.me()
    assert.equal(me.username, RL_USER)
  }
  assert.ok(retries.length >= 1, 'at least one 429 was retried')
  assert.ok(retries.every((r) => r.delayMs >= 1000 && r.delayMs <= 61_000))
})
