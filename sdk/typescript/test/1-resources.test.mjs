// Why: every resource method of the TypeScript SDK, at least once each, against the live server,
// asserting on its answer; plus VoidVMError (VM_NOT_FOUND) and the Idempotency-Key replay.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { VoidVMClient, VoidVMError } from '@void-vm/sdk'
import { API, admin, removeVm, unique } from './helpers.mjs'

let a
const cleanups = []
before(async () => {
  a = await admin()
})
after(async () => {
  for (const f of cleanups.reverse()) await f()
})

test('auth.me answers the caller', async () => {
  const me = await a.auth.me()
  assert.equal(me.username, 'admin')
  assert.deepEqual(me.permissions, ['*'])
})

test('a missing VM throws VoidVMError VM_NOT_FOUND', async () => {
  await assert.rejects(a.vms.get('vm-does-not-exist'), (e) => {
    assert.ok(e instanceof VoidVMError)
    assert.equal(e.status, 404)
    assert.equal(e.code, 'VM_NOT_FOUND')
    assert.match(e.details, /vm-does-not-exist/)
    return true
  })
})

test('vms: the whole lifecycle of a busybox VM, with jobs and history', async () => {
  const name = unique('ts-life')
  const created = await a.vms.create({ name, cpu: 1, memory: 128, disk: 1, os: 'busybox' })
  cleanups.push(() => removeVm(a, created.id))
  assert.equal(created.status, 'creating')
  const provisioned = await a.jobs.wait(created.jobId, { timeout: 60 })
  assert.equal(provisioned.finished, true)
  assert.equal(provisioned.status, 'succeeded')

  const listed = await a.vms.list({ limit: 100 })
  assert.ok(listed.items.some((vm) => vm.id === created.id))
  assert.equal((await a.vms.get(created.id)).status, 'stopped')

  const patched = await a.vms.update(created.id, { description: 'from the TypeScript SDK' })
  assert.equal(patched.vm.description, 'from the TypeScript SDK')

  const started = await a.vms.start(created.id, { wait: true })
  assert.equal(started.status, 'succeeded')
  assert.equal(started.kind, 'start')
  assert.equal((await a.vms.get(created.id)).status, 'running')
  assert.equal((await a.vms.pause(created.id, { wait: true })).status, 'succeeded')
  assert.equal((await a.vms.get(created.id)).status, 'paused')
  assert.equal((await a.vms.resume(created.id, { wait: true })).status, 'succeeded')
  assert.equal((await a.vms.restart(created.id, { wait: true })).status, 'succeeded')
  assert.equal((await a.vms.reset(created.id, { wait: true })).status, 'succeeded')
  assert.equal((await a.vms.get(created.id)).status, 'running')

  // A command answers a job at once; the same Idempotency-Key replays the first answer.
  const key = crypto.randomUUID()
  const stop1 = await a.vms.stop(created.id, { force: true, idempotencyKey: key })
  const stop2 = await a.vms.stop(created.id, { force: true, idempotencyKey: key })
  assert.equal(stop2.jobId, stop1.jobId)
  const job = await a.jobs.get(stop1.jobId)
  assert.equal(job.id, stop1.jobId)
  assert.equal(job.kind, 'stop')
  assert.equal((await a.jobs.wait(stop1.jobId, { timeout: 60 })).status, 'succeeded')
  const jobs = await a.jobs.list({ vmId: created.id })
  assert.ok(jobs.items.length >= 7)

  // A finished job cannot be cancelled.
  await assert.rejects(a.jobs.cancel(stop1.jobId), (e) => e instanceof VoidVMError && e.code === 'JOB_NOT_CANCELLABLE')

  const events = await a.vms.events(created.id, { limit: 3 })
  assert.equal(events.items[0].type, 'VmCreated')
  const rest = await a.vms.events(created.id, { after: events.next })
  assert.ok(rest.items.every((e) => e.sequence > events.items[2].sequence))
  const history = await a.vms.history(created.id, { at: 2 })
  assert.equal(history.state.status, 'stopped')
  assert.equal(history.state.description, null)

  const deleted = await a.vms.delete(created.id, { wait: true })
  assert.equal(deleted.kind, 'delete')
  assert.equal(deleted.status, 'succeeded')
})

