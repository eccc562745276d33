// Why: vms.snapshots / takeSnapshot / restoreSnapshot / deleteSnapshot against the live server, on
// a stopped busybox VM (qemu-img path), each change waited on as a job.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { VoidVMError } from '@void-vm/sdk'
import { admin, removeVm, unique } from './helpers.mjs'

test('snapshots: take, list, restore and delete on a stopped VM', { timeout: 120_000 }, async () => {
  const a = await admin()
  const vm = await a.vms.create({ name: unique('ts-snap'), cpu: 1, memory: 128, disk: 1, os: 'busybox' }, { wait: true })
  try {
    const taken = await a.vms.takeSnapshot(vm.id, { name: 'first', description: 'from the SDK' }, { wait: true })
    assert.equal(taken.kind, 'snapshot')
    assert.equal(taken.status, 'succeeded')
    const list = await a.vms.snapshots(vm.id)
    assert.deepEqual(list.map((s) => [s.name, s.description, s.memory]), [['first', 'from the SDK', false]])
    await assert.rejects(a.vms.takeSnapshot(vm.id, { name: 'first' }), (e) => {
      assert.ok(e instanceof VoidVMError)
      assert.equal(e.code, 'SNAPSHOT_EXISTS')
      return true
    })
    assert.equal((await a.vms.restoreSnapshot(vm.id, 'first', { wait: true })).status, 'succeeded')
    assert.equal((await a.vms.deleteSnapshot(vm.id, 'first', { wait: true })).status, 'succeeded')
    assert.deepEqual(await a.vms.snapshots(vm.id), [])
  } finally {
    await removeVm(a, vm.id)
  }
})
