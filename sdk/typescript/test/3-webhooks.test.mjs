// Why: client.webhooks against the live server (every method, VALIDATION_ERROR on a bad url,
// WEBHOOK_NOT_FOUND after delete), verifyWebhookSignature against the server's own test vector,
// and a real delivery: a node:http receiver gets VmCreated for a new VM, signed with the secret.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import { VoidVMError, verifyWebhookSignature } from '@void-vm/sdk'
import { admin, removeVm, unique } from './helpers.mjs'

let a
const cleanups = []
before(async () => {
  a = await admin()
})
after(async () => {
  for (const f of cleanups.reverse()) await f()
})

/** Polls `probe` until it answers something truthy, or fails after `ms`. */
async function until(what, probe, ms = 60_000) {
  const deadline = Date.now() + ms
  for (;;) {
    const got = await probe()
    if (got) return got
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

const dropHook = (id) => async () => {
  try {
    await a.webhooks.delete(id)
  } catch (e) {
    if (!(e instanceof VoidVMError && e.code === 'WEBHOOK_NOT_FOUND')) throw e
  }
}

test('verifyWebhookSignature: the server test vector, tampering and stale timestamps', () => {
  // src/webhooks/signature.rs: sign("key", 1700000000, '{"a":1}').
  const ok = { secret: 'key', timestamp: '1700000000', body: '{"a":1}', now: 1_700_000_000 }
  const signature = 'sha256=a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03'
  assert.equal(verifyWebhookSignature({ ...ok, signature }), true)
  assert.equal(verifyWebhookSignature({ ...ok, signature, body: Buffer.from('{"a":1}') }), true)
  assert.equal(verifyWebhookSignature({ ...ok, signature, timestamp: 1_700_000_000 }), true)
  assert.equal(verifyWebhookSignature({ ...ok, signature, body: '{"a":2}' }), false)
  assert.equal(verifyWebhookSignature({ ...ok, signature, secret: 'kez' }), false)
  assert.equal(verifyWebhookSignature({ ...ok, signature: signature.toUpperCase() }), false)
  assert.equal(verifyWebhookSignature({ ...ok, signature: signature.slice(0, -2) }), false)
  assert.equal(verifyWebhookSignature({ ...ok, signature: undefined }), false)
  assert.equal(verifyWebhookSignature({ ...ok, signature, timestamp: undefined }), false)
  // The timestamp is signed: another one fails even within the tolerance.
  assert.equal(verifyWebhookSignature({ ...ok, signature, timestamp: '1700000001', now: 1_700_000_001 }), false)
  // Stale (or from the future) beyond the tolerance: refused though the signature is right.
  assert.equal(verifyWebhookSignature({ ...ok, signature, now: 1_700_000_300 }), true)
  assert.equal(verifyWebhookSignature({ ...ok, signature, now: 1_700_000_301 }), false)
  assert.equal(verifyWebhookSignature({ ...ok, signature, now: 1_699_999_699 }), false)
  assert.equal(verifyWebhookSignature({ ...ok, signature, now: 1_700_000_900, toleranceSeconds: 900 }), true)
  // The default clock: a 2023 timestamp is stale now.
  assert.equal(verifyWebhookSignature({ ...ok, now: undefined, signature }), false)
})

test('webhooks: create, list, get, update, deliveries, delete', async () => {
  const created = await a.webhooks.create({ url: 'http://127.0.0.1:9/hooks/ts', events: ['VmStarted', 'VmStopped'] })
  cleanups.push(dropHook(created.id))
  assert.equal(created.url, 'http://127.0.0.1:9/hooks/ts')
  assert.deepEqual(created.events, ['VmStarted', 'VmStopped'])
  assert.equal(created.active, true)
  assert.equal(created.owner, (await a.auth.me()).id)
  assert.deepEqual(created.deliveries, { pending: 0, delivered: 0, failed: 0 })
  assert.equal(typeof created.secret, 'string', 'the answer to POST carries the generated secret')
  assert.ok(created.secret.length >= 16)

  assert.ok((await a.webhooks.list()).some((w) => w.id === created.id))
  const got = await a.webhooks.get(created.id)
  assert.equal(got.url, created.url)
  assert.equal(got.secret, undefined, 'the secret is shown once')

  const changed = await a.webhooks.update(created.id, { events: ['*'], active: false })
  assert.deepEqual(changed.events, ['*'])
  assert.equal(changed.active, false)
  assert.ok(changed.version > created.version)
  assert.equal(changed.secret, undefined)
  const secret = 'a-secret-of-the-test-1234'
  const rekeyed = await a.webhooks.update(created.id, { secret })
  assert.equal(rekeyed.secret, secret, 'a new secret is shown in the answer that set it')

  const page = await a.webhooks.deliveries(created.id, { page: 1, limit: 5, status: 'failed' })
  assert.deepEqual(page.items, [])
  assert.equal(page.pagination.limit, 5)
  assert.equal(page.pagination.total, 0)

  await a.webhooks.delete(created.id)
  assert.ok(!(await a.webhooks.list()).some((w) => w.id === created.id))
  await assert.rejects(a.webhooks.get(created.id), (e) => {
    assert.ok(e instanceof VoidVMError)
    assert.equal(e.status, 404)
    assert.equal(e.code, 'WEBHOOK_NOT_FOUND')
    return true
  })
})

test('webhooks: a bad url or delivery status is a VALIDATION_ERROR naming the field', async () => {
  await assert.rejects(a.webhooks.create({ url: 'ftp://example.test/hook', events: ['*'] }), (e) => {
    assert.ok(e instanceof VoidVMError)
    assert.equal(e.status, 400)
    assert.equal(e.code, 'VALIDATION_ERROR')
    assert.equal(e.field, 'url')
    return true
  })
  await assert.rejects(a.webhooks.create({ url: 'http://127.0.0.1:9/', events: ['NoSuchEvent'] }), (e) => {
    assert.equal(e.code, 'VALIDATION_ERROR')
    assert.equal(e.field, 'events')
    return true
  })
  const hook = await a.webhooks.create({ url: 'http://127.0.0.1:9/', events: ['*'], active: false })
  cleanups.push(dropHook(hook.id))
  await assert.rejects(a.webhooks.deliveries(hook.id, { status: 'lost' }), (e) => {
    assert.equal(e.code, 'VALIDATION_ERROR')
    assert.equal(e.field, 'status')
    return true
  })
  await a.webhooks.delete(hook.id)
})

test('webhooks: VmCreated is delivered to a node:http receiver, signed with the secret', { timeout: 120_000 }, async () => {
  const received = []
  const server = createServer((req, res) => {
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => {
      received.push({ method: req.method, url: req.url, headers: req.headers, body: Buffer.concat(chunks) })
      res.writeHead(204).end()
    })
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  cleanups.push(() => new Promise((resolve) => server.close(resolve)))
  const url = `http://127.0.0.1:${server.address().port}/voidvm`

  const secret = 'ts-receiver-secret-0123456789'
  const hook = await a.webhooks.create({ url, events: ['VmCreated'], secret })
  cleanups.push(dropHook(hook.id))
  assert.equal(hook.secret, secret)
  const vm = await a.vms.create({ name: unique('ts-hook'), cpu: 1, memory: 128, disk: 1, os: 'busybox' })
  cleanups.push(() => removeVm(a, vm.id))

  const delivery = await until('the VmCreated delivery', () =>
    received.find((r) => JSON.parse(r.body.toString('utf8')).event?.vmId === vm.id),
  )
  assert.equal(delivery.method, 'POST')
  assert.equal(delivery.url, '/voidvm')
  assert.match(delivery.headers['content-type'], /^application\/json/)
  assert.equal(delivery.headers['x-voidvm-event'], 'VmCreated')
  const body = JSON.parse(delivery.body.toString('utf8'))
  assert.equal(body.webhookId, hook.id)
  assert.equal(body.attempt, 1)
  assert.equal(body.event.type, 'VmCreated')
  assert.equal(String(body.id), delivery.headers['x-voidvm-delivery'])
  assert.equal(String(body.event.position), delivery.headers['x-voidvm-position'])

  const signed = {
    secret,
    timestamp: delivery.headers['x-voidvm-timestamp'],
    body: delivery.body,
    signature: delivery.headers['x-voidvm-signature'],
  }
  assert.match(signed.signature, /^sha256=[0-9a-f]{64}$/)
  assert.ok(Math.abs(Number(signed.timestamp) - Date.now() / 1000) < 120, 'the timestamp is now')
  assert.equal(verifyWebhookSignature(signed), true)
  const tampered = Buffer.from(delivery.body.toString('utf8').replace('"VmCreated"', '"VmDeleted"'))
  assert.notDeepEqual(tampered, delivery.body)
  assert.equal(verifyWebhookSignature({ ...signed, body: tampered }), false)
  assert.equal(verifyWebhookSignature({ ...signed, secret: `${secret}x` }), false)
  assert.equal(verifyWebhookSignature({ ...signed, now: Number(signed.timestamp) + 301 }), false)

  // Only VmCreated was asked for; the webhook's deliveries show it delivered with the 204.
  assert.ok(received.every((r) => r.headers['x-voidvm-event'] === 'VmCreated'))
  const shown = await until('the delivery shown as delivered', async () => {
    const page = await a.webhooks.deliveries(hook.id, { status: 'delivered' })
    return page.items.find((d) => d.id === body.id)
  })
  assert.equal(shown.vmId, vm.id)
  assert.equal(shown.eventType, 'VmCreated')
  assert.equal(shown.responseStatus, 204)
  assert.equal(shown.attempts, 1)
  assert.ok((await a.webhooks.get(hook.id)).deliveries.delivered >= 1)

  // Sent again on request: the same delivery, pending with a fresh count, then delivered.
  const again = await a.webhooks.redeliver(hook.id, shown.id)
  assert.deepEqual([again.id, again.status, again.attempts], [shown.id, 'pending', 0])
  const repeat = await until('the delivery sent again', () =>
    received.filter((r) => r.headers['x-voidvm-delivery'] === String(shown.id))[1],
  )
  assert.equal(JSON.parse(repeat.body.toString('utf8')).attempt, 1)
  await assert.rejects(a.webhooks.redeliver(hook.id, 999_999_999), (e) => {
    assert.ok(e instanceof VoidVMError)
    assert.equal(e.status, 404)
    assert.equal(e.code, 'DELIVERY_NOT_FOUND')
    return true
  })
})