test('vms.start right after create waits for the provisioning job (VM_BUSY is retried)', async () => {
  const vm = await a.vms.create({ name: unique('ts-busy'), cpu: 1, memory: 128, disk: 1, os: 'busybox' })
  cleanups.push(() => removeVm(a, vm.id))
  const job = await a.vms.start(vm.id, { wait: true })
  assert.equal(job.status, 'succeeded')
  await removeVm(a, vm.id)
})

test('events: the audit log, paged with its cursor', async () => {
  const first = await a.events.list({ streamType: 'vm', limit: 2 })
  assert.equal(first.items.length, 2)
  assert.ok(first.hasMore)
  const second = await a.events.list({ streamType: 'vm', limit: 2, after: first.next })
  assert.ok(second.items[0].position > first.items[1].position)
  const all = []
  for await (const e of a.events.iterate({ streamType: 'vm', limit: 5 })) all.push(e.position)
  assert.ok(all.length > 4)
  assert.ok(all.every((p, i) => i === 0 || p > all[i - 1]), 'positions rise')
})

test('logs: the log for people', async () => {
  const logs = await a.logs.list({ limit: 5 })
  assert.ok(logs.items.length > 0)
  assert.equal(typeof logs.items[0].message, 'string')
  assert.equal(typeof logs.pagination.total, 'number')
})

test('users: list, get, create, update, delete with transferTo', async () => {
  const username = unique('ts-user')
  const password = 'a-good-password-1'
  const user = await a.users.create({ username, password, role: 'user' })
  assert.equal(user.username, username)
  assert.equal(user.role, 'user')
  assert.equal((await a.users.get(user.id)).username, username)
  assert.ok((await a.users.list({ limit: 100 })).items.some((u) => u.id === user.id))
  const changed = await a.users.update(user.id, { email: `${username}@example.test`, rateLimit: 500 })
  assert.equal(changed.rateLimit, 500)
  assert.equal(changed.email, `${username}@example.test`)

  const u = await VoidVMClient.login({ baseURL: API, username, password })
  const vm = await u.vms.create({ name: 'owned', cpu: 1, memory: 128, disk: 1, os: 'busybox' }, { wait: true })
  cleanups.push(() => removeVm(a, vm.id))
  await assert.rejects(a.users.delete(user.id), (e) => e instanceof VoidVMError && e.code === 'USER_HAS_VMS')
  await a.users.delete(user.id, { transferTo: 'admin' })
  await assert.rejects(a.users.get(user.id), (e) => e.code === 'USER_NOT_FOUND')
  assert.equal((await a.vms.get(vm.id)).owner, 'admin')
  await removeVm(a, vm.id)
})

test('roles: list, create, update, delete, permissions', async () => {
  const perms = await a.roles.permissions()
  assert.ok(perms.some((p) => p.id === 'vm:read'))
  const roles = await a.roles.list()
  assert.deepEqual(roles.map((r) => r.id).sort().slice(0, 3), ['admin', 'user', 'viewer'].sort())
  const id = unique('ts-role')
  const role = await a.roles.create({ id, name: 'Auditor', permissions: ['vm:read', 'event:read'], scope: 'all' })
  assert.equal(role.id, id)
  assert.equal(role.builtIn, false)
  const updated = await a.roles.update(id, { description: 'reads', permissions: ['vm:read'] })
  assert.deepEqual(updated.permissions, ['vm:read'])
  await a.roles.delete(id)
  assert.ok(!(await a.roles.list()).some((r) => r.id === id))
})

test('config: get and update (and back)', async () => {
  const config = await a.config.get()
  assert.equal(typeof config.system.maxVmsPerUser, 'number')
  const changed = await a.config.update({ system: { maxVmsPerUser: 7 } })
  assert.equal(changed.system.maxVmsPerUser, 7)
  const back = await a.config.update({ system: { maxVmsPerUser: null } })
  assert.equal(back.system.maxVmsPerUser, config.system.maxVmsPerUser)
})

test('system: info and stats', async () => {
  const info = await a.system.info()
  assert.equal(info.apiVersion, '1.0.0')
  assert.equal(typeof info.qemu.version, 'string')
  const stats = await a.system.stats({ period: '1h' })
  assert.equal(typeof stats.vms.total, 'number')
})
